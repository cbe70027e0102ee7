//! `[directory]`: which directories hold the users (the local users file, LDAP) and in which
//! order they are asked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ldap::{validate_ldap, LdapDirectoryConfig};
use super::problem::{duration_or, problem, resolve_path, ConfigProblem};
use super::raw::RawDirectory;

#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    pub local: Option<LocalDirectoryConfig>,
    pub ldap: Option<LdapDirectoryConfig>,
    /// The configured directories, in the order they are asked.
    pub order: Vec<DirectoryKind>,
}

#[derive(Debug, Clone)]
pub struct LocalDirectoryConfig {
    pub users_file: PathBuf,
    /// Only the embedded default may run without a users file (it then has no users).
    pub missing_is_empty: bool,
    /// How often `serve` checks the users file for changes and reloads; zero: SIGHUP only.
    pub watch: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryKind {
    Local,
    Ldap,
}

impl DirectoryKind {
    pub fn name(self) -> &'static str {
        match self {
            DirectoryKind::Local => "local",
            DirectoryKind::Ldap => "ldap",
        }
    }
}

pub(super) fn validate_directory(
    raw: RawDirectory,
    base: &Path,
    embedded: bool,
    problems: &mut Vec<ConfigProblem>,
) -> DirectoryConfig {
    let local = raw.local.map(|l| {
        let watch = duration_or(
            "directory.local.watch",
            l.watch.as_ref(),
            Duration::from_secs(2),
            Duration::ZERO,
            problems,
        );
        if !watch.is_zero() && watch < Duration::from_millis(100) {
            problems.push(problem(
                "directory.local.watch",
                format!("{} is too short", humantime::format_duration(watch)),
                "use at least \"100ms\", or \"0s\" to reload on SIGHUP only",
            ));
        }
        (l.users_file, watch)
    });
    let local = local.map(|(users_file, watch)| match users_file {
        Some(f) if !f.trim().is_empty() => LocalDirectoryConfig {
            users_file: resolve_path(base, &f),
            missing_is_empty: embedded,
            watch,
        },
        _ => {
            problems.push(problem(
                "directory.local.users_file",
                "missing",
                "name the users file, e.g. users_file = \"users.toml\"",
            ));
            LocalDirectoryConfig {
                users_file: PathBuf::new(),
                missing_is_empty: false,
                watch,
            }
        }
    });
    let ldap = raw.ldap.map(|l| validate_ldap(l, base, problems));
    if local.is_none() && ldap.is_none() {
        problems.push(problem(
            "directory",
            "no directory is configured",
            "add a [directory.local] section with users_file, or a [directory.ldap] section",
        ));
    }
    let order = directory_order(raw.order, local.is_some(), ldap.is_some(), problems);
    DirectoryConfig { local, ldap, order }
}

/// `[directory] order`: which configured directories are asked, first to last.
fn directory_order(
    raw: Option<Vec<String>>,
    local: bool,
    ldap: bool,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<DirectoryKind> {
    let configured = |k: DirectoryKind| match k {
        DirectoryKind::Local => local,
        DirectoryKind::Ldap => ldap,
    };
    let Some(names) = raw else {
        return [DirectoryKind::Local, DirectoryKind::Ldap]
            .into_iter()
            .filter(|k| configured(*k))
            .collect();
    };
    let mut order = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let k = format!("directory.order[{i}]");
        let kind = match n.as_str() {
            "local" => DirectoryKind::Local,
            "ldap" => DirectoryKind::Ldap,
            other => {
                problems.push(problem(
                    &k,
                    format!("`{other}` is not a directory"),
                    "use \"local\" and/or \"ldap\"",
                ));
                continue;
            }
        };
        if order.contains(&kind) {
            problems.push(problem(
                &k,
                format!("`{n}` is listed twice"),
                "name each directory once",
            ));
        } else if !configured(kind) {
            problems.push(problem(
                &k,
                format!("`{n}` is listed but [directory.{n}] is not configured"),
                format!("add a [directory.{n}] section or remove \"{n}\" from the order"),
            ));
        } else {
            order.push(kind);
        }
    }
    for kind in [DirectoryKind::Local, DirectoryKind::Ldap] {
        if configured(kind) && !order.contains(&kind) {
            problems.push(problem(
                "directory.order",
                format!("[directory.{}] is configured but not listed", kind.name()),
                format!(
                    "add \"{}\" to the order, or remove its section",
                    kind.name()
                ),
            ));
        }
    }
    order
}
