//! `[totp]`: the parameters every TOTP code is checked with, and where the CLI keeps enrollments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::problem::{count_or, parse_duration, problem, resolve_path, ConfigProblem};
use super::raw::RawTotp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl TotpAlgorithm {
    pub fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            TotpAlgorithm::Sha1 => totp_rs::Algorithm::SHA1,
            TotpAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
            TotpAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TotpConfig {
    /// Shown by authenticator apps next to the account; part of the `otpauth://` label.
    pub issuer: String,
    pub digits: usize,
    /// Length of one time step, in whole seconds.
    pub period: u64,
    pub algorithm: TotpAlgorithm,
    /// Steps accepted on either side of the current one, for clock drift and typing time.
    pub skew: u8,
    /// The enrollment store written by `authgate totp enroll`.
    pub secrets_file: PathBuf,
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            issuer: "authgate".into(),
            digits: 6,
            period: 30,
            algorithm: TotpAlgorithm::Sha1,
            skew: 1,
            secrets_file: PathBuf::from("totp-secrets.json"),
        }
    }
}

const MIN_PERIOD: u64 = 15;
const MAX_PERIOD: u64 = 300;

pub(super) fn validate_totp(
    raw: RawTotp,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> TotpConfig {
    let defaults = TotpConfig::default();
    let issuer = raw.issuer.map(|s| s.trim().to_string());
    let issuer = match issuer {
        None => defaults.issuer,
        Some(i) if i.is_empty() || i.contains(':') || i.chars().any(char::is_control) => {
            problems.push(problem(
                "totp.issuer",
                format!(
                    "`{i}` cannot be an issuer (it is empty or holds ':' or a control character)"
                ),
                "use a plain name such as \"Example Chat\"",
            ));
            defaults.issuer
        }
        Some(i) => i,
    };
    let digits = count_or("totp.digits", raw.digits, defaults.digits, 6, 8, problems);
    let period = match raw.period {
        None => defaults.period,
        Some(text) => match parse_duration("totp.period", &text, problems) {
            None => defaults.period,
            Some(d)
                if d.subsec_nanos() != 0 || !(MIN_PERIOD..=MAX_PERIOD).contains(&d.as_secs()) =>
            {
                problems.push(problem(
                    "totp.period",
                    format!("`{text}` is not a whole number of seconds from {MIN_PERIOD}s to {MAX_PERIOD}s"),
                    "use \"30s\", which every authenticator app supports",
                ));
                defaults.period
            }
            Some(d) => d.as_secs(),
        },
    };
    let algorithm = match raw
        .algorithm
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("SHA1") => TotpAlgorithm::Sha1,
        Some("SHA256") => TotpAlgorithm::Sha256,
        Some("SHA512") => TotpAlgorithm::Sha512,
        Some(other) => {
            problems.push(problem(
                "totp.algorithm",
                format!("`{other}` is not a TOTP algorithm"),
                "use \"SHA1\" (what most authenticator apps support), \"SHA256\" or \"SHA512\"",
            ));
            defaults.algorithm
        }
    };
    let skew = count_or("totp.skew", raw.skew, defaults.skew.into(), 0, 2, problems) as u8;
    let secrets_file = match raw.secrets_file {
        None => resolve_path(base, &defaults.secrets_file.to_string_lossy()),
        Some(f) if f.trim().is_empty() => {
            problems.push(problem(
                "totp.secrets_file",
                "empty",
                "name the enrollment store, e.g. secrets_file = \"totp-secrets.json\"",
            ));
            defaults.secrets_file
        }
        Some(f) => resolve_path(base, f.trim()),
    };
    TotpConfig {
        issuer,
        digits,
        period,
        algorithm,
        skew,
        secrets_file,
    }
}

impl TotpConfig {
    /// How long the last accepted step must be remembered. A step stays acceptable until `skew`
    /// steps after it have passed, and the recorded step can be up to `skew` steps ahead of the
    /// clock, so `(2 * skew + 2)` periods cover it; the extra hour absorbs instances whose clocks
    /// disagree.
    pub fn replay_window(&self) -> Duration {
        Duration::from_secs((2 * u64::from(self.skew) + 2) * self.period + 3600)
    }
}
