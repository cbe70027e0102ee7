//! Sessions in Redis, shared by every instance, on one server, Sentinel or Cluster.
//!
//! Keys (`P` is `session.key_prefix`):
//! - `P{u:<user id>}:session:<token hash>`: the session (JSON), expiring with it (personal
//!   access tokens do not expire);
//! - `P{u:<user id>}:sessions`: the set of the user's token hashes;
//! - `P{u:<user id>}:seen`: token hash -> when the session was last read from Redis (unix ms),
//!   written at most once per [`LAST_USED_RESOLUTION_MS`] per session, never per request;
//! - `P{u:<user id>}:totp`: the user's last accepted TOTP step;
//! - `Ptoken:<token hash>`: the user id, so `{"resume": token}` logins, which carry no user id,
//!   find the session;
//! - `Pfail:<regulation key>` (`ip:…`, `user:…`, `uid:…`): failed-login times, which
//!   `authgate blocks` lists and clears;
//! - channel `Prevocations`: `t:<token hash>` / `u:<user id>` for every revocation.
//!
//! The braces are Redis Cluster hash tags: all of one user's keys live in one slot, so each Lua
//! script touches a single slot. Protected requests always name the user (X-User-Id), so the
//! session key can be built from the request alone.

use std::sync::{Arc, Once};
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::cache::SessionCache;
use super::invalidation;
use super::redis_conn::{escape_glob, unavailable, Connector, Lease};
use super::redis_scripts;
use super::store::{Session, SessionStore, StoreError};
use super::token::{now_unix_ms, TokenHash};
use crate::config::{RedisConfig, SessionConfig};

/// Each command is bounded by `timeout`; a dead Redis gives `StoreError`, never a pass, and the
/// connection is re-established (with Sentinel: re-resolved) on the next call.
pub struct RedisStore {
    connector: Arc<Connector>,
    prefix: String,
    timeout: Duration,
    wait_replicas: usize,
    wait_timeout: Duration,
    cache: Option<Arc<SessionCache>>,
    subscriber: Once,
    create_script: Script,
    replace_script: Script,
    revoke_script: Script,
    revoke_user_script: Script,
    touch_script: Script,
    record_failure_script: Script,
    accept_totp_step_script: Script,
}

/// How stale a session's recorded last use may get before a read from Redis renews it: the
/// listing is approximate so that a busy session costs one write a minute, not one a request.
pub const LAST_USED_RESOLUTION_MS: u64 = 60_000;

/// Whether a command failed because its connection was already gone: the server closed it (a
/// restart) or the socket broke, as opposed to an answer or a timeout.
fn found_dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() && !e.is_timeout()
}

fn decode(raw: &str) -> Result<Session, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl RedisStore {
    /// One server at `url`, without a cache: what tests and one-shot commands use.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        Self::with_redis(&RedisConfig::single(url), prefix, timeout, None)
    }

    pub fn from_config(config: &SessionConfig) -> Result<Self, StoreError> {
        let cache = (!config.cache_ttl.is_zero() && config.cache_size > 0)
            .then(|| SessionCache::new(config.cache_size, config.cache_ttl));
        Self::with_redis(
            &config.redis,
            &config.key_prefix,
            config.redis_timeout,
            cache,
        )
    }

    pub fn with_redis(
        redis: &RedisConfig,
        prefix: &str,
        timeout: Duration,
        cache: Option<SessionCache>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            connector: Arc::new(Connector::new(redis, timeout)?),
            prefix: prefix.to_string(),
            timeout,
            wait_replicas: redis.wait_replicas,
            wait_timeout: redis.wait_timeout,
            cache: cache.map(Arc::new),
            subscriber: Once::new(),
            create_script: Script::new(redis_scripts::CREATE),
            replace_script: Script::new(redis_scripts::REPLACE),
            revoke_script: Script::new(redis_scripts::REVOKE),
            revoke_user_script: Script::new(redis_scripts::REVOKE_USER),
            touch_script: Script::new(redis_scripts::TOUCH),
            record_failure_script: Script::new(redis_scripts::RECORD_FAILURE),
            accept_totp_step_script: Script::new(redis_scripts::ACCEPT_TOTP_STEP),
        })
    }

    /// The session cache, when configured (for tests and metrics).
    pub fn cache(&self) -> Option<&SessionCache> {
        self.cache.as_deref()
    }

    fn user_tag(&self, user_id: &str) -> String {
        format!("{}{{u:{user_id}}}", self.prefix)
    }

    fn session_key(&self, user_id: &str, hash: &TokenHash) -> String {
        format!("{}:session:{}", self.user_tag(user_id), hash.0)
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}:sessions", self.user_tag(user_id))
    }

    fn seen_key(&self, user_id: &str) -> String {
        format!("{}:seen", self.user_tag(user_id))
    }

    /// Revokes every session of `user_id`; with `credentials`, only when they are not already
    /// recorded for the user (None then), recording them for `keep_for`.
    async fn revoke_user_once(
        &self,
        user_id: &str,
        credentials: Option<(&str, Duration)>,
    ) -> Result<Option<usize>, StoreError> {
        let index = self.user_key(user_id);
        let mut inv = self.revoke_user_script.key(&index);
        inv.key(self.seen_key(user_id));
        if credentials.is_some() {
            inv.key(self.credentials_key(user_id));
        }
        inv.arg(format!("{}:session:", self.user_tag(user_id)))
            .arg(self.channel())
            .arg(invalidation::user_message(user_id));
        if let Some((digest, keep_for)) = credentials {
            inv.arg(digest).arg(keep_for.as_millis() as u64);
        }
        let inv = &inv;
        let n: i64 = self
            .run_durably(&index, |mut l| async move {
                inv.invoke_async(&mut l.conn).await
            })
            .await?;
        if n < 0 {
            return Ok(None);
        }
        if let Some(cache) = &self.cache {
            cache.invalidate_user(user_id);
        }
        Ok(Some(n as usize))
    }

    fn credentials_key(&self, user_id: &str) -> String {
        format!("{}:credentials", self.user_tag(user_id))
    }

    fn totp_key(&self, user_id: &str) -> String {
        format!("{}:totp", self.user_tag(user_id))
    }

    fn pointer_key(&self, hash: &TokenHash) -> String {
        format!("{}token:{}", self.prefix, hash.0)
    }

    fn failure_key(&self, key: &str) -> String {
        format!("{}fail:{}", self.prefix, key)
    }

    fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// Starts listening for revocations the first time the cache is used, on the caller's
    /// runtime; until the subscription is confirmed the cache stays out of the way.
    fn ensure_subscribed(&self) {
        if let Some(cache) = &self.cache {
            self.subscriber.call_once(|| {
                invalidation::spawn(
                    self.connector.clone(),
                    Arc::downgrade(cache),
                    self.channel(),
                )
            });
        }
    }

    /// Runs one command on the shared connection; a failure drops that connection. A command
    /// that finds the connection already dropped (Redis restarted since it was opened) is tried
    /// once more on a fresh one: it never reached a server, so running it again is safe.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Lease) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.attempt(&f).await.map(|(_, v)| v)
    }

    /// `run`, also answering the connection the command finally ran on.
    async fn attempt<T, F, Fut>(&self, f: &F) -> Result<(Lease, T), StoreError>
    where
        F: Fn(Lease) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let lease = self.connector.lease().await?;
            match tokio::time::timeout(self.timeout, f(lease.clone())).await {
                Ok(Ok(v)) => return Ok((lease, v)),
                Ok(Err(e)) => {
                    self.connector.failed(&lease);
                    if retried || !found_dropped(&e) {
                        return Err(unavailable(e));
                    }
                    retried = true;
                }
                Err(_) => {
                    self.connector.failed(&lease);
                    return Err(StoreError::Timeout);
                }
            }
        }
    }

    /// Like `run`, then waits for `wait_replicas` replicas to hold the write (`WAIT`), so a
    /// failover cannot undo it.
    async fn run_durably<T, F, Fut>(&self, key: &str, f: F) -> Result<T, StoreError>
    where
        F: Fn(Lease) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (lease, value) = self.attempt(&f).await?;
        tokio::time::timeout(
            self.timeout,
            self.connector
                .wait(&lease, key, self.wait_replicas, self.wait_timeout),
        )
        .await
        .map_err(|_| StoreError::Timeout)??;
        Ok(value)
    }

    /// Records a session's last use. Best effort: the request it serves has its session
    /// already, and a lost record only makes the listing older.
    async fn touch(&self, user_id: &str, hash: &TokenHash, now: u64) {
        let mut inv = self.touch_script.key(self.user_key(user_id));
        inv.key(self.seen_key(user_id)).arg(&hash.0).arg(now);
        let inv = &inv;
        let touched: Result<i64, StoreError> = self
            .run(|mut l| async move { inv.invoke_async(&mut l.conn).await })
            .await;
        if let Err(e) = touched {
            tracing::debug!(error = %e, "could not record a session's last use");
        }
    }

    async fn read_session(
        &self,
        user_id: &str,
        hash: &TokenHash,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        self.ensure_subscribed();
        let epoch = self.cache.as_ref().map(|c| c.epoch());
        let key = self.session_key(user_id, hash);
        let seen = self.seen_key(user_id);
        let (key, seen) = (&key, &seen);
        // One round trip: the session, and when its last use was recorded.
        let (raw, last_used): (Option<String>, Option<u64>) = self
            .run(|mut l| async move {
                redis::pipe()
                    .get(key)
                    .hget(seen, &hash.0)
                    .query_async(&mut l.conn)
                    .await
            })
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let session = decode(&raw)?;
        let now = now_unix_ms();
        // The key's TTL already bounds it; this guards against a clock-skewed writer.
        if !session.is_live(now) || session.user.id != user_id {
            return Ok(None);
        }
        if last_used.is_none_or(|t| now.saturating_sub(t) >= LAST_USED_RESOLUTION_MS) {
            self.touch(user_id, hash, now).await;
        }
        let session = Arc::new(session);
        if let (Some(cache), Some(epoch), Some(digest)) = (&self.cache, epoch, hash.digest()) {
            cache.insert(digest, session.clone(), epoch);
        }
        Ok(Some(session))
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn cached(&self, user_id: &str, digest: &[u8; 32]) -> Option<Arc<Session>> {
        self.cache.as_ref()?.get(user_id, digest)
    }

    async fn replace(&self, hash: &TokenHash, session: &Session) -> Result<bool, StoreError> {
        let json =
            serde_json::to_string(session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut inv = self
            .replace_script
            .key(self.session_key(&session.user.id, hash));
        inv.arg(json);
        let inv = &inv;
        let written: i64 = self
            .run(|mut l| async move { inv.invoke_async(&mut l.conn).await })
            .await?;
        // This instance reads the rewrite at once; others keep their copy until it ages out
        // (an older upstream token there is renewed again if the upstream refuses it).
        if let (Some(cache), Some(d)) = (&self.cache, hash.digest()) {
            cache.invalidate_token(&d);
        }
        Ok(written == 1)
    }

    async fn create(&self, hash: &TokenHash, session: &Session) -> Result<(), StoreError> {
        let ttl_ms = session.time_to_live_ms(now_unix_ms());
        let json =
            serde_json::to_string(session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let user_id = &session.user.id;
        // The resume pointer lives in another slot; it is written first, so a session never
        // exists without it (a pointer without a session leads nowhere).
        let pointer = self.pointer_key(hash);
        let pointer = &pointer;
        self.run(|mut l| async move {
            match ttl_ms {
                Some(ms) => {
                    l.conn
                        .pset_ex::<_, _, ()>(pointer, user_id.as_str(), ms)
                        .await
                }
                None => l.conn.set::<_, _, ()>(pointer, user_id.as_str()).await,
            }
        })
        .await?;
        let ttl_ms = ttl_ms.unwrap_or(0);
        let mut inv = self.create_script.key(self.session_key(user_id, hash));
        inv.key(self.user_key(user_id))
            .key(self.seen_key(user_id))
            .arg(json)
            .arg(ttl_ms)
            .arg(&hash.0);
        let inv = &inv;
        let _: i64 = self
            .run(|mut l| async move { inv.invoke_async(&mut l.conn).await })
            .await?;
        Ok(())
    }

    async fn get(
        &self,
        user_id: &str,
        hash: &TokenHash,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        if let Some(s) = hash.digest().and_then(|d| self.cached(user_id, &d)) {
            return Ok(Some(s));
        }
        self.read_session(user_id, hash).await
    }

    async fn find(&self, hash: &TokenHash) -> Result<Option<Arc<Session>>, StoreError> {
        let hot = hash
            .digest()
            .and_then(|d| self.cache.as_ref()?.get_by_token(&d));
        if let Some(session) = hot {
            return Ok(Some(session));
        }
        self.find_uncached(hash).await
    }

    async fn find_uncached(&self, hash: &TokenHash) -> Result<Option<Arc<Session>>, StoreError> {
        let pointer = self.pointer_key(hash);
        let pointer = &pointer;
        let user_id: Option<String> = self
            .run(|mut l| async move { l.conn.get(pointer).await })
            .await?;
        match user_id {
            Some(u) => self.read_session(&u, hash).await,
            None => Ok(None),
        }
    }

    async fn revoke(&self, user_id: &str, hash: &TokenHash) -> Result<bool, StoreError> {
        let key = self.session_key(user_id, hash);
        let mut inv = self.revoke_script.key(&key);
        inv.key(self.user_key(user_id))
            .key(self.seen_key(user_id))
            .arg(&hash.0)
            .arg(self.channel())
            .arg(invalidation::token_message(&hash.0));
        let inv = &inv;
        let deleted: i64 = self
            .run_durably(
                &key,
                |mut l| async move { inv.invoke_async(&mut l.conn).await },
            )
            .await?;
        // Our own cache hears the message too, but this answer may reach the client first.
        if let (Some(cache), Some(d)) = (&self.cache, hash.digest()) {
            cache.invalidate_token(&d);
        }
        Ok(deleted > 0)
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<(TokenHash, Arc<Session>)>, StoreError> {
        let index = self.user_key(user_id);
        let hashes: Vec<String> = self
            .run(|mut l| {
                let index = index.clone();
                async move { l.conn.smembers(index).await }
            })
            .await?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = hashes
            .iter()
            .map(|h| self.session_key(user_id, &TokenHash(h.clone())))
            .collect();
        let keys = &keys;
        let values: Vec<Option<String>> = self
            .run(|mut l| async move { redis::cmd("MGET").arg(keys).query_async(&mut l.conn).await })
            .await?;
        let now = now_unix_ms();
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (h, v) in hashes.into_iter().zip(values) {
            match v.as_deref().map(decode) {
                Some(Ok(s)) if s.is_live(now) => live.push((TokenHash(h), Arc::new(s))),
                _ => stale.push(h),
            }
        }
        if !stale.is_empty() {
            let stale = &stale;
            let index = &index;
            let seen = &self.seen_key(user_id);
            let _: (i64, i64) = self
                .run(|mut l| async move {
                    redis::pipe()
                        .srem(index, stale)
                        .hdel(seen, stale)
                        .query_async(&mut l.conn)
                        .await
                })
                .await?;
        }
        Ok(live)
    }

    async fn last_used(
        &self,
        user_id: &str,
        hashes: &[TokenHash],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let seen = &self.seen_key(user_id);
        let fields: Vec<&str> = hashes.iter().map(|h| h.0.as_str()).collect();
        let fields = &fields;
        self.run(|mut l| async move {
            redis::cmd("HMGET")
                .arg(seen)
                .arg(fields)
                .query_async(&mut l.conn)
                .await
        })
        .await
    }

    async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let revoked = self.revoke_user_once(user_id, None).await?;
        Ok(revoked.unwrap_or(0))
    }

    async fn revoke_user_for_credentials(
        &self,
        user_id: &str,
        credentials: &str,
        keep_for: Duration,
    ) -> Result<Option<usize>, StoreError> {
        self.revoke_user_once(user_id, Some((credentials, keep_for)))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .run(|mut l| async move { redis::cmd("PING").query_async(&mut l.conn).await })
            .await?;
        Ok(())
    }

    async fn reserve_attempt(
        &self,
        key: &str,
        attempt: &str,
        window: Duration,
    ) -> Result<u64, StoreError> {
        // The failure script is one atomic step: concurrent reservations on any instance get
        // distinct running totals.
        let mut inv = self.record_failure_script.key(self.failure_key(key));
        inv.arg(now_unix_ms())
            .arg(window.as_millis() as u64)
            .arg(attempt);
        let inv = &inv;
        let n: i64 = self
            .run(|mut l| async move { inv.invoke_async(&mut l.conn).await })
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn release_attempt(&self, key: &str, attempt: &str) -> Result<(), StoreError> {
        let key = self.failure_key(key);
        let attempt = attempt.to_string();
        let key = &key;
        let attempt = &attempt;
        let _: i64 = self
            .run(|mut l| async move { l.conn.zrem(key, attempt).await })
            .await?;
        Ok(())
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let key = self.failure_key(key);
        let key = &key;
        let _: i64 = self
            .run(|mut l| async move { l.conn.del(key).await })
            .await?;
        Ok(())
    }

    async fn failure_records(&self) -> Result<Vec<(String, Vec<u64>)>, StoreError> {
        let prefix = self.failure_key("");
        let mut records = Vec::new();
        let pattern = format!("{}*", escape_glob(&prefix));
        for key in self.connector.keys_matching(&pattern, self.timeout).await? {
            let key = &key;
            // Member -> time in ms; a key that expired since the scan gives an empty list.
            let entries: Vec<(String, f64)> = self
                .run(|mut l| async move { l.conn.zrange_withscores(key, 0, -1).await })
                .await?;
            if let (Some(name), false) = (key.strip_prefix(&prefix), entries.is_empty()) {
                records.push((
                    name.to_string(),
                    entries.iter().map(|(_, t)| *t as u64).collect(),
                ));
            }
        }
        Ok(records)
    }

    async fn accept_totp_step(
        &self,
        user_id: &str,
        step: u64,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.totp_key(user_id);
        let mut inv = self.accept_totp_step_script.key(&key);
        inv.arg(step).arg(keep_for.as_millis().max(1) as u64);
        // A used step lost in a failover would let the same code in twice.
        let inv = &inv;
        let accepted: i64 = self
            .run_durably(
                &key,
                |mut l| async move { inv.invoke_async(&mut l.conn).await },
            )
            .await?;
        Ok(accepted == 1)
    }
}
