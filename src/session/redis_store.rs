use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::{now_unix_ms, Session, SessionStore, StoreError, TokenHash};

const CREATE_SCRIPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"#;

const REVOKE_USER_SCRIPT: &str = r#"
local n = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. h)
end
redis.call('DEL', KEYS[1])
return n
"#;

/// Failures are a sorted set of timestamps: the count within any window is exact, and the
/// key expires with the window, so blocked users unblock by themselves.
const RECORD_FAILURE_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return redis.call('ZCARD', KEYS[1])
"#;

// Steps are below 2^53, so Lua's doubles compare them exactly.
const ACCEPT_TOTP_STEP_SCRIPT: &str = r#"
local last = redis.call('GET', KEYS[1])
if last and tonumber(ARGV[1]) <= tonumber(last) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Sessions shared by every instance. Each command is bounded by `timeout`; a dead Redis gives
/// `StoreError`, never a pass, and the connection is re-established on the next call.
pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Option<ConnectionManager>>,
    connecting: tokio::sync::Mutex<()>,
    create_script: Script,
    revoke_user_script: Script,
    record_failure_script: Script,
    accept_totp_step_script: Script,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            timeout,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            create_script: Script::new(CREATE_SCRIPT),
            revoke_user_script: Script::new(REVOKE_USER_SCRIPT),
            record_failure_script: Script::new(RECORD_FAILURE_SCRIPT),
            accept_totp_step_script: Script::new(ACCEPT_TOTP_STEP_SCRIPT),
        })
    }

    fn session_key(&self, hash: &TokenHash) -> String {
        format!("{}session:{}", self.prefix, hash.0)
    }

    fn failure_key(&self, key: &str) -> String {
        format!("{}fail:{}", self.prefix, key)
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}user:{}:sessions", self.prefix, user_id)
    }

    fn totp_key(&self, user_id: &str) -> String {
        format!("{}totp:{}", self.prefix, user_id)
    }

    fn cached(&self) -> Option<ConnectionManager> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The shared multiplexed connection, opened on first use so the gateway starts (and
    /// answers 503) while Redis is down, and recovers by itself when Redis returns.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let _guard = tokio::time::timeout(self.timeout, self.connecting.lock())
            .await
            .map_err(|_| StoreError::Timeout)?;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(unavailable)?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(unavailable)
    }
}

fn decode(raw: &str) -> Result<Session, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, hash: &TokenHash, session: &Session) -> Result<(), StoreError> {
        let ttl_ms = session.expires_ms.saturating_sub(now_unix_ms()).max(1);
        let json =
            serde_json::to_string(session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.connection().await?;
        let mut inv = self.create_script.key(self.session_key(hash));
        inv.key(self.user_key(&session.user.id))
            .arg(json)
            .arg(ttl_ms)
            .arg(&hash.0);
        let _: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn get(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let mut conn = self.connection().await?;
        let raw: Option<String> = self.bounded(conn.get(self.session_key(hash))).await?;
        match raw {
            Some(raw) => {
                let s = decode(&raw)?;
                // The key's TTL already bounds it; this guards against a clock-skewed writer.
                Ok(s.is_live(now_unix_ms()).then_some(s))
            }
            None => Ok(None),
        }
    }

    async fn revoke(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let key = self.session_key(hash);
        let raw: Option<String> = self.bounded(conn.get(&key)).await?;
        let deleted: i64 = self.bounded(conn.del(&key)).await?;
        if let Some(Ok(s)) = raw.as_deref().map(decode) {
            let _: i64 = self
                .bounded(conn.srem(self.user_key(&s.user.id), &hash.0))
                .await?;
        }
        Ok(deleted > 0)
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<(TokenHash, Session)>, StoreError> {
        let mut conn = self.connection().await?;
        let hashes: Vec<String> = self.bounded(conn.smembers(self.user_key(user_id))).await?;
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = hashes
            .iter()
            .map(|h| self.session_key(&TokenHash(h.clone())))
            .collect();
        let values: Vec<Option<String>> = self
            .bounded(redis::cmd("MGET").arg(&keys).query_async(&mut conn))
            .await?;
        let now = now_unix_ms();
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (h, v) in hashes.into_iter().zip(values) {
            match v.as_deref().map(decode) {
                Some(Ok(s)) if s.is_live(now) => live.push((TokenHash(h), s)),
                _ => stale.push(h),
            }
        }
        if !stale.is_empty() {
            let _: i64 = self
                .bounded(conn.srem(self.user_key(user_id), stale))
                .await?;
        }
        Ok(live)
    }

    async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let mut conn = self.connection().await?;
        let mut inv = self.revoke_user_script.key(self.user_key(user_id));
        inv.arg(format!("{}session:", self.prefix));
        let n: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(n as usize)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let _: String = self
            .bounded(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    async fn record_failure(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let member = format!("{}-{}", now_unix_ms(), rand::random::<u64>());
        let mut inv = self.record_failure_script.key(self.failure_key(key));
        inv.arg(now_unix_ms())
            .arg(window.as_millis() as u64)
            .arg(member);
        let n: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(n.max(0) as u64)
    }

    async fn recent_failures(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let since = now_unix_ms().saturating_sub(window.as_millis() as u64);
        let n: i64 = self
            .bounded(conn.zcount(self.failure_key(key), format!("({since}"), "+inf"))
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let _: i64 = self.bounded(conn.del(self.failure_key(key))).await?;
        Ok(())
    }

    async fn accept_totp_step(
        &self,
        user_id: &str,
        step: u64,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let mut inv = self.accept_totp_step_script.key(self.totp_key(user_id));
        inv.arg(step).arg(keep_for.as_millis().max(1) as u64);
        let accepted: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(accepted == 1)
    }
}
