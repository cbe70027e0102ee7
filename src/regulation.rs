//! Brute-force regulation (Rocket.Chat's `Block_Multiple_Failed_Logins_*`): a login is refused
//! before any password check while its login name or client IP has too many recent failures.

use std::net::IpAddr;

use crate::config::RegulationConfig;
use crate::directory::fold;
use crate::error::{BlockedBy, GatewayError};
use crate::session::DynSessionStore;

pub struct Regulation {
    config: RegulationConfig,
    store: DynSessionStore,
}

fn user_key(login: &str) -> String {
    // The same case folding the directories use, so `Alice` and `ALICE` share one counter.
    format!("user:{}", fold(login))
}

fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

impl Regulation {
    pub fn new(config: RegulationConfig, store: DynSessionStore) -> Self {
        Self { config, store }
    }

    fn ip_counted(&self, ip: IpAddr) -> bool {
        self.config.ip_failures > 0 && !self.config.ip_allowlist.iter().any(|n| n.contains(&ip))
    }

    /// Refuses the attempt when the IP (checked first, as Rocket.Chat does) or the login name
    /// is blocked. Store faults refuse too: an unchecked attempt is never let through.
    pub async fn check(&self, login: Option<&str>, ip: IpAddr) -> Result<(), GatewayError> {
        if !self.config.enabled {
            return Ok(());
        }
        if self.ip_counted(ip)
            && self
                .store
                .recent_failures(&ip_key(ip), self.config.ip_block)
                .await?
                >= self.config.ip_failures
        {
            return Err(GatewayError::LoginBlocked(BlockedBy::Ip));
        }
        if let Some(login) = login.filter(|_| self.config.user_failures > 0) {
            if self
                .store
                .recent_failures(&user_key(login), self.config.user_block)
                .await?
                >= self.config.user_failures
            {
                return Err(GatewayError::LoginBlocked(BlockedBy::User));
            }
        }
        Ok(())
    }

    /// Counts a failed attempt (bad credentials, unusable body, wrong TOTP code).
    pub async fn failed(&self, login: Option<&str>, ip: IpAddr) -> Result<(), GatewayError> {
        if !self.config.enabled {
            return Ok(());
        }
        if self.ip_counted(ip) {
            self.store
                .record_failure(&ip_key(ip), self.config.ip_block)
                .await?;
        }
        if let Some(login) = login.filter(|_| self.config.user_failures > 0) {
            let n = self
                .store
                .record_failure(&user_key(login), self.config.user_block)
                .await?;
            if n == self.config.user_failures {
                tracing::warn!(login = %fold(login), %ip, "login name blocked after repeated failures");
            }
        }
        Ok(())
    }

    /// A success resets the login name's counter (not the IP's: one valid account must not
    /// buy an attacker fresh guesses against others).
    pub async fn succeeded(&self, login: &str) -> Result<(), GatewayError> {
        if self.config.enabled && self.config.user_failures > 0 {
            self.store.clear_failures(&user_key(login)).await?;
        }
        Ok(())
    }
}
