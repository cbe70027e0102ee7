//! TOTP second factor (RFC 6238) with totp-rs.

use totp_rs::{Algorithm, Secret, TOTP};

/// Secrets must be base32 and at least 128 bits (RFC 4226 section 4).
pub fn secret_problem(secret: &str) -> Result<(), String> {
    let bytes = Secret::Encoded(secret.to_string())
        .to_bytes()
        .map_err(|_| "not valid base32".to_string())?;
    if bytes.len() < 16 {
        return Err(format!(
            "only {} bits; at least 128 are required",
            bytes.len() * 8
        ));
    }
    Ok(())
}

/// A code is exactly `digits` ASCII digits; anything else is invalid before any comparison.
pub fn well_formed(code: &str, digits: usize) -> bool {
    code.len() == digits && code.bytes().all(|b| b.is_ascii_digit())
}

/// Checks `code` against the secret with one step of skew; returns the matching time step.
pub fn verify(secret: &str, code: &str, now_unix: u64) -> Option<u64> {
    const DIGITS: usize = 6;
    const STEP: u64 = 30;
    if !well_formed(code, DIGITS) {
        return None;
    }
    let bytes = Secret::Encoded(secret.to_string()).to_bytes().ok()?;
    let totp = TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 0, STEP, bytes, None, String::new());
    let current = now_unix / STEP;
    let mut matched = None;
    // Every candidate is compared (constant-time inside totp-rs), whichever matches.
    for step in [current.saturating_sub(1), current, current + 1] {
        let candidate = totp.generate(step * STEP);
        if constant_time_eq(candidate.as_bytes(), code.as_bytes()) {
            matched = Some(step);
        }
    }
    matched
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
