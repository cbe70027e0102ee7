//! The running gateway as the listeners see it: the current [`Gateway`] behind an atomic swap
//! (so a reload never blocks or drops a request), draining, readiness, and reload. What one
//! request passes is `pipeline.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::problem::{problem, problem_list, ConfigProblem};
use crate::config::Config;
use crate::directory::SignOut;
use crate::gateway::Gateway;
use crate::session::SessionStore;
use crate::telemetry::Metrics;
use crate::tls::CertResolver;

pub struct Service {
    current: ArcSwap<Gateway>,
    pub metrics: Metrics,
    draining: AtomicBool,
    tls: Option<Arc<CertResolver>>,
    reloading: tokio::sync::Mutex<()>,
}

/// One dependency's answer to `/readyz`.
pub struct Check {
    pub name: String,
    pub result: Result<(), String>,
    /// Whether the replica can serve without it. A directory that is down leaves existing
    /// sessions and the other directories working, so it degrades the replica but does not
    /// take it out of a load balancer; the session store and the upstream do.
    pub required: bool,
}

/// What `/readyz` concludes from the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Serving, with a directory down: logins through it fail, everything else works.
    Degraded,
    NotReady,
}

impl Readiness {
    pub fn of(checks: &[Check]) -> Self {
        if checks.iter().any(|c| c.required && c.result.is_err()) {
            Readiness::NotReady
        } else if checks.iter().any(|c| c.result.is_err()) {
            Readiness::Degraded
        } else {
            Readiness::Ready
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Degraded => "degraded",
            Readiness::NotReady => "not ready",
        }
    }
}

/// Longest a single readiness check may take; a hung dependency counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

async fn bounded(
    name: String,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Check {
    let result = tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
    Check {
        name,
        result,
        required: true,
    }
}

impl Service {
    pub fn new(gateway: Gateway, tls: Option<Arc<CertResolver>>) -> Self {
        Self {
            metrics: gateway.metrics.clone(),
            current: ArcSwap::from_pointee(gateway),
            draining: AtomicBool::new(false),
            tls,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// From now on `/readyz` answers 503, so load balancers stop sending new work.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Every dependency a request may need, checked at once.
    pub async fn readiness(&self) -> Vec<Check> {
        if self.is_draining() {
            return vec![Check {
                name: "shutdown".into(),
                result: Err("stopping: draining connections".into()),
                required: true,
            }];
        }
        let gw = self.current();
        let store = bounded("session_store".into(), async {
            gw.store.ping().await.map_err(|e| e.to_string())
        });
        let upstream = bounded("upstream".into(), gw.upstream.probe());
        let (store, upstream, directories) =
            tokio::join!(store, upstream, self.directory_checks(&gw));
        let mut checks = vec![store, upstream];
        checks.extend(directories);
        checks
    }

    /// Each directory's readiness, also recorded in the `authgate_directory_up` gauges.
    pub async fn directory_checks(&self, gw: &Gateway) -> Vec<Check> {
        let checks = gw
            .directories
            .ready()
            .into_iter()
            .map(|(name, ready)| async move {
                let result = tokio::time::timeout(CHECK_TIMEOUT, ready)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
                (name, result)
            });
        let mut out = Vec::new();
        for (name, result) in futures_util::future::join_all(checks).await {
            self.metrics.directory_up(name, result.is_ok());
            out.push(Check {
                name: format!("directory.{name}"),
                result,
                required: false,
            });
        }
        out
    }

    /// Applies a new configuration, or changes nothing. Everything is built first (users file,
    /// TLS certificate, TOTP store); only then is it swapped in. Returns the changed keys that
    /// only take effect after a restart.
    pub async fn reload(&self, config: Config) -> Result<Vec<&'static str>, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.prepare_and_swap(config).await;
        self.metrics.reload(result.is_ok());
        result
    }

    async fn prepare_and_swap(&self, mut config: Config) -> Result<Vec<&'static str>, ReloadError> {
        let old = self.current();
        crate::reload::resolve_port_zero(&mut config.server.listen, &old.config.server.listen);
        let restart = crate::reload::needs_restart(&old.config, &config);
        let certificate = match (&self.tls, &config.server.tls) {
            (Some(_), Some(tls)) => Some(
                crate::tls::load_certified_key(&tls.cert, &tls.key).map_err(|e| {
                    ReloadError::Certificate(problem(e.key(), e.to_string(), e.fix()))
                })?,
            ),
            _ => None,
        };
        let level_changed = old.config.log.level != config.log.level;
        let new_level = config.log.level.clone();
        let (store, metrics, upstream) = (
            old.store.clone(),
            self.metrics.clone(),
            old.upstream.clone(),
        );
        // Reading the users file and preparing the password verifier block; keep them off the
        // threads that serve requests.
        let gateway = tokio::task::spawn_blocking(move || {
            crate::compose::build_snapshot(config, store, metrics, Some(&upstream))
        })
        .await
        .map_err(ReloadError::Task)?
        .map_err(ReloadError::Config)?;
        if let (Some(resolver), Some(certificate)) = (&self.tls, certificate) {
            resolver.replace(certificate);
        }
        if level_changed {
            crate::logging::set_level(&new_level);
        }
        let signed_out = gateway
            .directories
            .users_to_sign_out_since(&old.directories);
        let session_ttl = gateway.config.session.ttl;
        self.current.store(Arc::new(gateway));
        // Removed or disabled users, and those with new credentials, lose their sessions at once
        // on every instance (sockets close on their next check).
        for sign_out in signed_out {
            revoke_signed_out(&*old.store, &self.metrics, sign_out, session_ttl).await;
        }
        Ok(restart)
    }
}

/// Why a reload changed nothing. Its `Display` is what the log line of a rejected reload shows.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The files or settings the new configuration names, in the one problem format.
    #[error("{}", problem_list(.0))]
    Config(Vec<ConfigProblem>),
    /// The new TLS certificate or key cannot be used.
    #[error("{0}")]
    Certificate(ConfigProblem),
    /// The task building the new gateway died (a panic while building it).
    #[error("reload task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Ends the sessions of a user the reload signed out, and says so in the log.
async fn revoke_signed_out(
    store: &dyn SessionStore,
    metrics: &Metrics,
    sign_out: SignOut,
    session_ttl: Duration,
) {
    let (user_id, revoked) = match sign_out {
        SignOut::Gone(user_id) => {
            let revoked = store.revoke_user(&user_id).await.map(Some);
            (user_id, revoked)
        }
        SignOut::NewCredentials(user_id, digest) => {
            // A prefix of the digest is enough to tell changes apart across instances.
            let recorded = crate::hex::encode(&digest[..16]);
            let revoked = store
                .revoke_user_for_credentials(&user_id, &recorded, session_ttl)
                .await;
            (user_id, revoked)
        }
    };
    match revoked {
        Ok(Some(n)) => {
            metrics.sessions_revoked(n);
            tracing::info!(
                user_id,
                sessions = n,
                "user removed, disabled or given new credentials in the users file; sessions revoked"
            );
        }
        Ok(None) => tracing::info!(
            user_id,
            "user given new credentials in the users file; another instance already revoked the older sessions"
        ),
        Err(e) => tracing::warn!(
            user_id,
            error = %e,
            "could not revoke the sessions of a user removed, disabled or given new credentials"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_reload_reads_in_the_one_problem_format() {
        let timeout = problem(
            "upstream.timeout",
            "`soon` is not a duration",
            "write \"5s\"",
        );
        let e = ReloadError::Config(vec![timeout.clone()]);
        assert_eq!(e.to_string(), format!("  - {timeout}\n"));
        let cert = problem("server.tls.cert", "no certificate", "write a PEM file");
        assert_eq!(
            ReloadError::Certificate(cert).to_string(),
            "`server.tls.cert`: no certificate (fix: write a PEM file)"
        );
    }
}
