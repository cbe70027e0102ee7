//! File modes of the files that hold secrets: the users file (password hashes, TOTP secrets),
//! the TOTP enrollment store and every `*_file` secret (admin token, bind and Redis passwords).
//! Anyone who can write one can add a user, a second factor or swap a credential, so a file
//! writable by its group or by others is refused; a users or TOTP file every local user can
//! read is worth a warning (hashes can be cracked offline, secrets copied). The `*_file`
//! secrets are checked as the config reads them (`config::secret`); this module checks the
//! files of a loaded config.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::secret::{writable_by_others, writable_problem};
use crate::config::{Config, ConfigProblem};

/// A secret-holding file the config names, with the key that names it.
struct SecretFile {
    key: &'static str,
    path: PathBuf,
    mode: u32,
}

/// The secret-holding files that exist, with their permission bits.
fn secret_files(config: &Config) -> Vec<SecretFile> {
    let mut named: Vec<(&'static str, &Path)> = Vec::new();
    if let Some(local) = &config.directory.local {
        named.push(("directory.local.users_file", &local.users_file));
    }
    named.push(("totp.secrets_file", &config.totp.secrets_file));
    named
        .into_iter()
        .filter_map(|(key, path)| {
            // Missing files are the loaders' business (the TOTP store may not exist yet).
            let meta = std::fs::metadata(path).ok()?;
            Some(SecretFile {
                key,
                path: path.to_path_buf(),
                mode: meta.permissions().mode() & 0o777,
            })
        })
        .collect()
}

/// Users and TOTP files writable by their group or by others: the config is refused.
pub fn problems(config: &Config) -> Vec<ConfigProblem> {
    secret_files(config)
        .into_iter()
        .filter(|f| writable_by_others(f.mode))
        .map(|f| writable_problem(f.key, &f.path, f.mode))
        .collect()
}

/// Files every local user can read: a warning, the config still loads.
pub fn warnings(config: &Config) -> Vec<String> {
    secret_files(config)
        .into_iter()
        .filter(|f| f.mode & 0o004 != 0 && !writable_by_others(f.mode))
        .map(|f| {
            format!(
                "`{}`: {} holds secrets and is readable by every user (mode {:03o}); chmod o-r {}",
                f.key,
                f.path.display(),
                f.mode,
                f.path.display()
            )
        })
        .collect()
}
