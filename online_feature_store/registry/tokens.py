"""Caller tokens: stored as salted scrypt hashes, never in plain text."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["hash_token", "new_token", "verify_token"]

# n=2**14, r=8 is the interactive-login strength of the scrypt paper (~16 MiB, tens of ms): tokens are checked
# once per connection or cached by the services, not on every request.
_N, _R, _P = 1 << 14, 8, 1
_SCHEME = "scrypt"


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$<salt hex>$<hash hex>`` of ``token`` with a fresh 16-byte salt."""
    if not token:
        raise ValueError("empty token")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(token.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{_SCHEME}${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_token(token: str, token_hash: str) -> bool:
    """True when ``token`` hashes to ``token_hash`` (constant-time compare); False for a malformed hash."""
    parts = token_hash.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME or not token:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, want = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        got = hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=1 << 26)
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def is_token_hash(value: str) -> bool:
    """True when ``value`` looks like a hash made by :func:`hash_token`."""
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == _SCHEME
