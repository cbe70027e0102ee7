//! Composition: turns one validated [`Config`] into the [`Gateway`] that serves it (directories,
//! password verifier, upstream, Rocket.Chat bridge, regulation, TOTP). Both the start
//! (`server.rs`) and a reload (`service.rs`) build through here, so neither needs the other.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Config, DirectoryKind};
use crate::directory::ldap::LdapDirectory;
use crate::directory::local::{load_users, LocalDirectory};
use crate::directory::{Directories, DynDirectory};
use crate::forward::Upstream;
use crate::gateway::Gateway;
use crate::password::Verifier;
use crate::regulation::Regulation;
use crate::session::{build_store, DynSessionStore};
use crate::telemetry::Metrics;
use crate::totp::SecondFactor;

/// Why a start, or a reload's build, failed. `Config` lists problems with their keys, written
/// in the one problem format (`config::problem_list`) under "invalid configuration:".
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}", crate::config::problem_list(.0))]
    Config(Vec<crate::config::ConfigProblem>),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread {index}: {source}")]
    Worker {
        index: usize,
        source: std::io::Error,
    },
}

/// Builds what one configuration asks for around a session store that outlives it. A reload
/// passes the running upstream, kept when its settings did not change so its pool stays warm.
pub fn build_snapshot(
    config: Config,
    store: DynSessionStore,
    metrics: Metrics,
    running_upstream: Option<&Arc<Upstream>>,
) -> Result<Gateway, StartError> {
    let verifier = Verifier::new(
        config.server.password_hash_concurrency,
        config.server.login_queue_timeout,
        config.server.password_hash_priority,
    );
    let mut directories: Vec<DynDirectory> = Vec::new();
    for kind in &config.directory.order {
        match kind {
            DirectoryKind::Local => {
                if let Some(local) = &config.directory.local {
                    let users =
                        load_users(local).map_err(|problems| StartError::Config(problems))?;
                    directories.push(Arc::new(LocalDirectory::new(users, verifier.clone())));
                }
            }
            DirectoryKind::Ldap => {
                if let Some(ldap) = &config.directory.ldap {
                    let dir = LdapDirectory::new(ldap.clone()).map_err(|e| {
                        StartError::Config(vec![crate::config::problem::problem(
                            "directory.ldap",
                            e.to_string(),
                            "correct the [directory.ldap] settings",
                        )])
                    })?;
                    directories.push(Arc::new(dir));
                }
            }
        }
    }
    let upstream = match running_upstream {
        Some(u) if u.config() == &config.upstream => u.clone(),
        _ => Arc::new(Upstream::new(
            &config.upstream,
            config.server.worker_threads,
        )),
    };
    let identity = crate::upstream_identity::UpstreamIdentity::new(&config.upstream);
    let regulation = Regulation::new(config.regulation.clone(), store.clone());
    let totp = SecondFactor::new(&config.totp).map_err(|why| {
        StartError::Config(vec![crate::config::problem::problem(
            "totp.secrets_file",
            why,
            "repair or remove the file; `authgate totp enroll` rewrites it",
        )])
    })?;
    Ok(Gateway {
        config: Arc::new(config),
        store,
        totp,
        directories: Directories::new(directories),
        upstream,
        regulation,
        identity,
        metrics,
    })
}

/// Builds everything the config asks for.
pub async fn build_gateway(config: Config) -> Result<Arc<Gateway>, StartError> {
    let store = build_store(&config.session).map_err(|e| {
        StartError::Config(vec![crate::config::problem::problem(
            "session.redis_url",
            e.to_string(),
            "correct the Redis address or topology",
        )])
    })?;
    let metrics = if config.metrics.listen.is_some() {
        Metrics::enabled()
    } else {
        Metrics::disabled()
    };
    Ok(Arc::new(build_snapshot(config, store, metrics, None)?))
}
