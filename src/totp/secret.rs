//! Base32 TOTP secrets as operators and apps write them: their canonical form and the check
//! every stored secret passes (users file, LDAP attribute, enrollment store).

use totp_rs::Secret;

/// The canonical form of a base32 secret: upper case, without the spaces, dashes and `=`
/// padding that apps and operators add for readability.
pub fn normalize_secret(secret: &str) -> String {
    secret
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .trim_end_matches('=')
        .to_ascii_uppercase()
}

pub(crate) fn secret_bytes(secret: &str) -> Result<Vec<u8>, String> {
    Secret::Encoded(normalize_secret(secret))
        .to_bytes()
        .map_err(|_| "not valid base32".to_string())
}

/// Secrets must be base32 and at least 128 bits (RFC 4226 section 4).
pub fn secret_problem(secret: &str) -> Result<(), String> {
    let bytes = secret_bytes(secret)?;
    if bytes.len() < 16 {
        return Err(format!(
            "only {} bits; at least 128 are required",
            bytes.len() * 8
        ));
    }
    Ok(())
}
