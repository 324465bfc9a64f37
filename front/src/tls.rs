//! TLS on the front's port: the server's certificate chain and private key from PEM (the files the
//! grpcio front takes), rustls on the ring provider, ALPN `h2` (gRPC is HTTP/2 only), and how long a
//! connection may take to complete its handshake. The handshake itself runs in each connection's task
//! (`crate::server`), never in the accept loop.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring;
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS handshake not complete this long after the connection was accepted is dropped: a peer that
/// opens TCP and never speaks holds a task and a socket for this long at most.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The front's TLS: what it serves, and the handshake's time limit.
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
}

/// Why a certificate chain and key cannot be served; each says which of the two is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The certificate chain: not PEM, or no certificate in it.
    Certificate(String),
    /// The private key: not PEM, or no key in it.
    Key(String),
    /// The two do not go together, or rustls cannot use the key (an unsupported algorithm).
    Pair(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificate(reason) => write!(f, "certificate chain: {reason}"),
            TlsError::Key(reason) => write!(f, "private key: {reason}"),
            TlsError::Pair(reason) => write!(f, "certificate and key: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn pem_reason(err: &pem::Error, what: &str) -> String {
    match err {
        pem::Error::NoItemsFound => format!("no PEM {what} in it"),
        other => format!("not valid PEM ({other})"),
    }
}

impl Tls {
    /// The certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or SEC1), with
    /// the default handshake limit.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Tls, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Certificate(pem_reason(&e, "certificate")))?;
        if certs.is_empty() {
            return Err(TlsError::Certificate(pem_reason(&pem::Error::NoItemsFound, "certificate")));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key(pem_reason(&e, "private key")))?;
        // rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange (X25519MLKEM768,
        // aws-lc-rs only). ring is the choice here all the same: aws-lc-rs needs cmake and clang to build
        // on a fresh machine, and every gRPC client negotiates X25519 or the NIST curves with it.
        #[allow(deprecated)]
        let provider = Arc::new(ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair(e.to_string()))?
            .with_no_client_auth()
            // Checks that the key is one rustls can sign with and that it is the leaf certificate's.
            .with_single_cert(certs, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError::Pair("the private key is not the certificate's".into())
                }
                other => TlsError::Pair(other.to_string()),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls { config: Arc::new(config), handshake_timeout: HANDSHAKE_TIMEOUT })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pems_name_their_part() {
        let err = Tls::from_pem(b"", b"").unwrap_err();
        assert_eq!(err, TlsError::Certificate("no PEM certificate in it".into()));
        let truncated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        assert!(
            matches!(Tls::from_pem(truncated, b""), Err(TlsError::Certificate(r)) if r.starts_with("not valid PEM"))
        );
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(Tls::from_pem(cert, b"nothing").unwrap_err().to_string(), "private key: no PEM private key in it");
    }

    #[test]
    fn a_key_must_be_the_certificates() {
        let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (one.cert.pem(), one.signing_key.serialize_pem());
        let tls = Tls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(tls.config.alpn_protocols, [b"h2".to_vec()]);
        assert_eq!(tls.handshake_timeout, HANDSHAKE_TIMEOUT);
        let err = Tls::from_pem(cert.as_bytes(), other.signing_key.serialize_pem().as_bytes()).unwrap_err();
        assert_eq!(err, TlsError::Pair("the private key is not the certificate's".into()));
    }
}
