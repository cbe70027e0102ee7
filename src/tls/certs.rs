//! Reading a PEM certificate chain and its private key, and checking that they belong together.
//! A leaf: it imports no other module of the crate, so the config validation (which checks the
//! files at load time) and the TLS listener (which serves them) can both use it.

use std::path::Path;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot use the certificate chain {0}")]
    Cert(String),
    #[error("cannot use the private key {0}")]
    Key(String),
    #[error("the private key does not belong to the certificate ({0})")]
    Mismatch(String),
}

impl TlsError {
    /// The config key the problem concerns.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Cert(_) => "server.tls.cert",
            TlsError::Key(_) | TlsError::Mismatch(_) => "server.tls.key",
        }
    }

    pub fn fix(&self) -> &'static str {
        match self {
            TlsError::Cert(_) => "point it at a readable PEM file holding the leaf certificate first, then its intermediates",
            TlsError::Key(_) => "point it at a readable PEM private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519)",
            TlsError::Mismatch(_) => "give the key the certificate was issued for",
        }
    }
}

/// Reads and checks a certificate chain and its key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(format!(
            "{}: no CERTIFICATE block",
            cert.display()
        )));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key(format!("{}: {e}", key.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| TlsError::Key(format!("{}: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(certified)
}
