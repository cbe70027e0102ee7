//! Password hashing and verification. Verification is CPU-heavy (argon2id ≈ 25 ms, 19 MiB), so it
//! runs on threads of its own, at a lower CPU priority, behind a semaphore: a burst of logins
//! waits its turn (or gets a fast 503) instead of starving proxied traffic on the workers.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// A password as the client sent it.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    Plain(String),
    /// Meteor's `{digest: sha256 hex, algorithm: "sha-256"}` form.
    Sha256Digest(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    pub fn is_empty(&self) -> bool {
        match self {
            Password::Plain(p) | Password::Sha256Digest(p) => p.is_empty(),
        }
    }
}

/// OWASP's argon2id recommendation: m = 19 MiB, t = 2, p = 1.
fn owasp_argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid argon2 params"),
    )
}

/// A PHC string for `hash-password` and for the dummy hash unknown users are checked against.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    owasp_argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing cannot fail with valid params")
        .to_string()
}

/// The users-file lines `hash-password` prints: argon2id over the password's SHA-256 hex,
/// marked `password_prehash = "sha256"`, so plain logins (hashed first) and Meteor's
/// `{digest, algorithm: "sha-256"}` logins both verify, as they do against Rocket.Chat's own
/// bcrypt-over-SHA-256 entries.
pub fn users_file_entry(password: &str) -> String {
    format!(
        "password_hash = \"{}\"\npassword_prehash = \"sha256\"",
        hash_password(&sha256_hex(password))
    )
}

/// Whether a stored hash is in a format this gateway verifies.
pub fn check_hash_format(hash: &str) -> Result<(), String> {
    if is_bcrypt(hash) {
        return hash
            .parse::<bcrypt::HashParts>()
            .map(|_| ())
            .map_err(|e| format!("not a valid bcrypt hash ({e})"));
    }
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC string ({e})"))?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Params::try_from(&parsed)
            .map(|_| ())
            .map_err(|e| format!("bad argon2 parameters ({e})")),
        other => Err(format!(
            "unsupported algorithm `{other}`; use argon2 or bcrypt ($2a$/$2b$/$2y$)"
        )),
    }
}

fn is_bcrypt(hash: &str) -> bool {
    hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")
}

/// What a stored hash was computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prehash {
    /// The password itself.
    #[default]
    None,
    /// The SHA-256 hex of the password, as Rocket.Chat stores it (bcrypt over sha256 hex).
    Sha256,
}

/// Verifies against argon2 (any variant and parameters, read from the PHC string) or bcrypt.
/// Never truncates: bcrypt inputs over 72 bytes fail instead of matching a prefix. A digest
/// login verifies only against a hash made over the digest; elsewhere it costs the same and fails.
pub fn verify_blocking(password: &Password, hash: &str, prehash: Prehash) -> bool {
    verify_in(password, hash, prehash, &mut Vec::new())
}

/// [`verify_blocking`] with argon2's working memory supplied, so a hashing thread reuses it.
fn verify_in(password: &Password, hash: &str, prehash: Prehash, memory: &mut Vec<Block>) -> bool {
    let (input, usable) = match (password, prehash) {
        (Password::Plain(p), Prehash::None) => (p.clone(), true),
        (Password::Plain(p), Prehash::Sha256) => (sha256_hex(p), true),
        (Password::Sha256Digest(d), Prehash::Sha256) => (d.clone(), true),
        (Password::Sha256Digest(d), Prehash::None) => (d.clone(), false),
    };
    let matched = if is_bcrypt(hash) {
        bcrypt::non_truncating_verify(&input, hash).unwrap_or(false)
    } else {
        PasswordHash::new(hash)
            .is_ok_and(|parsed| argon2_matches(input.as_bytes(), &parsed, memory))
    };
    matched && usable
}

/// What argon2's `verify_password` does (algorithm, version and parameters from the PHC string,
/// a constant-time comparison), but in `memory` instead of a fresh allocation.
fn argon2_matches(input: &[u8], hash: &PasswordHash, memory: &mut Vec<Block>) -> bool {
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm),
        hash.version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(hash),
    ) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let mut computed = [0u8; Output::MAX_LENGTH];
    let computed = &mut computed[..expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(input, salt, &mut *computed, &mut memory[..])
        .is_ok()
        && Output::new(computed).is_ok_and(|computed| computed == expected)
}

pub fn sha256_hex(s: &str) -> String {
    crate::hex::encode(&Sha256::digest(s.as_bytes()))
}

type Job = Box<dyn FnOnce(&SpareMemory) + Send>;

/// How long the hashing threads keep argon2's working memory after the last verification.
/// Within a burst each login reuses it: allocating, faulting in and unmapping 19 MiB per login
/// cost the hashing threads time and the workers TLB-shootdown interrupts (bench/NOTES.md).
const MEMORY_KEPT_WHILE_IDLE: Duration = Duration::from_secs(2);

/// argon2 working memory not in use by a verification right now.
#[derive(Default)]
struct SpareMemory(std::sync::Mutex<Vec<Vec<Block>>>);

impl SpareMemory {
    fn take(&self) -> Vec<Block> {
        self.0
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default()
    }

    fn give_back(&self, memory: Vec<Block>) {
        if let Ok(mut spare) = self.0.lock() {
            spare.push(memory);
        }
    }

    fn release(&self) {
        if let Ok(mut spare) = self.0.lock() {
            spare.clear();
        }
    }
}

/// Why a password could not be verified (as opposed to being wrong).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Every hashing thread stayed busy past `server.login_queue_timeout`.
    #[error("{0}")]
    Busy(String),
    /// The hashing machinery itself failed (a panic, its threads gone).
    #[error("{0}")]
    Broken(String),
}

/// The CPU priority of the hashing threads (`server.password_hash_priority`). Below the
/// workers', a burst of logins does not take the proxied requests' core (see bench/NOTES.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPriority {
    /// As the workers.
    Normal,
    /// nice 10: about a tenth of a core the workers also want.
    Low,
    /// SCHED_IDLE: only cores nothing else wants. Logins wait (then get a 503) while the
    /// machine is busy, so only for hosts that run nothing but authgate.
    Idle,
}

const LOW_NICE: i32 = 10;

impl HashPriority {
    /// Applies to the calling thread (on Linux nice values and policies are per thread).
    fn apply(self) {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        let outcome = match self {
            HashPriority::Normal => return,
            // No pid (`who = 0`) is the calling thread.
            HashPriority::Low => {
                rustix::process::setpriority_process(None, LOW_NICE).map_err(|e| e.to_string())
            }
            HashPriority::Idle => set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Min,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
            )
            .map_err(|e| format!("{e:?}")),
        };
        if let Err(e) = outcome {
            let priority = match self {
                HashPriority::Normal => "normal",
                HashPriority::Low => "low",
                HashPriority::Idle => "idle",
            };
            tracing::warn!(error = %e, priority, "hashing thread keeps the default priority");
        }
    }
}

/// Threads that run verifications. They end when the last `Verifier` holding them is dropped.
struct HashingThreads {
    jobs: std::sync::mpsc::Sender<Job>,
    /// The threads' own; here for the tests to look at.
    #[cfg_attr(not(test), allow(dead_code))]
    spare: Arc<SpareMemory>,
}

impl HashingThreads {
    fn start(count: usize, priority: HashPriority, keep_memory: Duration) -> Option<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let spare = Arc::new(SpareMemory::default());
        let mut started = 0;
        for i in 0..count {
            let (queue, spare) = (queue.clone(), spare.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("authgate-hash-{i}"))
                .spawn(move || {
                    priority.apply();
                    loop {
                        // The lock is held only while waiting for the next job; whoever waits
                        // holds no memory, so the one that waited long enough frees it all.
                        let next = match queue.lock() {
                            Ok(q) => q.recv_timeout(keep_memory),
                            Err(_) => return,
                        };
                        match next {
                            Ok(job) => job(&spare),
                            Err(RecvTimeoutError::Timeout) => spare.release(),
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "cannot start a password hashing thread"),
            }
        }
        (started > 0).then_some(Self { jobs, spare })
    }
}

/// Runs verifications off the async workers, a bounded number at a time.
#[derive(Clone)]
pub struct Verifier {
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    dummy_hash: Arc<str>,
    /// `None` when no thread could be started: then tokio's blocking pool does the work.
    threads: Option<Arc<HashingThreads>>,
}

impl Verifier {
    pub fn new(concurrency: usize, queue_timeout: Duration, priority: HashPriority) -> Self {
        Self::keeping_memory(concurrency, queue_timeout, priority, MEMORY_KEPT_WHILE_IDLE)
    }

    fn keeping_memory(
        concurrency: usize,
        queue_timeout: Duration,
        priority: HashPriority,
        keep_memory: Duration,
    ) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            queue_timeout,
            dummy_hash: hash_password("authgate dummy password for unknown users").into(),
            threads: HashingThreads::start(concurrency, priority, keep_memory).map(Arc::new),
        }
    }

    /// Runs `work` on a hashing thread (a panic inside is an internal error, and the thread
    /// survives it).
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, VerifyError> {
        let panicked = || VerifyError::Broken("password verification panicked".into());
        let Some(threads) = &self.threads else {
            return tokio::task::spawn_blocking(|| work(&mut Vec::new()))
                .await
                .map_err(|_| panicked());
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |spare| {
            let mut memory = spare.take();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut memory)));
            // Back before the answer, so the next verification finds it.
            spare.give_back(memory);
            let _ = answer.send(outcome);
        });
        threads
            .jobs
            .send(job)
            .map_err(|_| VerifyError::Broken("password hashing threads are gone".into()))?;
        match answered.await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(panicked()),
        }
    }

    /// Verifies `password` against `hash`, or against a dummy hash of the same cost when the
    /// user is unknown, so both cost the same time.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<(&str, Prehash)>,
    ) -> Result<bool, VerifyError> {
        let known = stored.is_some();
        let (hash, prehash): (Arc<str>, Prehash) = match stored {
            Some((h, p)) => (Arc::from(h), p),
            None => (self.dummy_hash.clone(), Prehash::None),
        };
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| VerifyError::Busy("password verification queue is full".into()))?
            .map_err(|_| VerifyError::Broken("verifier closed".into()))?;
        let password = password.clone();
        let ok = self
            .run(move |memory| {
                let _permit = permit;
                verify_in(&password, &hash, prehash, memory)
            })
            .await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value and scheduling policy (5 is SCHED_IDLE).
    fn thread_priority() -> (i32, u32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // After the command: state is field 3, nice field 19, policy field 41.
        (
            fields[19 - 3].parse().unwrap(),
            fields[41 - 3].parse().unwrap(),
        )
    }

    #[tokio::test]
    async fn verifications_run_below_the_workers_priority_and_survive_panics() {
        let low = Verifier::new(1, Duration::from_secs(5), HashPriority::Low);
        assert_eq!(low.run(|_| thread_priority()).await.unwrap(), (LOW_NICE, 0));
        let ours = thread_priority();
        assert!(ours.0 < LOW_NICE, "the test itself runs at {ours:?}");
        let idle = Verifier::new(1, Duration::from_secs(5), HashPriority::Idle);
        assert_eq!(idle.run(|_| thread_priority()).await.unwrap().1, 5);
        let normal = Verifier::new(1, Duration::from_secs(5), HashPriority::Normal);
        assert_eq!(normal.run(|_| thread_priority()).await.unwrap(), ours);
        let failed = low.run(|_| -> bool { panic!("boom") }).await;
        assert!(matches!(failed, Err(VerifyError::Broken(_))));
        // The one thread is still there.
        assert_eq!(low.run(|_| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn argon2_memory_is_reused_within_a_burst_and_freed_when_idle() {
        // Long enough that a loaded machine does not reach it between two steps of the burst.
        let keep = Duration::from_secs(2);
        let verifier =
            Verifier::keeping_memory(2, Duration::from_secs(5), HashPriority::Normal, keep);
        let spare = || {
            let threads = verifier.threads.as_ref().unwrap();
            let spare = threads.spare.0.lock().unwrap();
            spare.iter().map(Vec::capacity).collect::<Vec<_>>()
        };
        let blocks = 19 * 1024;
        let stored = hash_password("pw");
        assert!(verifier
            .verify(&plain("pw"), Some((&stored, Prehash::None)))
            .await
            .unwrap());
        assert_eq!(spare(), vec![blocks]);
        let address = verifier
            .run(|memory| memory.as_ptr() as usize)
            .await
            .unwrap();
        assert!(!verifier
            .verify(&plain("nope"), Some((&stored, Prehash::None)))
            .await
            .unwrap());
        assert_eq!(
            verifier
                .run(|memory| memory.as_ptr() as usize)
                .await
                .unwrap(),
            address,
            "the same memory again, not a new allocation"
        );
        tokio::time::sleep(keep * 3).await;
        assert!(
            spare().is_empty(),
            "still held after {keep:?} idle: {:?}",
            spare()
        );
        assert!(verifier
            .verify(&plain("pw"), Some((&stored, Prehash::None)))
            .await
            .unwrap());
    }

    #[test]
    fn memory_left_by_a_costlier_hash_gives_the_same_answers() {
        let mut memory = Vec::new();
        let costly = hash_password("pw");
        assert!(verify_in(&plain("pw"), &costly, Prehash::None, &mut memory));
        let cheap = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(64, 1, 1, Some(16)).unwrap(),
        )
        .hash_password(b"other", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(verify_in(
            &plain("other"),
            &cheap,
            Prehash::None,
            &mut memory
        ));
        assert!(!verify_in(&plain("pw"), &cheap, Prehash::None, &mut memory));
        assert!(!verify_in(
            &plain("other"),
            &costly,
            Prehash::None,
            &mut memory
        ));
        assert_eq!(memory.len(), 19 * 1024);
    }

    fn plain(s: &str) -> Password {
        Password::Plain(s.into())
    }

    #[test]
    fn hash_password_is_owasp_argon2id_and_verifies() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking(&plain("correct horse"), &h, Prehash::None));
        assert!(!verify_blocking(&plain("correct horsE"), &h, Prehash::None));
        assert!(check_hash_format(&h).is_ok());
    }

    #[test]
    fn other_argon2_variants_and_params_verify() {
        for alg in [Algorithm::Argon2i, Algorithm::Argon2d, Algorithm::Argon2id] {
            let a = Argon2::new(alg, Version::V0x13, Params::new(64, 1, 2, None).unwrap());
            let h = a
                .hash_password(b"pw", &SaltString::generate(&mut OsRng))
                .unwrap()
                .to_string();
            assert!(verify_blocking(&plain("pw"), &h, Prehash::None), "{h}");
            assert!(!verify_blocking(&plain("px"), &h, Prehash::None), "{h}");
        }
    }

    #[test]
    fn bcrypt_prefixes_verify_and_long_inputs_do_not_truncate() {
        let h = bcrypt::hash("pw", 4).unwrap();
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let h = format!("{prefix}{}", &h[4..]);
            assert!(verify_blocking(&plain("pw"), &h, Prehash::None), "{h}");
            assert!(!verify_blocking(&plain("pX"), &h, Prehash::None));
        }
        let long = "a".repeat(71);
        let h = bcrypt::hash(&long, 4).unwrap(); // 71 bytes and the NUL terminator: the most bcrypt takes
        assert!(verify_blocking(&plain(&long), &h, Prehash::None));
        assert!(!verify_blocking(
            &plain(&format!("{long}extra")),
            &h,
            Prehash::None
        ));
    }

    #[test]
    fn garbage_hashes_never_verify() {
        assert!(!verify_blocking(&plain(""), "", Prehash::None));
        assert!(!verify_blocking(
            &plain("x"),
            "$argon2id$garbage",
            Prehash::None
        ));
        assert!(check_hash_format("plaintext").is_err());
        assert!(check_hash_format("$pbkdf2-sha256$i=1$abc$def").is_err());
    }

    #[test]
    fn rocket_chat_hashes_verify_plain_and_digest_logins() {
        let h = bcrypt::hash(sha256_hex("pw"), 4).unwrap();
        assert!(verify_blocking(&plain("pw"), &h, Prehash::Sha256));
        assert!(verify_blocking(
            &Password::Sha256Digest(sha256_hex("pw")),
            &h,
            Prehash::Sha256
        ));
        assert!(!verify_blocking(&plain("px"), &h, Prehash::Sha256));
        // A digest never verifies against a hash of the plain password.
        let plain_hash = bcrypt::hash("pw", 4).unwrap();
        assert!(!verify_blocking(
            &Password::Sha256Digest(sha256_hex("pw")),
            &plain_hash,
            Prehash::None
        ));
        let digest_as_password = bcrypt::hash(sha256_hex("pw"), 4).unwrap();
        assert!(!verify_blocking(
            &Password::Sha256Digest(sha256_hex("pw")),
            &digest_as_password,
            Prehash::None
        ));
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let v = Verifier::new(1, Duration::from_secs(5), HashPriority::Normal);
        assert!(!v
            .verify(&plain("authgate dummy password for unknown users"), None)
            .await
            .unwrap());
    }
}
