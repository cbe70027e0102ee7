//! Lookup cost of authgate's session cache (a copy of src/session/cache.rs's read path) against
//! moka::sync::Cache with a per-entry expiry, both behind the same "channel trusted" check.
//! 10,000 live sessions, every lookup a hit. Not part of authgate's build; the figures and how
//! they were taken are in bench/NOTES.md ("Crates considered and kept out").
//!
//! `cargo build --release`, then `target/release/cache-lookup ours|moka LOOKUPS [THREADS]`,
//! or under `valgrind --tool=callgrind` twice with different LOOKUPS: the difference of the
//! totals divided by the difference of LOOKUPS is the instructions per lookup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Session {
    pub user_id: String,
    pub expires_ms: u64,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const SHARDS: usize = 16;
struct Entry {
    session: Arc<Session>,
    until_ms: u64,
}
type Shard = HashMap<[u8; 32], Entry>;
struct Ours {
    shards: Vec<Mutex<Shard>>,
    trusted_until_us: AtomicU64,
    origin: Instant,
    ttl_ms: u64,
}
impl Ours {
    fn new(ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            trusted_until_us: AtomicU64::new(u64::MAX),
            origin: Instant::now(),
            ttl_ms: ttl.as_millis() as u64,
        }
    }
    fn shard(&self, d: &[u8; 32]) -> MutexGuard<'_, Shard> {
        self.shards[d[0] as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
    fn trusted(&self) -> bool {
        (self.origin.elapsed().as_micros() as u64) < self.trusted_until_us.load(Ordering::Acquire)
    }
    fn insert(&self, d: [u8; 32], s: Arc<Session>) {
        let until_ms = (now_unix_ms() + self.ttl_ms).min(s.expires_ms);
        self.shard(&d).insert(
            d,
            Entry {
                session: s,
                until_ms,
            },
        );
    }
    #[inline(never)]
    fn get(&self, user: &str, d: &[u8; 32]) -> Option<Arc<Session>> {
        if !self.trusted() {
            return None;
        }
        let shard = self.shard(d);
        let e = shard.get(d)?;
        (e.until_ms > now_unix_ms())
            .then(|| e.session.clone())
            .filter(|s| s.user_id == user)
    }
}

struct UntilSessionExpiry;
impl moka::Expiry<[u8; 32], Arc<Session>> for UntilSessionExpiry {
    fn expire_after_create(
        &self,
        _k: &[u8; 32],
        v: &Arc<Session>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(
            v.expires_ms.saturating_sub(now_unix_ms()),
        ))
    }
}
struct Moka {
    cache: moka::sync::Cache<[u8; 32], Arc<Session>>,
    trusted_until_us: AtomicU64,
    origin: Instant,
}
impl Moka {
    fn new(cap: u64, ttl: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(cap)
            .time_to_live(ttl)
            .expire_after(UntilSessionExpiry)
            .build();
        Self {
            cache,
            trusted_until_us: AtomicU64::new(u64::MAX),
            origin: Instant::now(),
        }
    }
    fn trusted(&self) -> bool {
        (self.origin.elapsed().as_micros() as u64) < self.trusted_until_us.load(Ordering::Acquire)
    }
    #[inline(never)]
    fn get(&self, user: &str, d: &[u8; 32]) -> Option<Arc<Session>> {
        if !self.trusted() {
            return None;
        }
        self.cache.get(d).filter(|s| s.user_id == user)
    }
}

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    let mut x = i.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xABCDEF;
    for b in k.iter_mut() {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58476D1CE4E5B9);
        *b = x as u8;
    }
    k
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args[1].clone();
    let n: u64 = args[2].parse().unwrap();
    let threads: usize = args.get(3).map(|t| t.parse().unwrap()).unwrap_or(1);
    const LIVE: u64 = 10_000;
    let ttl = Duration::from_secs(10);
    let keys: Arc<Vec<[u8; 32]>> = Arc::new((0..LIVE).map(key).collect());
    let users: Arc<Vec<String>> = Arc::new((0..LIVE).map(|i| format!("user{i}")).collect());
    let exp = now_unix_ms() + 3_600_000;
    let ours = Arc::new(Ours::new(ttl));
    let moka = Arc::new(Moka::new(LIVE, ttl));
    for i in 0..LIVE as usize {
        let s = Arc::new(Session {
            user_id: users[i].clone(),
            expires_ms: exp,
        });
        ours.insert(keys[i], s.clone());
        moka.cache.insert(keys[i], s);
    }
    moka.cache.run_pending_tasks();
    let start = Instant::now();
    let hits: u64 = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (keys, users, ours, moka, which) = (
                    keys.clone(),
                    users.clone(),
                    ours.clone(),
                    moka.clone(),
                    which.clone(),
                );
                sc.spawn(move || {
                    let mut hits = 0u64;
                    for i in 0..n {
                        let j = ((i * 7919 + t as u64 * 104729) % LIVE) as usize;
                        let found = if which == "ours" {
                            ours.get(&users[j], &keys[j])
                        } else {
                            moka.get(&users[j], &keys[j])
                        };
                        hits += found.is_some() as u64;
                    }
                    hits
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let el = start.elapsed();
    println!(
        "{which} threads={threads} lookups/thread={n} hits={hits} ns/lookup(per thread)={:.1}",
        el.as_nanos() as f64 / n as f64
    );
}
