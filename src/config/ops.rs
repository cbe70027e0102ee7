//! `[metrics]` and `[server.tls]`: the management listener and TLS on the public listeners.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::problem::{duration_or, problem, resolve_path, ConfigProblem};
use crate::tls::certs::load_certified_key;

#[derive(Debug, Default, Deserialize)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub watch: Option<String>,
}

/// The management listener: `/metrics`, `/healthz`, `/readyz`. Off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the two files are checked for changes; zero: only SIGHUP reloads them.
    pub watch: Duration,
}

pub(super) fn validate_metrics(
    raw: RawMetrics,
    public: &[SocketAddr],
    problems: &mut Vec<ConfigProblem>,
) -> MetricsConfig {
    let Some(text) = raw.listen.filter(|t| !t.trim().is_empty()) else {
        return MetricsConfig::default();
    };
    let Ok(addr) = text.trim().parse::<SocketAddr>() else {
        problems.push(problem(
            "metrics.listen",
            format!("`{text}` is not an IP:port address"),
            "write a management address such as \"127.0.0.1:9090\"",
        ));
        return MetricsConfig::default();
    };
    // Metrics and health must never be reachable through the public listener (SECURITY 1.18).
    let clashes = addr.port() != 0
        && public.iter().any(|p| {
            p.port() == addr.port()
                && (p.ip() == addr.ip() || p.ip().is_unspecified() || addr.ip().is_unspecified())
        });
    if clashes {
        problems.push(problem(
            "metrics.listen",
            format!("`{addr}` overlaps a `server.listen` address"),
            "give the management listener its own port, e.g. \"127.0.0.1:9090\"",
        ));
    }
    MetricsConfig { listen: Some(addr) }
}

pub(super) fn validate_tls(
    raw: Option<RawTls>,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<TlsConfig> {
    let raw = raw?;
    let watch = duration_or(
        "server.tls.watch",
        raw.watch.as_ref(),
        Duration::from_secs(60),
        Duration::ZERO,
        problems,
    );
    if !watch.is_zero() && watch < Duration::from_millis(100) {
        problems.push(problem(
            "server.tls.watch",
            format!("{watch:?} is too short"),
            "use \"0s\" (off) or at least \"100ms\"; \"60s\" is plenty for renewals",
        ));
    }
    let mut path_of = |key: &str, value: Option<String>, what: &str| match value {
        Some(v) if !v.trim().is_empty() => Some(resolve_path(base, v.trim())),
        _ => {
            problems.push(problem(
                key,
                "missing",
                format!("name the PEM {what} file, or remove [server.tls] to serve plain HTTP"),
            ));
            None
        }
    };
    let cert = path_of("server.tls.cert", raw.cert, "certificate chain");
    let key = path_of("server.tls.key", raw.key, "private key");
    let (cert, key) = (cert?, key?);
    if let Err(e) = load_certified_key(&cert, &key) {
        problems.push(problem(e.key(), e.to_string(), e.fix()));
    }
    Some(TlsConfig { cert, key, watch })
}

/// The level names `log.level` and AUTHGATE_LOG accept, alone or after `target=`.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `log.level` value: a level name, or comma-separated tracing filter directives such as
/// "info,authgate::access=warn". tracing's own parser reads a bare unknown word ("warning",
/// "loud") as a target name enabling only that target, which silences every real log line, so a
/// bare word must be a level name here.
pub fn check_log_level(key: &str, level: &str, problems: &mut Vec<ConfigProblem>) {
    let fix = "use error, warn, info, debug, trace or off, or filter directives such as \
               \"info,authgate::access=warn\"";
    let directives: Vec<&str> = level.split(',').map(str::trim).collect();
    if directives.iter().all(|d| d.is_empty()) {
        problems.push(problem(key, "empty", fix));
        return;
    }
    for directive in directives.iter().filter(|d| !d.is_empty()) {
        let bare_word = !directive.contains(['=', '[']);
        if bare_word && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            let hint = match directive.to_ascii_lowercase().as_str() {
                "warning" => " (did you mean \"warn\"?)",
                "err" | "fatal" | "critical" => " (did you mean \"error\"?)",
                "verbose" | "all" => " (did you mean \"debug\" or \"trace\"?)",
                _ => "",
            };
            problems.push(problem(
                key,
                format!("`{directive}` is not a log level{hint}"),
                fix,
            ));
            return;
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        problems.push(problem(
            key,
            format!("`{level}` is not a log filter ({e})"),
            fix,
        ));
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

pub(super) fn validate_log(raw: RawLog, problems: &mut Vec<ConfigProblem>) -> LogConfig {
    let level = raw.level.unwrap_or_else(|| "info".into());
    check_log_level("log.level", &level, problems);
    let format = match raw.format.as_deref().unwrap_or("pretty") {
        "pretty" => LogFormat::Pretty,
        "json" => LogFormat::Json,
        other => {
            problems.push(problem(
                "log.format",
                format!("`{other}` is not a log format"),
                "use \"pretty\" or \"json\"",
            ));
            LogFormat::Pretty
        }
    };
    LogConfig { level, format }
}
