//! TOTP second factor (RFC 6238) with totp-rs: which secret applies to a user, whether a code
//! is right, and one-time use of codes across every instance.
//!
//! Order of the login decision, as Rocket.Chat answers it (docs/totp.md): the password has
//! already been checked; then no code is `totp-required`, and a wrong, malformed or reused code
//! is `totp-invalid`.

pub mod command;
pub mod enrollment;
mod secret;

use std::time::{SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use totp_rs::TOTP;

use crate::config::TotpConfig;
use crate::directory::{fold, Authenticated};
use crate::session::SessionStore;

use enrollment::EnrollmentStore;
use secret::secret_bytes;
pub use secret::{normalize_secret, secret_problem};

/// A code is exactly `digits` ASCII digits; anything else is invalid before any comparison.
pub fn well_formed(code: &str, digits: usize) -> bool {
    code.len() == digits && code.bytes().all(|b| b.is_ascii_digit())
}

fn generator(config: &TotpConfig, secret: Vec<u8>, account: &str) -> TOTP {
    TOTP::new_unchecked(
        config.algorithm.to_totp_rs(),
        config.digits,
        config.skew,
        config.period,
        secret,
        Some(config.issuer.clone()),
        account.to_string(),
    )
}

/// The `otpauth://` URI an authenticator app enrolls from.
pub fn otpauth_uri(config: &TotpConfig, secret: &str, account: &str) -> Result<String, String> {
    Ok(generator(config, secret_bytes(secret)?, account).get_url())
}

/// The time step within `skew` of `now_unix` whose code is `code`, if any. Every candidate is
/// compared, in constant time, so the timing does not tell which step (or whether one) matched.
pub fn matching_step(config: &TotpConfig, secret: &[u8], code: &str, now_unix: u64) -> Option<u64> {
    if !well_formed(code, config.digits) {
        return None;
    }
    let totp = generator(config, secret.to_vec(), "");
    let current = now_unix / config.period;
    let skew = u64::from(config.skew);
    let mut matched = None;
    for step in current.saturating_sub(skew)..=current + skew {
        let candidate = totp.generate(step * config.period);
        let equal = candidate.len() == code.len()
            && bool::from(candidate.as_bytes().ct_eq(code.as_bytes()));
        // The highest matching step is recorded, so a code can never be used for two steps.
        if equal {
            matched = Some(step);
        }
    }
    matched
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where a user's secret came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// The users file or an LDAP attribute.
    Directory,
    Enrollment,
}

/// Why a second factor did not pass.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    /// The user has a second factor and sent no code.
    #[error("totp required")]
    Required,
    /// Every refused code, whatever the reason (failed-login counting keys on it).
    #[error("totp invalid")]
    Invalid,
    /// The enrollment store (`totp.secrets_file`) cannot be read: fail closed.
    #[error("{0}")]
    Enrollments(String),
    /// The used time steps cannot be recorded (session store): fail closed.
    #[error("{0}")]
    Steps(String),
}

/// The second factor as the gateway applies it.
pub struct SecondFactor {
    config: TotpConfig,
    enrollments: EnrollmentStore,
}

impl SecondFactor {
    /// Reads the enrollment store once, so a broken one stops the start instead of every login.
    pub fn new(config: &TotpConfig) -> Result<Self, String> {
        let enrollments = EnrollmentStore::new(config.secrets_file.clone());
        enrollments.load()?;
        Ok(Self {
            config: config.clone(),
            enrollments,
        })
    }

    /// First found wins: the directory's secret (users file, LDAP attribute), then the
    /// enrollment store, looked up by the case-folded username.
    pub fn secret_for(
        &self,
        user: &Authenticated,
    ) -> Result<Option<(String, SecretSource)>, TotpError> {
        if let Some(s) = &user.totp_secret {
            return Ok(Some((s.clone(), SecretSource::Directory)));
        }
        self.enrollments
            .secret_for(&fold(&user.profile.username))
            .map(|s| s.map(|s| (s, SecretSource::Enrollment)))
            .map_err(TotpError::Enrollments)
    }

    /// Decides the second factor for a user whose password was right. `Ok(true)`: a code was
    /// required and accepted (and its step is now used up on every instance); `Ok(false)`: the
    /// user has no second factor. Every refused code leaves here as `TotpInvalid`, which is
    /// what failed-login counting keys on.
    pub async fn check(
        &self,
        user: &Authenticated,
        code: Option<&str>,
        store: &dyn SessionStore,
    ) -> Result<bool, TotpError> {
        let Some((secret, source)) = self.secret_for(user)? else {
            return Ok(false);
        };
        let Some(code) = code else {
            return Err(TotpError::Required);
        };
        let refuse = |why: &str| {
            tracing::info!(user = %user.profile.username, reason = why, "totp code refused");
            TotpError::Invalid
        };
        let secret = match secret_bytes(&secret) {
            Ok(b) => b,
            Err(e) => {
                // Fail closed: the user has a second factor, but no code can match it.
                let source = match source {
                    SecretSource::Directory => "directory",
                    SecretSource::Enrollment => "enrollment_store",
                };
                tracing::error!(user = %user.profile.username, source, error = %e, "unusable TOTP secret");
                return Err(refuse("unusable secret"));
            }
        };
        if !well_formed(code, self.config.digits) {
            return Err(refuse("malformed"));
        }
        let step = matching_step(&self.config, &secret, code, now_unix())
            .ok_or_else(|| refuse("wrong code"))?;
        let fresh = store
            .accept_totp_step(&user.profile.id, step, self.config.replay_window())
            .await
            .map_err(|e| TotpError::Steps(e.to_string()))?;
        if !fresh {
            return Err(refuse("time step already used"));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    fn code(config: &TotpConfig, step: u64) -> String {
        generator(config, secret_bytes(SECRET).unwrap(), "").generate(step * config.period)
    }

    #[test]
    fn secrets_are_normalized_and_checked() {
        assert_eq!(
            normalize_secret("jbsw y3dp-ehpk 3pxp=="),
            "JBSWY3DPEHPK3PXP"
        );
        assert!(secret_problem(SECRET).is_ok());
        assert!(secret_problem(&SECRET.to_lowercase()).is_ok());
        assert!(secret_problem("JBSWY3DPEHPK3PXP").is_err()); // 80 bits
        assert!(secret_problem("not base32 at all!").is_err());
    }

    #[test]
    fn codes_match_within_skew_only() {
        let config = TotpConfig::default();
        let secret = secret_bytes(SECRET).unwrap();
        let now = 1_700_000_015;
        let step = now / 30;
        for s in [step - 1, step, step + 1] {
            assert_eq!(
                matching_step(&config, &secret, &code(&config, s), now),
                Some(s)
            );
        }
        for s in [step - 2, step + 2] {
            assert_eq!(
                matching_step(&config, &secret, &code(&config, s), now),
                None
            );
        }
        let zero_skew = TotpConfig {
            skew: 0,
            ..TotpConfig::default()
        };
        assert_eq!(
            matching_step(&zero_skew, &secret, &code(&config, step - 1), now),
            None
        );
    }

    #[test]
    fn malformed_codes_never_match() {
        let config = TotpConfig::default();
        let secret = secret_bytes(SECRET).unwrap();
        let now = 1_700_000_015;
        let good = code(&config, now / 30);
        for bad in [
            format!(" {good}"),
            format!("{good} "),
            good[..5].to_string(),
            format!("{good}0"),
            "abcdef".to_string(),
            "１２３４５６".to_string(),
        ] {
            assert_eq!(matching_step(&config, &secret, &bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn otpauth_uri_names_issuer_and_account() {
        let config = TotpConfig::default();
        let uri = otpauth_uri(&config, SECRET, "alice").unwrap();
        assert_eq!(
            uri,
            format!("otpauth://totp/authgate:alice?secret={SECRET}&issuer=authgate")
        );
    }
}
