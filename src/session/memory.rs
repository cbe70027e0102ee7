use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::store::{Session, SessionStore, StoreError};
use super::token::{now_unix_ms, TokenHash};

/// Sessions for a single instance. Lost on restart, which fails closed (users log in again).
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<TokenHash, Arc<Session>>,
    by_user: HashMap<String, HashSet<TokenHash>>,
    creates_since_sweep: usize,
    /// Failure (and reserved attempt) times in unix ms, with the attempt's id, per regulation
    /// key, oldest first.
    failures: HashMap<String, VecDeque<(u64, String)>>,
    /// User id -> (last accepted TOTP step, record expiry in unix ms).
    totp_steps: HashMap<String, (u64, u64)>,
}

impl Inner {
    fn remove(&mut self, hash: &TokenHash) -> Option<Arc<Session>> {
        let s = self.sessions.remove(hash)?;
        if let Some(set) = self.by_user.get_mut(&s.user.id) {
            set.remove(hash);
            if set.is_empty() {
                self.by_user.remove(&s.user.id);
            }
        }
        Some(s)
    }

    fn prune_failures(&mut self, key: &str, now: u64, window: Duration) -> u64 {
        let since = now.saturating_sub(window.as_millis() as u64);
        let Some(times) = self.failures.get_mut(key) else {
            return 0;
        };
        while times.front().is_some_and(|(t, _)| *t <= since) {
            times.pop_front();
        }
        let n = times.len() as u64;
        if n == 0 {
            self.failures.remove(key);
        }
        n
    }

    fn sweep(&mut self, now: u64) {
        let dead: Vec<TokenHash> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.is_live(now))
            .map(|(h, _)| h.clone())
            .collect();
        for h in dead {
            self.remove(&h);
        }
        self.totp_steps.retain(|_, (_, expires)| now < *expires);
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, hash: &TokenHash, session: &Session) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.creates_since_sweep += 1;
        if inner.creates_since_sweep >= 1024 {
            inner.creates_since_sweep = 0;
            inner.sweep(now_unix_ms());
        }
        inner
            .by_user
            .entry(session.user.id.clone())
            .or_default()
            .insert(hash.clone());
        inner
            .sessions
            .insert(hash.clone(), Arc::new(session.clone()));
        Ok(())
    }

    async fn replace(&self, hash: &TokenHash, session: &Session) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let live = inner
            .sessions
            .get(hash)
            .is_some_and(|s| s.user.id == session.user.id && s.is_live(now_unix_ms()));
        if live {
            inner
                .sessions
                .insert(hash.clone(), Arc::new(session.clone()));
        }
        Ok(live)
    }

    async fn get(
        &self,
        user_id: &str,
        hash: &TokenHash,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        Ok(self.find(hash).await?.filter(|s| s.user.id == user_id))
    }

    async fn find(&self, hash: &TokenHash) -> Result<Option<Arc<Session>>, StoreError> {
        let mut inner = self.lock();
        match inner.sessions.get(hash) {
            Some(s) if s.is_live(now_unix_ms()) => Ok(Some(s.clone())),
            Some(_) => {
                inner.remove(hash);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn revoke(&self, user_id: &str, hash: &TokenHash) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner
            .sessions
            .get(hash)
            .is_none_or(|s| s.user.id != user_id)
        {
            return Ok(false);
        }
        Ok(inner.remove(hash).is_some_and(|s| s.is_live(now_unix_ms())))
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<(TokenHash, Arc<Session>)>, StoreError> {
        let now = now_unix_ms();
        let inner = self.lock();
        let Some(set) = inner.by_user.get(user_id) else {
            return Ok(Vec::new());
        };
        Ok(set
            .iter()
            .filter_map(|h| {
                inner
                    .sessions
                    .get(h)
                    .filter(|s| s.is_live(now))
                    .map(|s| (h.clone(), s.clone()))
            })
            .collect())
    }

    async fn revoke_user(&self, user_id: &str) -> Result<usize, StoreError> {
        let now = now_unix_ms();
        let mut inner = self.lock();
        let hashes: Vec<TokenHash> = inner
            .by_user
            .get(user_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        Ok(hashes
            .iter()
            .filter_map(|h| inner.remove(h))
            .filter(|s| s.is_live(now))
            .count())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn reserve_attempt(
        &self,
        key: &str,
        attempt: &str,
        window: Duration,
    ) -> Result<u64, StoreError> {
        let now = now_unix_ms();
        let mut inner = self.lock();
        inner
            .failures
            .entry(key.to_string())
            .or_default()
            .push_back((now, attempt.to_string()));
        Ok(inner.prune_failures(key, now, window))
    }

    async fn release_attempt(&self, key: &str, attempt: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(times) = inner.failures.get_mut(key) {
            times.retain(|(_, id)| id != attempt);
            if times.is_empty() {
                inner.failures.remove(key);
            }
        }
        Ok(())
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        self.lock().failures.remove(key);
        Ok(())
    }

    async fn failure_records(&self) -> Result<Vec<(String, Vec<u64>)>, StoreError> {
        Ok(self
            .lock()
            .failures
            .iter()
            .map(|(key, times)| (key.clone(), times.iter().map(|(t, _)| *t).collect()))
            .collect())
    }

    async fn accept_totp_step(
        &self,
        user_id: &str,
        step: u64,
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_unix_ms();
        let mut inner = self.lock();
        let last = inner
            .totp_steps
            .get(user_id)
            .filter(|(_, expires)| now < *expires)
            .map(|(s, _)| *s);
        if last.is_some_and(|last| step <= last) {
            return Ok(false);
        }
        let expires = now + keep_for.as_millis() as u64;
        inner
            .totp_steps
            .insert(user_id.to_string(), (step, expires));
        Ok(true)
    }
}
