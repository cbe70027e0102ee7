//! What a config problem is and the checks every section shares (durations, counts, paths).
//!
//! A leaf: it imports nothing of the crate, so every section's validator and every caller
//! outside the config layer can use it without pulling the config's composition along.
//! The one format operators read, "`key`: problem (fix: …)", and the list of such lines are
//! written here and nowhere else.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One thing wrong with a config, tied to its TOML key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {} (fix: {})", self.key, self.problem, self.fix)
    }
}

/// Every problem found in one config, in file order where possible.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration in {} ({} problem(s)):",
            self.source_name,
            self.problems.len()
        )?;
        f.write_str(&problem_list(&self.problems))
    }
}

/// Problems as an indented list, one per line: how `check-config`, startup and a rejected
/// reload show them, so an operator reads the same lines whichever found the problem.
pub fn problem_list<'a>(problems: impl IntoIterator<Item = &'a ConfigProblem>) -> String {
    problems.into_iter().map(|p| format!("  - {p}\n")).collect()
}

impl std::error::Error for ConfigError {}

/// Builds a problem; the argument order reads like its message.
pub fn problem(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

pub fn parse_duration(
    key: &str,
    value: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Duration> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(problem(
                key,
                format!("`{value}` is not a duration ({e})"),
                "write a number with a unit, e.g. \"500ms\", \"5s\", \"10m\", \"90d\"",
            ));
            None
        }
    }
}

pub fn duration_or(
    key: &str,
    value: Option<&String>,
    default: Duration,
    min: Duration,
    problems: &mut Vec<ConfigProblem>,
) -> Duration {
    let Some(v) = value else { return default };
    match parse_duration(key, v, problems) {
        Some(d) if d < min => {
            problems.push(problem(
                key,
                format!("`{v}` is too short"),
                format!("use at least {}", humantime::format_duration(min)),
            ));
            default
        }
        Some(d) => d,
        None => default,
    }
}

pub fn count_or(
    key: &str,
    value: Option<i64>,
    default: usize,
    min: i64,
    max: i64,
    problems: &mut Vec<ConfigProblem>,
) -> usize {
    match value {
        None => default,
        Some(v) if v < min || v > max => {
            problems.push(problem(
                key,
                format!("{v} is out of range"),
                format!("use a whole number from {min} to {max}"),
            ));
            default
        }
        Some(v) => v as usize,
    }
}

/// Relative paths in a config resolve against the config file's folder, not the working
/// directory, so a unit file and a shell find the same files.
pub fn resolve_path(base: &Path, value: &str) -> PathBuf {
    let p = PathBuf::from(value);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::problem::{problem, problem_list, ConfigError};

    #[test]
    fn a_problem_reads_key_problem_and_fix_and_a_list_indents_one_per_line() {
        let problems = vec![
            problem("server.listen", "missing", "add an address"),
            problem("log.format", "`xml` is not a log format", "use \"json\""),
        ];
        assert_eq!(
            problems[0].to_string(),
            "`server.listen`: missing (fix: add an address)"
        );
        assert_eq!(
            problem_list(&problems),
            "  - `server.listen`: missing (fix: add an address)\n  \
             - `log.format`: `xml` is not a log format (fix: use \"json\")\n"
        );
        let error = ConfigError {
            source_name: "a.toml".into(),
            problems,
        };
        assert_eq!(
            error.to_string(),
            format!(
                "invalid configuration in a.toml (2 problem(s)):\n{}",
                problem_list(&error.problems)
            )
        );
    }
}
