//! Composition: turns one validated [`Config`] into the [`Gateway`] that serves it (directories,
//! password verifier, upstream, Rocket.Chat bridge, regulation, TOTP) and into the handler of
//! each route kind, each given only the dependencies it uses. Both the start
//! (`server.rs`) and a reload (`service.rs`) build through here, so neither needs the other.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::problem::problem;
use crate::config::{Config, ConfigProblem, DirectoryKind};
use crate::directory::ldap::LdapDirectory;
use crate::directory::local::{load_users, LocalDirectory};
use crate::directory::{Directories, DynDirectory};
use crate::forward::Upstream;
use crate::gateway::Gateway;
use crate::handlers::proxy::Proxy;
use crate::handlers::shared::{LoginBody, SessionLookup};
use crate::login_flow::LoginFlow;
use crate::password::Verifier;
use crate::realtime::Realtime;
use crate::regulation::Regulation;
use crate::session::{build_store, DynSessionStore};
use crate::telemetry::Metrics;
use crate::tokens::Tokens;
use crate::totp::SecondFactor;

/// Why a start, or a reload's build, failed. `Config` lists problems with their keys, written
/// in the one problem format (`config::problem_list`) under "invalid configuration:".
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}", crate::config::problem_list(.0))]
    Config(Vec<ConfigProblem>),
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
/// What can fail here is the files and settings the configuration names: configuration
/// problems, which the start and a reload each wrap in their own error.
pub fn build_snapshot(
    config: Config,
    store: DynSessionStore,
    metrics: Metrics,
    running_upstream: Option<&Arc<Upstream>>,
) -> Result<Gateway, Vec<ConfigProblem>> {
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
                    let users = load_users(local)?;
                    directories.push(Arc::new(LocalDirectory::new(users, verifier.clone())));
                }
            }
            DirectoryKind::Ldap => {
                if let Some(ldap) = &config.directory.ldap {
                    let dir = LdapDirectory::new(ldap.clone()).map_err(|e| {
                        vec![problem(
                            "directory.ldap",
                            e.to_string(),
                            "correct the [directory.ldap] settings",
                        )]
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
    let identity = Arc::new(crate::upstream_identity::UpstreamIdentity::new(
        &config.upstream,
    ));
    let regulation = Arc::new(Regulation::new(config.regulation.clone(), store.clone()));
    let totp = Arc::new(SecondFactor::new(&config.totp).map_err(|why| {
        vec![problem(
            "totp.secrets_file",
            why,
            "repair or remove the file; `authgate totp enroll` rewrites it",
        )]
    })?);
    let directories = Directories::new(directories);
    let sessions = SessionLookup {
        store: store.clone(),
        identity: identity.clone(),
        personal_access_tokens: config.session.personal_access_tokens,
    };
    let body = LoginBody {
        limit: config.server.login_body_limit,
        timeout: config.server.login_body_timeout,
        metrics: metrics.clone(),
    };
    let proxy = Proxy {
        upstream: upstream.clone(),
        identity: identity.clone(),
        store: store.clone(),
        rewrite_public_settings: config.upstream.rewrite_public_settings,
    };
    let login = LoginFlow {
        regulation: regulation.clone(),
        directories: directories.clone(),
        totp: totp.clone(),
        sessions: sessions.clone(),
        metrics: metrics.clone(),
        session_ttl: config.session.ttl,
        body: body.clone(),
        avatar_base: avatar_base(&config),
    };
    let tokens = Tokens {
        sessions: sessions.clone(),
        directories: directories.clone(),
        regulation,
        totp,
        metrics: metrics.clone(),
        session_ttl: config.session.ttl,
        body,
    };
    let login = Arc::new(login);
    let tokens = Arc::new(tokens);
    let realtime = Arc::new(Realtime {
        proxy: proxy.clone(),
        upstream: upstream.clone(),
        identity: identity.clone(),
        store: store.clone(),
        sessions: sessions.clone(),
        login: login.clone(),
        tokens: tokens.clone(),
        revocation_check: config.realtime.revocation_check,
        rewrite_public_settings: config.upstream.rewrite_public_settings,
    });
    Ok(Gateway {
        config: Arc::new(config),
        store,
        directories,
        upstream,
        identity,
        metrics,
        sessions,
        proxy,
        login,
        tokens,
        realtime,
    })
}

/// Where `me.avatarUrl` points: the configured public URL, else the first listen address.
/// Never the client's `Host`, which anyone can set to a page of their own.
fn avatar_base(config: &Config) -> String {
    if let Some(u) = &config.server.public_url {
        return u.clone();
    }
    let scheme = match config.server.tls {
        Some(_) => "https",
        None => "http",
    };
    match config.server.listen.first() {
        Some(addr) => format!("{scheme}://{addr}"),
        None => String::new(),
    }
}

/// Builds everything the config asks for.
pub async fn build_gateway(config: Config) -> Result<Arc<Gateway>, StartError> {
    let store = build_store(&config.session).map_err(|e| {
        StartError::Config(vec![problem(
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
    let gateway = build_snapshot(config, store, metrics, None).map_err(StartError::Config)?;
    Ok(Arc::new(gateway))
}
