//! Sessions: 43-character CSPRNG tokens whose SHA-256 hash is the only thing ever stored.
//!
//! Two stores implement [`SessionStore`]: `memory` (one instance) and `redis` (shared by every
//! instance, on one server, Sentinel or Cluster, with an in-process cache of hot sessions). Both
//! pass the same contract tests (`tests/session_store.rs`).

mod cache;
pub mod command;
mod invalidation;
mod memory;
mod redis_conn;
mod redis_scripts;
mod redis_store;

pub use cache::SessionCache;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{SessionConfig, StoreKind};
use crate::directory::UserProfile;

/// A raw session token as handed to the client. Never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// 32 bytes from the OS CSPRNG, base64url without padding: 43 characters of `[A-Za-z0-9_-]`.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Token(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn from_client(s: &str) -> Self {
        Token(s.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn sealing_key(&self) -> chacha20poly1305::Key {
        // Domain-separated from the lookup hash, so the stored hash does not yield the key.
        let digest = Sha256::digest(format!("authgate upstream token key\0{}", self.0).as_bytes());
        chacha20poly1305::Key::clone_from_slice(&digest)
    }

    /// Seals an upstream token so that only this (client) token can open it.
    pub fn seal(&self, upstream_user_id: &str, upstream_token: &str) -> UpstreamToken {
        use chacha20poly1305::aead::{Aead, AeadCore, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.sealing_key());
        let nonce = chacha20poly1305::ChaCha20Poly1305::generate_nonce(&mut rand::rngs::OsRng);
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(&nonce, upstream_token.as_bytes())
                .expect("encryption of a short token cannot fail"),
        );
        UpstreamToken {
            user_id: upstream_user_id.to_string(),
            sealed: base64::engine::general_purpose::STANDARD.encode(out),
            obtained_ms: now_unix_ms(),
        }
    }

    /// Opens an upstream token sealed with this token; None when it was sealed with another.
    pub fn open(&self, sealed: &UpstreamToken) -> Option<String> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&sealed.sealed)
            .ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(12);
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&self.sealing_key());
        let plain = cipher
            .decrypt(chacha20poly1305::Nonce::from_slice(nonce), ciphertext)
            .ok()?;
        String::from_utf8(plain).ok()
    }

    /// sha256(token): what the in-process cache keys on.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// What the store keys on: base64(sha256(token)), as Rocket.Chat stores `hashedToken`.
    pub fn hash(&self) -> TokenHash {
        TokenHash(base64::engine::general_purpose::STANDARD.encode(self.digest()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub String);

impl TokenHash {
    /// The sha256 digest this hash encodes, if it is one.
    pub fn digest(&self) -> Option<[u8; 32]> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .ok()
            .and_then(|d| d.try_into().ok())
    }

    /// What operators see and type: a prefix of the hash, useless as a credential (it is a
    /// hash, and a partial one).
    pub fn id(&self) -> String {
        self.0
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect()
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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

/// An upstream (Rocket.Chat) token, sealed with a key only the client's own token yields: the
/// store never holds a usable upstream credential, just as it never holds the client's token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamToken {
    /// The Rocket.Chat user id: what the client sends as `X-User-Id`.
    pub user_id: String,
    /// base64(nonce || ChaCha20-Poly1305 ciphertext).
    pub sealed: String,
    pub obtained_ms: u64,
}

impl std::fmt::Debug for UpstreamToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamToken")
            .field("user_id", &self.user_id)
            .field("obtained_ms", &self.obtained_ms)
            .finish_non_exhaustive()
    }
}

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
    /// Records a failed login under `key` (e.g. `user:alice`, `ip:192.0.2.7`) and returns how
    /// many failures under it fall within the last `window`, this one included.
    async fn record_failure(&self, key: &str, window: Duration) -> Result<u64, StoreError>;
    /// How many failures under `key` fall within the last `window`.
    async fn recent_failures(&self, key: &str, window: Duration) -> Result<u64, StoreError>;
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

pub fn build_store(config: &SessionConfig) -> Result<DynSessionStore, StoreError> {
    Ok(match config.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Redis => Arc::new(RedisStore::from_config(config)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_rocket_chat_shape() {
        let t = Token::generate();
        assert_eq!(t.as_str().len(), 43);
        assert!(t
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(t, Token::generate());
        let h = t.hash();
        assert_eq!(h.0.len(), 44);
        assert!(!h.0.contains(t.as_str()));
        assert!(!format!("{t:?}").contains(t.as_str()));
    }

    #[test]
    fn upstream_tokens_open_only_with_the_client_token_that_sealed_them() {
        let client = Token::generate();
        let sealed = client.seal("RcUser", "rc-token-123");
        assert!(!sealed.sealed.contains("rc-token-123"));
        assert_eq!(client.open(&sealed).as_deref(), Some("rc-token-123"));
        assert_eq!(Token::generate().open(&sealed), None);
        assert_ne!(
            client.seal("RcUser", "rc-token-123").sealed,
            sealed.sealed,
            "fresh nonce each time"
        );
        assert!(!format!("{sealed:?}").contains(&sealed.sealed));
    }

    #[test]
    fn hash_matches_rocket_chat_hashed_token() {
        // base64(sha256("abc")), as Meteor's Accounts._hashLoginToken computes it.
        assert_eq!(
            Token::from_client("abc").hash().0,
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
