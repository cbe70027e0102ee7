//! The in-process cache of hot sessions in front of Redis, so an authenticated request costs
//! no Redis round trip.
//!
//! It is only trusted while the revocation channel is known to be alive (see
//! `invalidation.rs`): every entry is dropped when the channel breaks or comes back, and nothing
//! is served or stored while it is down. An entry never outlives its session's expiry, nor
//! `cache_ttl`.
//!
//! A hand-written sharded map rather than `moka`: a lookup here costs about 600 instructions,
//! moka's about 1,400, on every authenticated request (bench/NOTES.md, "Crates considered and
//! kept out"); and the rule that a read which raced an eviction is not stored is one check under
//! the shard lock the eviction also takes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::store::Session;
use super::token::now_unix_ms;

const SHARDS: usize = 16;

struct Entry {
    session: Arc<Session>,
    /// Unix ms after which the entry is dead: the earlier of the session's expiry and the TTL.
    until_ms: u64,
}

type Shard = HashMap<[u8; 32], Entry>;

pub struct SessionCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    ttl_ms: u64,
    /// Bumped before every eviction; a lookup that raced one does not store what it read.
    epoch: AtomicU64,
    /// Monotonic µs (since `origin`) until which the channel is known to have delivered every
    /// revocation; 0 while it is down.
    trusted_until_us: AtomicU64,
    origin: Instant,
}

impl SessionCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl_ms: ttl.as_millis() as u64,
            epoch: AtomicU64::new(0),
            trusted_until_us: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn shard(&self, digest: &[u8; 32]) -> MutexGuard<'_, Shard> {
        // The digest is a SHA-256 output: any byte of it is uniformly spread.
        self.shards[digest[0] as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    pub fn trusted(&self) -> bool {
        self.now_us() < self.trusted_until_us.load(Ordering::Acquire)
    }

    /// The channel has delivered everything published up to a moment; trust entries until
    /// `until_us`.
    pub fn trust_until(&self, until_us: u64) {
        self.trusted_until_us.fetch_max(until_us, Ordering::AcqRel);
    }

    /// The channel is down: serve nothing from memory until it is back.
    pub fn distrust(&self) {
        self.trusted_until_us.store(0, Ordering::Release);
        self.flush();
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The session of `user_id` (the directory's id) for a token digest.
    pub fn get(&self, user_id: &str, digest: &[u8; 32]) -> Option<Arc<Session>> {
        self.get_by_token(digest)
            .filter(|session| session.user.id == user_id)
    }

    /// The session for a token digest alone: a client that names its user by another id
    /// (Rocket.Chat's) is checked against the session by the caller.
    pub fn get_by_token(&self, digest: &[u8; 32]) -> Option<Arc<Session>> {
        if !self.trusted() {
            return None;
        }
        let shard = self.shard(digest);
        let entry = shard.get(digest)?;
        (entry.until_ms > now_unix_ms()).then(|| entry.session.clone())
    }

    /// Stores a session read from Redis, unless an eviction happened since `epoch_seen` was
    /// read (the read may predate a revocation) or the channel is not trusted.
    pub fn insert(&self, digest: [u8; 32], session: Arc<Session>, epoch_seen: u64) {
        let until_ms = (now_unix_ms() + self.ttl_ms).min(session.expires_ms);
        if !self.trusted() || until_ms <= now_unix_ms() {
            return;
        }
        let mut shard = self.shard(&digest);
        // Checked under the shard lock: evictions bump the epoch before taking it.
        if self.epoch() != epoch_seen {
            return;
        }
        if shard.len() >= self.per_shard && !shard.contains_key(&digest) {
            let now = now_unix_ms();
            shard.retain(|_, e| e.until_ms > now);
            if shard.len() >= self.per_shard {
                if let Some(k) = shard.keys().next().copied() {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(digest, Entry { session, until_ms });
    }

    pub fn invalidate_token(&self, digest: &[u8; 32]) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.shard(digest).remove(digest);
    }

    pub fn invalidate_user(&self, user_id: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, e| e.session.user.id != user_id);
        }
    }

    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    // Spelled from the crate root: `super` here is this file, not the session module.
    use crate::directory::UserProfile;
    use crate::session::cache::*;

    fn session(id: &str, ttl: Duration) -> Arc<Session> {
        Arc::new(Session::new(
            UserProfile {
                id: id.into(),
                username: id.into(),
                name: id.into(),
                email: None,
                roles: vec![],
                directory: "local".into(),
            },
            ttl,
        ))
    }

    fn trusted_cache(capacity: usize, ttl: Duration) -> SessionCache {
        let c = SessionCache::new(capacity, ttl);
        c.trust_until(c.now_us() + 60_000_000);
        c
    }

    #[test]
    fn serves_only_while_trusted_and_for_the_right_user() {
        let c = SessionCache::new(100, Duration::from_secs(10));
        let s = session("u1", Duration::from_secs(60));
        c.insert([1; 32], s.clone(), c.epoch());
        assert!(c.is_empty(), "nothing is stored while the channel is down");
        c.trust_until(c.now_us() + 60_000_000);
        c.insert([1; 32], s.clone(), c.epoch());
        assert!(c.get("u1", &[1; 32]).is_some());
        assert!(c.get("u2", &[1; 32]).is_none());
        c.distrust();
        assert!(c.get("u1", &[1; 32]).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn a_read_that_raced_an_eviction_is_not_stored() {
        let c = trusted_cache(100, Duration::from_secs(10));
        let seen = c.epoch();
        c.invalidate_token(&[9; 32]);
        c.insert([1; 32], session("u1", Duration::from_secs(60)), seen);
        assert!(c.get("u1", &[1; 32]).is_none());
    }

    #[test]
    fn entries_die_with_their_session_and_users_are_evicted_whole() {
        let c = trusted_cache(100, Duration::from_secs(10));
        c.insert([1; 32], session("u1", Duration::from_millis(30)), c.epoch());
        c.insert([2; 32], session("u1", Duration::from_secs(60)), c.epoch());
        c.insert([3; 32], session("u2", Duration::from_secs(60)), c.epoch());
        assert!(c.get("u1", &[1; 32]).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(c.get("u1", &[1; 32]).is_none(), "served past its expiry");
        c.invalidate_user("u1");
        assert!(c.get("u1", &[2; 32]).is_none());
        assert!(c.get("u2", &[3; 32]).is_some());
    }

    #[test]
    fn size_is_bounded() {
        let c = trusted_cache(32, Duration::from_secs(10));
        for i in 0..=255u8 {
            let mut d = [0u8; 32];
            d[0] = i;
            d[1] = i;
            c.insert(d, session("u", Duration::from_secs(60)), c.epoch());
        }
        assert!(c.len() <= 32, "{}", c.len());
    }
}
