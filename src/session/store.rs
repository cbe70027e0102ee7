//! What a session store keeps per session and what every store does ([`SessionStore`]): the
//! memory and Redis stores implement it, and both pass the same contract tests
//! (`tests/session_store.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::token::{now_unix_ms, Token, TokenHash, UpstreamToken};
use crate::directory::UserProfile;

/// What the store keeps per session: who it belongs to, and when it dies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user: UserProfile,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// The Rocket.Chat login token behind this session (`rocketchat` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamToken>,
    /// Set for a personal access token: named by its user, no expiry until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<PersonalToken>,
    /// Where the login that created the session came from, so an operator listing a user's
    /// sessions can tell which one to revoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<SessionOrigin>,
}

/// The client a session was created for, as the gateway saw it at login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionOrigin {
    /// The client IP (the forwarded one when the peer is a trusted proxy).
    pub ip: String,
    /// The `User-Agent` the login sent, cut to [`MAX_USER_AGENT_CHARS`]: it is the client's
    /// text, stored and shown, so it must not grow a record without bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// The `User-Agent` a login request carries, for [`SessionOrigin`].
pub fn user_agent(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

/// How much of a `User-Agent` a session keeps; real ones are far shorter.
pub const MAX_USER_AGENT_CHARS: usize = 256;

impl SessionOrigin {
    pub fn new(ip: std::net::IpAddr, user_agent: Option<&str>) -> Self {
        SessionOrigin {
            ip: ip.to_string(),
            user_agent: user_agent
                .map(str::trim)
                .filter(|ua| !ua.is_empty())
                .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
        }
    }
}

/// What marks a session as a personal access token, and what its owner sees of it in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalToken {
    pub name: String,
    /// The token's last 6 characters, as Rocket.Chat lists them (`lastTokenPart`).
    pub last_token_part: String,
    /// Calls made with this token skip the second-factor check of token management.
    pub bypass_two_factor: bool,
}

/// The expiry of a session that never expires (a personal access token): JavaScript's last
/// representable date, so a `tokenExpires` built from it still parses in every client.
pub const NEVER_EXPIRES_MS: u64 = 8_640_000_000_000_000;

impl Session {
    pub fn new(user: UserProfile, ttl: Duration) -> Self {
        let now = now_unix_ms();
        Session {
            user,
            created_ms: now,
            expires_ms: now + ttl.as_millis() as u64,
            upstream: None,
            personal: None,
            origin: None,
        }
    }

    /// The session, recording the client whose login created it.
    pub fn with_origin(mut self, ip: std::net::IpAddr, user_agent: Option<&str>) -> Self {
        self.origin = Some(SessionOrigin::new(ip, user_agent));
        self
    }

    /// A personal access token of `user`: it lives until it is removed.
    pub fn personal(user: UserProfile, token: &Token, name: &str, bypass_two_factor: bool) -> Self {
        let secret = token.as_str();
        Session {
            user,
            created_ms: now_unix_ms(),
            expires_ms: NEVER_EXPIRES_MS,
            upstream: None,
            personal: Some(PersonalToken {
                name: name.to_string(),
                last_token_part: secret[secret.len().saturating_sub(6)..].to_string(),
                bypass_two_factor,
            }),
            origin: None,
        }
    }

    /// How long the store keeps this session: None for one that never expires.
    pub fn time_to_live_ms(&self, now_ms: u64) -> Option<u64> {
        (self.expires_ms < NEVER_EXPIRES_MS).then(|| self.expires_ms.saturating_sub(now_ms).max(1))
    }

    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }

    /// The user id the client presents: Rocket.Chat's in `rocketchat` mode, else the directory's.
    pub fn client_user_id(&self) -> &str {
        self.upstream
            .as_ref()
            .map(|u| u.user_id.as_str())
            .unwrap_or(&self.user.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store timed out")]
    Timeout,
    #[error("corrupt session record: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// A session served from memory without any I/O, when the store can vouch for it (the
    /// Redis store's cache while its revocation channel is alive). `None` means "ask `get`".
    fn cached(&self, _user_id: &str, _digest: &[u8; 32]) -> Option<Arc<Session>> {
        None
    }
    /// Stores a new session under its token hash, with the session's expiry as the key's TTL.
    async fn create(&self, hash: &TokenHash, session: &Session) -> Result<(), StoreError>;
    /// Rewrites a session that still lives (its upstream token renewed), keeping its expiry;
    /// false, and nothing written, when it was revoked or expired meanwhile: a logout that lands
    /// during a renewal must not be undone by it.
    async fn replace(&self, hash: &TokenHash, session: &Session) -> Result<bool, StoreError>;
    /// The live session of `user_id` for a token hash; expired sessions, and sessions of any
    /// other user, are never returned.
    async fn get(
        &self,
        user_id: &str,
        hash: &TokenHash,
    ) -> Result<Option<Arc<Session>>, StoreError>;
    /// The live session for a token hash alone (`{"resume": token}` logins name no user).
    async fn find(&self, hash: &TokenHash) -> Result<Option<Arc<Session>>, StoreError>;
    /// [`find`](Self::find) from the store itself, never from a cache: a resume login must see
    /// the upstream token another instance renewed a moment ago, not the copy cached before.
    async fn find_uncached(&self, hash: &TokenHash) -> Result<Option<Arc<Session>>, StoreError> {
        self.find(hash).await
    }
    /// Revokes one session of `user_id`; true when it existed. Every instance stops accepting
    /// it at once.
    async fn revoke(&self, user_id: &str, hash: &TokenHash) -> Result<bool, StoreError>;
    /// The live sessions of one user, by token hash.
    async fn list_user(&self, user_id: &str) -> Result<Vec<(TokenHash, Arc<Session>)>, StoreError>;
    /// When each of the user's sessions `hashes` was last used, in unix ms, as far as the
    /// store tracks it (None: not since it was created, or not tracked). Approximate by design:
    /// recording every use would cost a write per request.
    async fn last_used(
        &self,
        user_id: &str,
        hashes: &[TokenHash],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let _ = user_id;
        Ok(vec![None; hashes.len()])
    }
    /// Revokes every session of one user; returns how many were live.
    async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError>;
    /// Revokes every session of a user whose credentials changed to `credentials` (a digest),
    /// once for all instances that report the same change: the first revokes and records them
    /// for `keep_for`, the rest get None and leave alone the sessions issued since. A store
    /// that one process owns has no other instances to agree with and always revokes.
    async fn revoke_user_for_credentials(
        &self,
        user_id: &str,
        credentials: &str,
        keep_for: Duration,
    ) -> Result<Option<usize>, StoreError> {
        let _ = (credentials, keep_for);
        self.revoke_user(user_id).await.map(Some)
    }
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Forgets the failures under `key` (after a successful login).
    async fn clear_failures(&self, key: &str) -> Result<(), StoreError>;
    /// Every regulation key with failures (or reserved attempts) on record, with their times in
    /// unix ms, oldest first: what `authgate blocks list` reads. Entries older than any window
    /// may be included; the caller applies the window.
    async fn failure_records(&self) -> Result<Vec<(String, Vec<u64>)>, StoreError>;
    // Regulation reservations: an attempt is counted before it is evaluated, in one atomic
    // step, so concurrent attempts (on any instance) can never all see room under the limit.
    /// Records the attempt `attempt` (a unique id) under `key` and returns how many attempts
    /// and failures under it fall within the last `window`, this one included.
    async fn reserve_attempt(
        &self,
        key: &str,
        attempt: &str,
        window: Duration,
    ) -> Result<u64, StoreError>;
    /// Takes back one reserved attempt that turned out not to be a failure.
    async fn release_attempt(&self, key: &str, attempt: &str) -> Result<(), StoreError>;
    /// One-time use of TOTP codes (RFC 6238 section 5.2): atomically records `step` as the
    /// user's last accepted time step when it is greater than the recorded one, and returns
    /// true; returns false, changing nothing, for a step at or below it. The record lives for
    /// `keep_for`, which must outlast the time any recorded step stays acceptable.
    async fn accept_totp_step(
        &self,
        user_id: &str,
        step: u64,
        keep_for: Duration,
    ) -> Result<bool, StoreError>;
}

pub type DynSessionStore = Arc<dyn SessionStore>;

#[cfg(test)]
mod tests {
    // Spelled from the crate root: `super` here is this file, not the session module.
    use crate::session::store::*;

    #[test]
    fn an_origin_keeps_a_bounded_user_agent_and_none_for_a_blank_one() {
        let ip = "203.0.113.9".parse().unwrap();
        let long = "x".repeat(10_000);
        let origin = SessionOrigin::new(ip, Some(&long));
        assert_eq!(origin.ip, "203.0.113.9");
        assert_eq!(
            origin.user_agent.unwrap().chars().count(),
            MAX_USER_AGENT_CHARS
        );
        assert_eq!(SessionOrigin::new(ip, Some("  ")).user_agent, None);
        assert_eq!(
            SessionOrigin::new(ip, Some(" curl/8.5.0 "))
                .user_agent
                .as_deref(),
            Some("curl/8.5.0")
        );
    }

    #[test]
    fn sessions_stored_before_origins_existed_still_read() {
        let old = r#"{"user":{"id":"u1","username":"ada","name":"Ada","email":null,"roles":[],"directory":"local"},"created_ms":1,"expires_ms":2}"#;
        let session: Session = serde_json::from_str(old).unwrap();
        assert_eq!(session.origin, None);
        assert!(!serde_json::to_string(&session).unwrap().contains("origin"));
    }
}
