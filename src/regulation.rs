//! Brute-force regulation (Rocket.Chat's `Block_Multiple_Failed_Logins_*`): a login is refused
//! before any password check while its client IP, its login name or the user it names has too
//! many recent failures.
//!
//! Attempts are reserved, not merely checked: each one is counted in a single atomic store step
//! (a Lua script in Redis, one lock in memory) before anything is verified, and the running total
//! it gets decides whether it may go on. So however many attempts arrive at once, on however many
//! instances, no more than the configured number per window are ever evaluated. A reservation
//! that turns out not to be a failure (a success, a refusal, a dependency fault) is taken back.
//!
//! Per-user counters are kept twice: under the typed login name in its Unicode compatibility
//! caseless form (so `ＡＤＡ`, `Ada` and `ada` share one budget), and under the id of the user the
//! directory resolved, reserved through a [`LoginGate`] after the directory found the user and
//! before it checks the password (so `frank` and `frank@example.org` share one). Both must have
//! room.
//!
//! Operators list and lift blocks with `authgate blocks` (`regulation/command.rs`).

pub mod command;
pub mod gate;

use std::net::IpAddr;

use crate::config::RegulationConfig;
use async_trait::async_trait;

use crate::directory::names::fold;
use crate::session::{DynSessionStore, StoreError};
pub use gate::{BlockedBy, LoginGate, OpenGate, RegulationError};

impl From<StoreError> for RegulationError {
    fn from(e: StoreError) -> Self {
        RegulationError::Store(e.to_string())
    }
}

pub struct Regulation {
    config: RegulationConfig,
    store: DynSessionStore,
}

fn user_key(login: &str) -> String {
    format!("user:{}", fold(login))
}

fn user_id_key(user_id: &str) -> String {
    format!("uid:{user_id}")
}

fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

/// Whether a login name may be looked up at all. Control characters (NUL above all) are
/// refused before any directory is asked: some servers cut a value at NUL, which would let
/// `ada\0anything` log in as `ada` under a counter of its own.
pub fn acceptable_login(login: &str) -> bool {
    !login.chars().any(char::is_control)
}

/// The counters one login attempt holds a place in.
#[derive(Default)]
pub struct Reservation {
    attempt: String,
    /// Keys this attempt is counted under, with whether they are per-user (cleared on success).
    keys: Vec<(String, bool)>,
    /// Keys this attempt took the last place of: if it fails, they are blocked from now on.
    filling: Vec<String>,
}

/// How an attempt ended, for settling its reservation.
pub enum Settlement {
    /// Logged in: the user's counters start over; the IP keeps its count minus this attempt.
    Succeeded,
    /// A wrong password or TOTP code: it stays counted.
    Failed,
    /// Anything else (blocked, second factor still due, a dependency down): not a guess.
    NotCounted,
}

impl Regulation {
    pub fn new(config: RegulationConfig, store: DynSessionStore) -> Self {
        Self { config, store }
    }

    fn ip_counted(&self, ip: IpAddr) -> bool {
        self.config.ip_failures > 0 && !self.config.ip_allowlist.iter().any(|n| n.contains(&ip))
    }

    fn users_counted(&self) -> bool {
        self.config.enabled && self.config.user_failures > 0
    }

    /// Reserves an attempt for the IP (first, as Rocket.Chat checks it first) and the login
    /// name. Refused when either is full; store faults refuse too: an uncounted attempt is never
    /// let through.
    pub async fn reserve(
        &self,
        login: Option<&str>,
        ip: IpAddr,
    ) -> Result<Reservation, RegulationError> {
        let mut reservation = Reservation {
            attempt: format!("{:032x}", rand::random::<u128>()),
            keys: Vec::new(),
            filling: Vec::new(),
        };
        if !self.config.enabled {
            return Ok(reservation);
        }
        if self.ip_counted(ip) {
            let taken = self
                .take(&mut reservation, ip_key(ip), false, self.config.ip_block)
                .await;
            self.admit(
                &mut reservation,
                taken,
                self.config.ip_failures,
                BlockedBy::Ip,
            )
            .await?;
        }
        if let Some(login) = login.filter(|_| self.users_counted()) {
            let taken = self
                .take(
                    &mut reservation,
                    user_key(login),
                    true,
                    self.config.user_block,
                )
                .await;
            self.admit(
                &mut reservation,
                taken,
                self.config.user_failures,
                BlockedBy::User,
            )
            .await?;
        }
        Ok(reservation)
    }

    /// The gate a directory asks with the user it resolved, before checking the password.
    pub fn gate<'a>(&'a self, reservation: &'a mut Reservation) -> impl LoginGate + 'a {
        UserGate {
            regulation: self,
            reservation,
        }
    }

    /// Adds the user the directory resolved to the reservation, once it is known (before the
    /// password is checked). Refused when that user is full: then neither a right password nor
    /// a right code is even looked at.
    pub async fn reserve_user(
        &self,
        reservation: &mut Reservation,
        user_id: &str,
    ) -> Result<(), RegulationError> {
        if !self.users_counted() {
            return Ok(());
        }
        let taken = self
            .take(
                reservation,
                user_id_key(user_id),
                true,
                self.config.user_block,
            )
            .await;
        self.admit(
            reservation,
            taken,
            self.config.user_failures,
            BlockedBy::User,
        )
        .await
    }

    async fn take(
        &self,
        reservation: &mut Reservation,
        key: String,
        per_user: bool,
        window: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let n = self
            .store
            .reserve_attempt(&key, &reservation.attempt, window)
            .await;
        // Counted even when the store's answer was lost: releasing it later is harmless.
        reservation.keys.push((key, per_user));
        n
    }

    /// Lets the attempt go on when its running total is within `limit`; otherwise takes the
    /// whole reservation back (a refused attempt is no guess) and refuses.
    async fn admit(
        &self,
        reservation: &mut Reservation,
        taken: Result<u64, StoreError>,
        limit: u64,
        by: BlockedBy,
    ) -> Result<(), RegulationError> {
        match taken {
            Ok(n) if n <= limit => {
                if n == limit {
                    if let Some((key, _)) = reservation.keys.last() {
                        reservation.filling.push(key.clone());
                    }
                }
                Ok(())
            }
            Ok(_) => {
                // Refused attempts give their place back, so every one of them sees the same
                // total: the block is logged once, by the failure that fills the counter.
                self.release(std::mem::take(reservation)).await?;
                Err(RegulationError::Blocked(by))
            }
            Err(e) => {
                let _ = self.release(std::mem::take(reservation)).await;
                Err(e.into())
            }
        }
    }

    async fn release(&self, reservation: Reservation) -> Result<(), RegulationError> {
        for (key, _) in &reservation.keys {
            self.store
                .release_attempt(key, &reservation.attempt)
                .await?;
        }
        Ok(())
    }

    /// Settles a reservation once the attempt's outcome is known.
    pub async fn settle(
        &self,
        reservation: Reservation,
        settlement: Settlement,
    ) -> Result<(), RegulationError> {
        match settlement {
            Settlement::Failed => {
                for key in &reservation.filling {
                    tracing::warn!(key = key.as_str(), "login blocked after repeated failures");
                }
                Ok(())
            }
            Settlement::NotCounted => self.release(reservation).await,
            Settlement::Succeeded => {
                // A success resets the user's counters, not the IP's: one valid account must
                // not buy an attacker fresh guesses against others.
                for (key, per_user) in &reservation.keys {
                    if *per_user {
                        self.store.clear_failures(key).await?;
                    } else {
                        self.store
                            .release_attempt(key, &reservation.attempt)
                            .await?;
                    }
                }
                Ok(())
            }
        }
    }
}

struct UserGate<'a> {
    regulation: &'a Regulation,
    reservation: &'a mut Reservation,
}

#[async_trait]
impl LoginGate for UserGate<'_> {
    async fn admit(&mut self, user_id: &str) -> Result<(), RegulationError> {
        self.regulation
            .reserve_user(self.reservation, user_id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_make_a_login_unacceptable() {
        assert!(acceptable_login("ada"));
        assert!(acceptable_login("ａｄa"));
        assert!(acceptable_login("frank@example.org"));
        for bad in [
            "ada\0zzz", "ada\u{1}", "ada\n", "a\u{7f}", "a\u{85}b", "\tada",
        ] {
            assert!(!acceptable_login(bad), "{bad:?}");
        }
    }
}
