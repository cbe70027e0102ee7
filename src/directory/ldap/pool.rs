//! Connections to the LDAP server, in two separate stacks: service-bound connections that only
//! search, and connections that only bind as users. A connection bound as a user therefore never
//! runs a search with that user's rights: what a lookup finds (the user's entry, their groups)
//! never depends on whose password went over that connection last, nor on that user's ACLs.
//!
//! A semaphore of `pool_size` slots bounds how many logins talk to LDAP at once; each holds its
//! slot (an RAII permit) for its whole search-bind-groups sequence, so failures and timeouts can
//! never leak a slot. A connection that errors or times out is dropped, never returned.
//!
//! Why not deadpool or bb8: they pool one kind of interchangeable object and bound how many are
//! checked out. Here the bound is per login, across both kinds (a login holds one slot while it
//! uses a search connection and then a bind connection), so the semaphore would stay even with
//! such a crate, which would then replace only the two idle `Vec`s and their `is_closed` check.
//! Their recycling (a health check before reuse) would also cost an LDAP round trip per login
//! or go unused: a stale connection here is found by its first failed operation and replaced
//! once, without a second `timeout` on a silent server. Kept hand-written for that; see also
//! bench/NOTES.md, "Crates considered and kept out".

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, Scope, SearchEntry,
    SearchOptions, SearchResult,
};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::{ExposeSecret, LdapDirectoryConfig};
use crate::directory::DirectoryError;

pub(super) fn unavailable(why: impl Into<String>) -> DirectoryError {
    DirectoryError::Unavailable(why.into())
}

/// User-bind result codes that mean "these credentials do not log in", not "the server has a
/// problem": invalidCredentials, inappropriateAuthentication, insufficientAccessRights,
/// unwillingToPerform (disabled accounts, unauthenticated binds), noSuchObject (the entry went
/// away after the search), constraintViolation (password policy).
const REFUSED: [u32; 6] = [49, 48, 50, 53, 32, 19];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Search,
    Bind,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum BindOutcome {
    Accepted,
    Refused,
}

pub(super) struct Pool {
    url: String,
    settings: LdapConnSettings,
    timeout: Duration,
    bind_dn: String,
    bind_password: String,
    size: usize,
    slots: Semaphore,
    searchers: Mutex<Vec<Ldap>>,
    binders: Mutex<Vec<Ldap>>,
}

impl Pool {
    pub fn new(config: &LdapDirectoryConfig) -> Result<Pool, String> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout)
            .set_starttls(config.starttls);
        if !config.ca_certs.is_empty() {
            let mut roots = rustls_ldap::RootCertStore::empty();
            for der in &config.ca_certs {
                roots
                    .add(&rustls_ldap::Certificate(der.clone()))
                    .map_err(|e| format!("`directory.ldap.ca_file`: {e}"))?;
            }
            let tls = rustls_ldap::ClientConfig::builder()
                .with_safe_defaults()
                .with_root_certificates(roots)
                .with_no_client_auth();
            settings = settings.set_config(Arc::new(tls));
        }
        Ok(Pool {
            url: config.url.clone(),
            settings,
            timeout: config.timeout,
            bind_dn: config.bind_dn.clone(),
            bind_password: config.bind_password.expose_secret().to_owned(),
            size: config.pool_size,
            slots: Semaphore::new(config.pool_size),
            searchers: Mutex::new(Vec::new()),
            binders: Mutex::new(Vec::new()),
        })
    }

    /// One login's share of the pool. Waiting is bounded too: a full pool answers 503.
    pub async fn slot(&self) -> Result<SemaphorePermit<'_>, DirectoryError> {
        match tokio::time::timeout(self.timeout, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(unavailable("the LDAP pool is closed")),
            Err(_) => Err(unavailable(format!(
                "all {} LDAP slots stayed busy for {}",
                self.size,
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    fn stack(&self, kind: Kind) -> &Mutex<Vec<Ldap>> {
        match kind {
            Kind::Search => &self.searchers,
            Kind::Bind => &self.binders,
        }
    }

    /// An idle connection whose driver is still running; dead ones (the server closed them, or
    /// restarted) are dropped here.
    fn take_idle(&self, kind: Kind) -> Option<Ldap> {
        let mut idle = self.stack(kind).lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn put_back(&self, kind: Kind, ldap: Ldap) {
        let mut idle = self.stack(kind).lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.size {
            idle.push(ldap);
        }
    }

    fn forget_idle(&self, kind: Kind) {
        self.stack(kind)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn timed_out(&self, what: &str) -> DirectoryError {
        unavailable(format!(
            "LDAP {what} at {} got no answer within {}",
            self.url,
            humantime::format_duration(self.timeout)
        ))
    }

    async fn connect(&self, kind: Kind) -> Result<Ldap, DirectoryError> {
        let opened = tokio::time::timeout(
            self.timeout,
            LdapConnAsync::with_settings(self.settings.clone(), &self.url),
        )
        .await;
        let (conn, mut ldap) = match opened {
            Err(_) | Ok(Err(LdapError::Timeout { .. })) => return Err(self.timed_out("connect")),
            Ok(Err(e)) => {
                return Err(unavailable(format!(
                    "cannot connect to LDAP at {}: {e}",
                    self.url
                )))
            }
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        if kind == Kind::Search && !self.bind_dn.is_empty() {
            let bound = tokio::time::timeout(
                self.timeout,
                ldap.with_timeout(self.timeout)
                    .simple_bind(&self.bind_dn, &self.bind_password),
            )
            .await;
            match bound {
                Err(_) | Ok(Err(LdapError::Timeout { .. })) => {
                    return Err(self.timed_out("service bind"))
                }
                Ok(Err(e)) => return Err(unavailable(format!("LDAP service bind failed: {e}"))),
                Ok(Ok(r)) if r.rc == 0 => {}
                Ok(Ok(r)) => {
                    tracing::error!(rc = r.rc, text = %r.text, bind_dn = %self.bind_dn, "the LDAP server refused the service account; check directory.ldap.bind_dn and its password");
                    return Err(unavailable(format!(
                        "LDAP service bind refused (result {})",
                        r.rc
                    )));
                }
            }
        }
        Ok(ldap)
    }

    /// Runs `op` on a connection of `kind`. A pooled connection that turns out broken (the server
    /// restarted or dropped it while idle) is replaced once by a fresh one; a timeout is not
    /// retried, so a silent server costs one `timeout`, not two.
    async fn run<T, F, Fut>(&self, kind: Kind, what: &str, op: F) -> Result<T, DirectoryError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let mut pooled = self.take_idle(kind);
        loop {
            let reused = pooled.is_some();
            let ldap = match pooled.take() {
                Some(l) => l,
                None => self.connect(kind).await?,
            };
            match tokio::time::timeout(self.timeout, op(ldap.clone())).await {
                Ok(Ok(v)) => {
                    self.put_back(kind, ldap);
                    return Ok(v);
                }
                Err(_) | Ok(Err(LdapError::Timeout { .. })) => return Err(self.timed_out(what)),
                Ok(Err(e)) if reused => {
                    tracing::debug!(error = %e, "pooled LDAP connection is stale; replacing it");
                    // Its idle siblings most likely died the same way.
                    self.forget_idle(kind);
                }
                Ok(Err(e)) => return Err(unavailable(format!("LDAP {what} failed: {e}"))),
            }
        }
    }

    /// A subtree search on a service-bound connection; `sizelimit` 0 means the server's limit.
    pub async fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[String],
        sizelimit: i32,
    ) -> Result<(Vec<SearchEntry>, LdapResult), DirectoryError> {
        let t = self.timeout;
        let SearchResult(entries, result) = self
            .run(Kind::Search, "search", |mut ldap| async move {
                let mut opts = SearchOptions::new();
                if sizelimit > 0 {
                    opts = opts.sizelimit(sizelimit);
                }
                ldap.with_search_options(opts)
                    .with_timeout(t)
                    .search(base, Scope::Subtree, filter, attrs)
                    .await
            })
            .await?;
        Ok((
            entries.into_iter().map(SearchEntry::construct).collect(),
            result,
        ))
    }

    /// A simple bind as a user, on a bind-only connection. Callers must have refused empty
    /// DNs and passwords already: with those, a bind is an unauthenticated (anonymous) one.
    pub async fn bind(&self, dn: &str, password: &str) -> Result<BindOutcome, DirectoryError> {
        if dn.is_empty() || password.is_empty() {
            return Ok(BindOutcome::Refused);
        }
        let t = self.timeout;
        let result = self
            .run(Kind::Bind, "user bind", |mut ldap| async move {
                ldap.with_timeout(t).simple_bind(dn, password).await
            })
            .await?;
        match result.rc {
            0 => Ok(BindOutcome::Accepted),
            rc if REFUSED.contains(&rc) => Ok(BindOutcome::Refused),
            rc => Err(unavailable(format!(
                "LDAP answered a user bind with result {rc} ({})",
                result.text
            ))),
        }
    }
}
