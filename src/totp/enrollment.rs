//! The enrollment store (`totp.secrets_file`): TOTP secrets written by `authgate totp enroll`,
//! keyed by the case-folded username (the same folding logins use), because the CLI can name a
//! user of any directory by username while ids of LDAP users are only known after a login.
//!
//! ```json
//! {"users": {"alice": {"secret": "BASE32...", "enrolled_at": "2025-01-31T12:00:00Z"}}}
//! ```
//! The CLI replaces the file atomically (temp file + rename, mode 0600) under a lock file;
//! running gateways notice the new file on their next lookup and re-read it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::directory::fold;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentFile {
    #[serde(default)]
    pub users: BTreeMap<String, Enrollment>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    pub secret: String,
    pub enrolled_at: String,
}

impl fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrollment")
            .field("secret", &"<redacted>")
            .field("enrolled_at", &self.enrolled_at)
            .finish()
    }
}

/// Reads and checks the store; a missing file is an empty store (nobody enrolled yet).
pub fn read(path: &Path) -> Result<EnrollmentFile, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(EnrollmentFile::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: EnrollmentFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a valid enrollment store: {e}", path.display()))?;
    let mut problems = Vec::new();
    for (name, e) in &file.users {
        if *name != fold(name) || name.is_empty() {
            problems.push(format!("user `{name}` is not a case-folded username"));
        }
        if let Err(why) = super::secret::secret_problem(&e.secret) {
            problems.push(format!("the secret of `{name}` is unusable: {why}"));
        }
    }
    if problems.is_empty() {
        Ok(file)
    } else {
        Err(format!("{}: {}", path.display(), problems.join("; ")))
    }
}

/// Replaces the store atomically: readers see the old file or the new one, never a mix.
pub fn write(path: &Path, file: &EnrollmentFile) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let dir = parent_dir(path);
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let json = serde_json::to_string_pretty(file).map_err(|e| e.to_string())?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(json.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| fail("write", e))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Serializes read-modify-write cycles of concurrent CLI runs; removed on drop.
pub struct StoreLock {
    path: PathBuf,
}

impl StoreLock {
    pub fn acquire(store: &Path, wait: Duration) -> Result<StoreLock, String> {
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let deadline = Instant::now() + wait;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(StoreLock { path }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(format!(
                        "{} exists: another `authgate totp` command is running, or one was \
                         interrupted (then delete the lock file)",
                        path.display()
                    ))
                }
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What identifies one version of the file; the CLI's rename always gives a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn stamp(path: &Path) -> Result<Option<Stamp>, String> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot stat {}: {e}", path.display())),
    }
}

#[derive(Default)]
struct Cached {
    /// `None` with `loaded` set: the file did not exist.
    stamp: Option<Stamp>,
    loaded: bool,
    secrets: Arc<BTreeMap<String, String>>,
}

/// The gateway's view of the store: one `stat` per lookup, a re-read only when the file changed,
/// so enrollments take effect on running instances without a restart.
pub struct EnrollmentStore {
    path: PathBuf,
    cached: Mutex<Cached>,
}

impl EnrollmentStore {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new(Cached::default()),
        }
    }

    /// The enrolled secret of a case-folded username. An unreadable or invalid store is an
    /// error (the caller fails closed), never "not enrolled".
    pub fn secret_for(&self, folded_username: &str) -> Result<Option<String>, String> {
        Ok(self.current()?.get(folded_username).cloned())
    }

    fn current(&self) -> Result<Arc<BTreeMap<String, String>>, String> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        // Stamped before reading: a change during the read only causes one more re-read.
        let now = stamp(&self.path)?;
        if cached.loaded && cached.stamp == now {
            return Ok(cached.secrets.clone());
        }
        let file = read(&self.path)?;
        let secrets: BTreeMap<String, String> = file
            .users
            .into_iter()
            .map(|(name, e)| (name, super::normalize_secret(&e.secret)))
            .collect();
        if cached.loaded {
            tracing::info!(file = %self.path.display(), users = secrets.len(), "TOTP enrollment store reloaded");
        }
        *cached = Cached {
            stamp: now,
            loaded: true,
            secrets: Arc::new(secrets),
        };
        Ok(cached.secrets.clone())
    }

    /// Loads the store now, reporting any problem.
    pub fn load(&self) -> Result<(), String> {
        self.current().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    fn with(users: &[(&str, &str)]) -> EnrollmentFile {
        EnrollmentFile {
            users: users
                .iter()
                .map(|(n, s)| {
                    (
                        n.to_string(),
                        Enrollment {
                            secret: s.to_string(),
                            enrolled_at: "2025-01-01T00:00:00Z".into(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn written_store_is_private_and_reread_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("totp-secrets.json");
        let store = EnrollmentStore::new(path.clone());
        assert_eq!(store.secret_for("alice").unwrap(), None);
        write(&path, &with(&[("alice", SECRET)])).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(store.secret_for("alice").unwrap().as_deref(), Some(SECRET));
        write(&path, &with(&[])).unwrap();
        assert_eq!(store.secret_for("alice").unwrap(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn invalid_store_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let store = EnrollmentStore::new(path.clone());
        std::fs::write(&path, "{not json").unwrap();
        assert!(store.secret_for("alice").is_err());
        std::fs::write(
            &path,
            r#"{"users":{"alice":{"secret":"AAAA","enrolled_at":"x"}}}"#,
        )
        .unwrap();
        assert!(store.secret_for("alice").unwrap_err().contains("128"));
        std::fs::write(
            &path,
            format!(r#"{{"users":{{"Alice":{{"secret":"{SECRET}","enrolled_at":"x"}}}}}}"#),
        )
        .unwrap();
        assert!(store
            .secret_for("alice")
            .unwrap_err()
            .contains("case-folded"));
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let held = StoreLock::acquire(&path, Duration::ZERO).unwrap();
        assert!(StoreLock::acquire(&path, Duration::from_millis(100)).is_err());
        drop(held);
        assert!(StoreLock::acquire(&path, Duration::ZERO).is_ok());
    }
}
