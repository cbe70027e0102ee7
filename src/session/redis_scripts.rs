//! The Lua scripts the Redis session store runs: each is one atomic step on the server, and
//! every key one script touches shares a hash tag, so each runs in a single Cluster slot.
//!
//! Key names are in `redis_store.rs`; here `index` is a user's set of token hashes and `seen`
//! the user's hash of token hash -> last use (unix ms).

/// KEYS: session, index, seen. ARGV: session JSON, TTL in ms, token hash.
/// A TTL of 0 is a session without expiry (a personal access token): it and the user's index
/// are kept until removed. The index otherwise lives as long as its longest-lived session, and
/// the last-use record as long as the index.
pub const CREATE: &str = r#"
local ms = tonumber(ARGV[2])
local fresh = redis.call('EXISTS', KEYS[2]) == 0
if ms > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('SADD', KEYS[2], ARGV[3])
if ms == 0 then
  redis.call('PERSIST', KEYS[2])
else
  local ttl = redis.call('PTTL', KEYS[2])
  if fresh or (ttl >= 0 and ttl < ms) then redis.call('PEXPIRE', KEYS[2], ms) end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) else redis.call('PERSIST', KEYS[3]) end
end
return 1
"#;

/// KEYS: session, index, seen. ARGV: token hash, channel, message.
/// Deletes and announces in one step, so no instance can miss a revocation that happened.
/// Rewrites a session only while its key exists, keeping the key's TTL. KEYS[1] the session;
/// ARGV[1] its JSON. Returns 1 when written.
pub const REPLACE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1
"#;

pub const REVOKE: &str = r#"
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n
"#;

/// KEYS: index, seen, [credentials]. ARGV: session key prefix, channel, message,
/// [credentials digest, how long to keep it in ms].
/// The session keys are built here from the index; they share the index's hash tag (slot).
pub const REVOKE_USER: &str = r#"
if KEYS[3] then
  -- Credentials already recorded: another instance revoked for this change, and the
  -- sessions issued since then stay.
  if redis.call('GET', KEYS[3]) == ARGV[4] then return -1 end
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
end
local n = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. h)
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n
"#;

/// KEYS: index, seen. ARGV: token hash, now (unix ms).
/// Records a session's last use, only while the index still holds it (a revocation between
/// the read and this write must not leave a record behind), for as long as the index lives.
pub const TOUCH: &str = r#"
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 or redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) else redis.call('PERSIST', KEYS[2]) end
return 1
"#;

/// KEYS: failures. ARGV: now (unix ms), window in ms, member.
/// Failures are a sorted set of timestamps: the count within any window is exact, and the
/// key expires with the window, so blocked users unblock by themselves.
pub const RECORD_FAILURE: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return redis.call('ZCARD', KEYS[1])
"#;

/// KEYS: the user's TOTP record. ARGV: step, how long to keep it in ms.
/// Steps are below 2^53, so Lua's doubles compare them exactly.
pub const ACCEPT_TOTP_STEP: &str = r#"
local last = redis.call('GET', KEYS[1])
if last and tonumber(ARGV[1]) <= tonumber(last) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;
