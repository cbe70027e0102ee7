//! TLS on the public listeners (rustls with the ring provider). ALPN offers h2 and http/1.1.
//! The certificate sits behind an atomic swap: a reload changes what new handshakes get, and
//! connections already established keep going on the key they negotiated.
//!
//! Reading and checking a certificate pair lives in [`certs`], a leaf the config validation
//! also uses; this module adds what serving needs (the resolver, the acceptor, the file watcher).

pub mod certs;

pub use certs::{load_certified_key, TlsError};

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Hands every handshake the current certificate.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertResolver")
    }
}

impl CertResolver {
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            current: ArcSwap::from_pointee(load_certified_key(&config.cert, &config.key)?),
        })
    }

    /// From the next handshake on; established connections keep theirs.
    pub fn replace(&self, fresh: CertifiedKey) {
        self.current.store(Arc::new(fresh));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

pub fn acceptor(resolver: Arc<CertResolver>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// What identifies one version of a file cheaply: a rename (certbot, a Kubernetes secret's
/// symlink swap) or a rewrite changes at least one of these.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn stamps(tls: &TlsConfig) -> [(std::path::PathBuf, Stamp); 2] {
    [
        (tls.cert.clone(), stamp(&tls.cert)),
        (tls.key.clone(), stamp(&tls.key)),
    ]
}

/// Reloads the certificate when its files change (`server.tls.watch`), until `stop`. A pair that
/// does not load (say, the certificate written but not yet its key) is retried on every later
/// change and the current certificate stays meanwhile.
///
/// `current` reads `[server.tls]` from the configuration in force, so a reload that changes
/// the files or the interval is followed without this module knowing how configurations swap.
pub async fn watch_files(
    resolver: Arc<CertResolver>,
    current: impl Fn() -> Option<TlsConfig> + Send,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen = current().as_ref().map(stamps);
    loop {
        let tls = current();
        let every = match &tls {
            Some(t) if !t.watch.is_zero() => t.watch,
            // Off for now; a reload may turn it on.
            _ => Duration::from_secs(5),
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let Some(tls) = tls.filter(|t| !t.watch.is_zero()) else {
            continue;
        };
        let now = Some(stamps(&tls));
        if now == seen {
            continue;
        }
        seen = now;
        match load_certified_key(&tls.cert, &tls.key) {
            Ok(fresh) => {
                resolver.replace(fresh);
                tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded after its files changed");
            }
            Err(e) => {
                tracing::warn!(key = e.key(), problem = %e, "changed TLS files do not load; the current certificate stays")
            }
        }
    }
}
