//! Configuration: the raw TOML (`raw`), validated into the typed [`Config`] the gateway runs on.
//!
//! Validation never stops at the first problem: operators get every problem, each with the TOML
//! key it concerns and how to fix it.

mod keys;
mod ldap;
mod ops;
mod overrides;
mod raw;
mod regulation;
mod routes;
mod server;
mod session;
mod upstream;

pub use keys::accepted_keys;
pub use ops::{check_log_level, MetricsConfig, TlsConfig};
pub use overrides::ConfigOverrides;

pub use regulation::RegulationConfig;
pub use routes::RoutesConfig;
pub use server::ServerConfig;
pub use session::{
    parse_sentinel_url, NodeAuth, RedisConfig, RedisTopology, SessionConfig, StoreKind,
};
pub use upstream::{UpstreamConfig, UpstreamMode};
mod totp;

pub use totp::{TotpAlgorithm, TotpConfig};

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::RawConfig;

pub use ldap::{
    fill as fill_placeholders, DirectoryKind, LdapAttributes, LdapDirectoryConfig, LdapPreset,
    SecretString,
};

/// The embedded default: the checked-in `config.toml`, so `authgate serve` runs without a file.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config.toml");

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub session: SessionConfig,
    pub directory: DirectoryConfig,
    pub routes: RoutesConfig,
    pub regulation: RegulationConfig,
    pub realtime: RealtimeConfig,
    pub log: LogConfig,
    pub totp: TotpConfig,
    pub metrics: MetricsConfig,
}

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

#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// Proxy the realtime API (`/websocket`, SockJS websockets), reading every DDP frame.
    pub enabled: bool,
    /// How often each socket checks that its session still lives (revocation reaches every
    /// socket on every instance within this time).
    pub revocation_check: Duration,
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
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where a config came from: relative paths inside it resolve against `base_dir`.
pub struct ConfigSource {
    pub name: String,
    pub text: String,
    pub base_dir: PathBuf,
    pub embedded: bool,
}

impl ConfigSource {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            problems: vec![problem(
                "(file)",
                format!("cannot read {}: {e}", path.display()),
                "pass an existing, readable file with --config or AUTHGATE_CONFIG",
            )],
        })?;
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(Self {
            name: path.display().to_string(),
            text,
            base_dir,
            embedded: false,
        })
    }

    /// The embedded default, resolving relative paths against the working directory.
    pub fn embedded_default() -> Self {
        Self {
            name: "<embedded default config>".into(),
            text: EMBEDDED_DEFAULT.into(),
            base_dir: PathBuf::from("."),
            embedded: true,
        }
    }
}

pub(crate) fn problem(
    key: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigProblem {
    ConfigProblem {
        key: key.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Secrets may come from the environment instead of the file.
pub(crate) fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        Config::load_with(source, &ConfigOverrides::default())
    }

    /// Loads `source` with `overrides` taking the place of the file's values.
    pub fn load_with(
        source: &ConfigSource,
        overrides: &ConfigOverrides,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            source_name: source.name.clone(),
            problems,
        };
        const TYPE_FIX: &str =
            "correct the value's type (durations are strings like \"5s\", sizes are integers)";
        if let Err(e) = source.text.parse::<toml::Table>() {
            let key = locate_toml_error(&source.text, e.span());
            return Err(fail(vec![problem(
                &key,
                e.message().to_string(),
                "correct the TOML syntax",
            )]));
        }
        // serde stops at the first wrong type: each one is reported, its line blanked out (line
        // numbers stay), and the rest read again, so one run lists every problem.
        let mut text = source.text.clone();
        let mut problems = Vec::new();
        let (mut raw, unknown) = loop {
            let mut unknown = Vec::new();
            let de = toml::Deserializer::new(&text);
            match serde_ignored::deserialize::<_, _, RawConfig>(de, |path| {
                unknown.push(toml_key(&path))
            }) {
                Ok(raw) => break (raw, unknown),
                Err(e) => {
                    let key = locate_toml_error(&text, e.span());
                    problems.push(problem(&key, e.message().to_string(), TYPE_FIX));
                    match e.span() {
                        Some(span) if problems.len() < 100 => blank_lines(&mut text, span),
                        _ => return Err(fail(problems)),
                    }
                }
            }
        };
        problems.extend(unknown.into_iter().map(|k| {
            problem(
                &k,
                "unknown key",
                "remove it or correct its spelling; config.toml lists every key",
            )
        }));
        overrides.apply(&mut raw);
        let config = validate(raw, source, &mut problems);
        overrides.attribute(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }
}

/// Replaces the lines a span touches with spaces, keeping every newline.
fn blank_lines(text: &mut String, span: std::ops::Range<usize>) {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { c } else { ' ' })
        .collect();
    text.replace_range(start..end, &blanked);
}

/// A dotted TOML key (`server.listen`, `routes.public[0]`) from serde_ignored's path.
fn toml_key(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", toml_key(parent)),
        Path::Map { parent, key } => {
            let p = toml_key(parent);
            if p.is_empty() {
                key.to_string()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => toml_key(parent),
    }
}

/// Names the key around a TOML syntax or type error, from its span.
fn locate_toml_error(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return "(file)".into();
    };
    let upto = &text[..span.start.min(text.len())];
    let line_no = upto.matches('\n').count() + 1;
    let mut table = String::new();
    for line in upto.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    match (table.is_empty(), key.is_empty() || key.starts_with('[')) {
        (_, true) if !table.is_empty() => format!("{table} (line {line_no})"),
        (true, false) => format!("{key} (line {line_no})"),
        (false, false) => format!("{table}.{key} (line {line_no})"),
        _ => format!("(line {line_no})"),
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

pub(crate) fn duration_or(
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

pub(crate) fn count_or(
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

/// A secret from its inline key, its `*_file` key (relative to the config's folder; only the
/// line ending is removed) or an environment variable, which wins. Inline and file together are
/// a problem: one of them would be silently ignored.
pub(crate) fn secret(
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
                crate::secret_files::check_secret_file(&format!("{key}_file"), &path, problems);
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

pub(crate) fn resolve_path(base: &Path, value: &str) -> PathBuf {
    let p = PathBuf::from(value);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn validate(raw: RawConfig, source: &ConfigSource, problems: &mut Vec<ConfigProblem>) -> Config {
    let base = source.base_dir.as_path();
    let server = server::validate_server(raw.server.unwrap_or_default(), base, problems);
    let upstream = upstream::validate(raw.upstream.unwrap_or_default(), base, problems);
    let session = session::validate_session(raw.session.unwrap_or_default(), base, problems);
    let directory = validate_directory(
        raw.directory.unwrap_or_default(),
        base,
        source.embedded,
        problems,
    );
    let raw_realtime = raw.realtime.unwrap_or_default();
    let realtime = RealtimeConfig {
        enabled: raw_realtime.enabled.unwrap_or(true),
        revocation_check: duration_or(
            "realtime.revocation_check",
            raw_realtime.revocation_check.as_ref(),
            Duration::from_millis(500),
            Duration::from_millis(10),
            problems,
        ),
    };
    let routes = routes::validate_routes(raw.routes.unwrap_or_default(), upstream.mode, problems);
    let regulation = regulation::validate(raw.regulation.unwrap_or_default(), problems);
    let log = validate_log(raw.log.unwrap_or_default(), problems);
    let totp = totp::validate_totp(raw.totp.unwrap_or_default(), base, problems);
    let metrics = ops::validate_metrics(raw.metrics.unwrap_or_default(), &server.listen, problems);
    Config {
        server,
        upstream,
        session,
        directory,
        routes,
        regulation,
        realtime,
        log,
        totp,
        metrics,
    }
}

fn validate_directory(
    raw: raw::RawDirectory,
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
    let ldap = raw.ldap.map(|l| ldap::validate_ldap(l, base, problems));
    if local.is_none() && ldap.is_none() {
        problems.push(problem(
            "directory",
            "no directory is configured",
            "add a [directory.local] section with users_file, or a [directory.ldap] section",
        ));
    }
    let order = ldap::directory_order(raw.order, local.is_some(), ldap.is_some(), problems);
    DirectoryConfig { local, ldap, order }
}

fn validate_log(raw: raw::RawLog, problems: &mut Vec<ConfigProblem>) -> LogConfig {
    let level = raw.level.unwrap_or_else(|| "info".into());
    ops::check_log_level("log.level", &level, problems);
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
