//! Secrets in the config: read from an inline key, a `*_file` key or an environment variable,
//! and the mode check of the files that hold them. Values are `secrecy::SecretString`, so a
//! `Debug` of the config never shows them; the code that sends one exposes it right there.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use secrecy::{ExposeSecret, SecretString};

use super::problem::{problem, resolve_path, ConfigProblem};

/// Secrets may come from the environment instead of the file.
pub fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A secret from its inline key, its `*_file` key (relative to the config's folder; only the
/// line ending is removed) or an environment variable, which wins. Inline and file together are
/// a problem: one of them would be silently ignored.
pub fn secret(
    key: &str,
    inline: Option<String>,
    file: Option<&String>,
    env: &str,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<String> {
    let mut value = inline.clone().filter(|v| !v.is_empty());
    if let Some(file) = file {
        if inline.is_some() {
            problems.push(problem(
                &format!("{key}_file"),
                format!("both {key} and {key}_file are set"),
                "keep only one of them",
            ));
        }
        let path = resolve_path(base, file);
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                value = Some(s.trim_end_matches(['\n', '\r']).to_string());
                check_secret_file(&format!("{key}_file"), &path, problems);
            }
            Err(e) => problems.push(problem(
                &format!("{key}_file"),
                format!("cannot read {}: {e}", path.display()),
                "point it at a readable file holding the secret",
            )),
        }
    }
    env_secret(env).or(value)
}

/// Anyone who can write a secret-holding file can swap the credential it holds.
pub fn writable_by_others(mode: u32) -> bool {
    mode & 0o022 != 0
}

pub fn writable_problem(key: &str, path: &Path, mode: u32) -> ConfigProblem {
    problem(
        key,
        format!(
            "{} holds secrets and is writable by other users (mode {mode:03o})",
            path.display()
        ),
        format!(
            "chmod go-w {} (600, or 640 for a group authgate runs in)",
            path.display()
        ),
    )
}

/// For a `*_file` secret just read: refused when its group or others may write it.
pub fn check_secret_file(key: &str, path: &Path, problems: &mut Vec<ConfigProblem>) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if writable_by_others(mode) {
            problems.push(writable_problem(key, path, mode));
        }
    }
}
