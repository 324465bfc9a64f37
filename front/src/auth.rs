//! Caller tokens checked natively, under the auth policy Python owns (`server/calls.py`
//! `Calls.authorize`): Python hands the front the registry's callers, each with its role and stored
//! hash, and the front answers a call the way `authorize` would. Only the fast scheme
//! (`hmac-sha256$<salt hex>$<digest hex>`, `registry/tokens.py`) is checked here; a caller whose hash is
//! a legacy scrypt one is [`Verdict::Python`]: its calls go through Python, whose `TokenVerifier`
//! keeps the limiter in front of the KDF.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tonic::Code;

const SCHEME: &str = "hmac-sha256";
const SALT_BYTES: usize = 16;
const DIGEST_BYTES: usize = 32;
const LEGACY: &str = "scrypt";

/// A caller's role (`registry/model.py`: `reader`, `writer`, `readwriter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Writer,
    ReadWriter,
}

impl Role {
    /// The role named `name`, as the registry spells it.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "readwriter" => Some(Role::ReadWriter),
            _ => None,
        }
    }

    /// The registry's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::ReadWriter => "readwriter",
        }
    }

    /// `role_allows` of `registry/model.py`: the same role, or `readwriter`, which holds both.
    fn allows(self, needed: Role) -> bool {
        self == needed || (self == Role::ReadWriter && needed != Role::ReadWriter)
    }
}

/// A stored token hash, parsed once when the callers are handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHash {
    /// `hmac-sha256$<salt>$<digest>`: HMAC-SHA256 of the token keyed with the salt.
    Fast { salt: [u8; SALT_BYTES], digest: [u8; DIGEST_BYTES] },
    /// `scrypt$n$r$p$<salt>$<hash>`: checked by Python (a KDF behind a limiter).
    Legacy,
    /// Anything else: no token matches it.
    Malformed,
}

impl TokenHash {
    /// Parses a stored hash the way `registry/tokens.py` does.
    pub fn parse(stored: &str) -> TokenHash {
        let parts: Vec<&str> = stored.split('$').collect();
        if parts.len() == 6 && parts[0] == LEGACY {
            return TokenHash::Legacy;
        }
        if parts.len() != 3 || parts[0] != SCHEME {
            return TokenHash::Malformed;
        }
        let salt = hex::decode(parts[1]).ok().and_then(|s| <[u8; SALT_BYTES]>::try_from(s).ok());
        let digest = hex::decode(parts[2]).ok().and_then(|d| <[u8; DIGEST_BYTES]>::try_from(d).ok());
        match (salt, digest) {
            (Some(salt), Some(digest)) => TokenHash::Fast { salt, digest },
            _ => TokenHash::Malformed,
        }
    }

    /// Whether `token` hashes to this (constant-time compare). Never called for [`TokenHash::Legacy`].
    fn verify(&self, token: &str) -> bool {
        match self {
            TokenHash::Fast { salt, digest } => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(salt).expect("HMAC takes keys of any length");
                mac.update(token.as_bytes());
                mac.verify_slice(digest).is_ok()
            }
            TokenHash::Legacy | TokenHash::Malformed => false,
        }
    }
}

/// One caller of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    pub hash: TokenHash,
}

/// The callers of one registry revision, by id.
pub type Callers = HashMap<String, Caller>;

/// What the auth check says about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It may go ahead.
    Allowed,
    /// It ends with this status.
    Denied(Code, String),
    /// The caller's hash is a legacy one: Python checks it (the whole call goes through Python).
    Python,
}

/// The metadata names that carry a caller's id and token (`contract.py`).
#[derive(Debug, Clone)]
pub struct Headers {
    pub caller: String,
    pub token: String,
}

/// `Calls.authorize` for a call needing `needed`, with auth on. Empty values count as missing, as in
/// Python.
pub fn authorize(
    callers: &Callers,
    headers: &Headers,
    caller_id: Option<&str>,
    token: Option<&str>,
    needed: Role,
) -> Verdict {
    let (Some(caller_id), Some(token)) = (caller_id.filter(|s| !s.is_empty()), token.filter(|s| !s.is_empty())) else {
        return Verdict::Denied(
            Code::InvalidArgument,
            format!("metadata {} and {} are required", py_repr(&headers.caller), py_repr(&headers.token)),
        );
    };
    let caller = callers.get(caller_id);
    if caller.is_some_and(|c| c.hash == TokenHash::Legacy) {
        return Verdict::Python;
    }
    let Some(caller) = caller.filter(|c| c.hash.verify(token)) else {
        return Verdict::Denied(
            Code::Unauthenticated,
            format!("unknown caller or bad token for {}", py_repr(caller_id)),
        );
    };
    if !caller.role.allows(needed) {
        return Verdict::Denied(
            Code::PermissionDenied,
            format!("caller {} is a {}, not a {}", py_repr(caller_id), caller.role.name(), needed.name()),
        );
    }
    Verdict::Allowed
}

/// Python's `repr` of a plain string, so messages read as the Python front writes them.
fn py_repr(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(salt: [u8; 16], token: &str) -> TokenHash {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&salt).unwrap();
        mac.update(token.as_bytes());
        let digest = mac.finalize().into_bytes();
        TokenHash::parse(&format!("hmac-sha256${}${}", hex::encode(salt), hex::encode(digest)))
    }

    fn headers() -> Headers {
        Headers { caller: "c".into(), token: "t".into() }
    }

    #[test]
    fn parses_the_stored_forms() {
        assert!(matches!(fast([7; 16], "x"), TokenHash::Fast { .. }));
        assert_eq!(TokenHash::parse("scrypt$16384$8$1$00$11"), TokenHash::Legacy);
        assert_eq!(TokenHash::parse("hmac-sha256$zz$00"), TokenHash::Malformed);
        assert_eq!(TokenHash::parse("hmac-sha256$00$00"), TokenHash::Malformed);
        assert_eq!(TokenHash::parse(""), TokenHash::Malformed);
    }

    #[test]
    fn the_auth_matrix() {
        let callers: Callers = [
            ("r".to_owned(), Caller { role: Role::Reader, hash: fast([1; 16], "rtok") }),
            ("rw".to_owned(), Caller { role: Role::ReadWriter, hash: fast([2; 16], "rwtok") }),
            ("old".to_owned(), Caller { role: Role::Reader, hash: TokenHash::Legacy }),
        ]
        .into();
        let h = headers();
        let code = |v: Verdict| match v {
            Verdict::Denied(code, _) => Some(code),
            _ => None,
        };
        assert_eq!(code(authorize(&callers, &h, None, Some("x"), Role::Reader)), Some(Code::InvalidArgument));
        assert_eq!(code(authorize(&callers, &h, Some("r"), Some(""), Role::Reader)), Some(Code::InvalidArgument));
        assert_eq!(code(authorize(&callers, &h, Some("r"), Some("bad"), Role::Reader)), Some(Code::Unauthenticated));
        assert_eq!(code(authorize(&callers, &h, Some("zz"), Some("rtok"), Role::Reader)), Some(Code::Unauthenticated));
        assert_eq!(authorize(&callers, &h, Some("r"), Some("rtok"), Role::Reader), Verdict::Allowed);
        assert_eq!(code(authorize(&callers, &h, Some("r"), Some("rtok"), Role::Writer)), Some(Code::PermissionDenied));
        assert_eq!(authorize(&callers, &h, Some("rw"), Some("rwtok"), Role::Writer), Verdict::Allowed);
        assert_eq!(authorize(&callers, &h, Some("old"), Some("any"), Role::Reader), Verdict::Python);
    }

    #[test]
    fn repr_quotes_like_python() {
        assert_eq!(py_repr("ab"), "'ab'");
        assert_eq!(py_repr("a'b"), "\"a'b\"");
    }
}
