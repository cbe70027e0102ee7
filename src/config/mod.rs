//! Configuration: the raw TOML (`raw`), validated into the typed [`Config`] the gateway runs on.
//!
//! Validation never stops at the first problem: operators get every problem, each with the TOML
//! key it concerns and how to fix it.

mod keys;
mod ldap;
mod ops;
mod raw;
mod regulation;
mod session;
mod upstream;

pub use keys::accepted_keys;
pub use ops::{MetricsConfig, TlsConfig};

pub use regulation::RegulationConfig;
pub use session::{
    parse_sentinel_url, NodeAuth, RedisConfig, RedisTopology, SessionConfig, StoreKind,
};
pub use upstream::{UpstreamConfig, UpstreamMode};
mod totp;

pub use totp::{TotpAlgorithm, TotpConfig};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use raw::{OneOrMany, RawConfig};

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
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// Base for `avatarUrl`; when absent the request's Host is used.
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub login_body_limit: usize,
    pub shutdown_grace: Duration,
    /// Between the stop signal and closing the listeners, while `/readyz` already says 503.
    pub shutdown_delay: Duration,
    pub tls: Option<TlsConfig>,
    pub worker_threads: usize,
    pub password_hash_concurrency: usize,
    pub login_queue_timeout: Duration,
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
}

#[derive(Debug, Clone)]
pub struct RoutesConfig {
    /// Exact canonical paths served without a session.
    pub public_exact: Vec<String>,
    /// Path prefixes (written `"/prefix/*"`) served without a session.
    pub public_prefixes: Vec<String>,
    /// Forward requests that carry no credentials at all, without identity (the upstream then
    /// decides). Only sensible when the upstream authenticates by itself (`rocketchat` mode).
    pub anonymous_forward: bool,
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
        let fail = |problems| ConfigError {
            source_name: source.name.clone(),
            problems,
        };
        let mut unknown = Vec::new();
        let de = toml::Deserializer::new(&source.text);
        let raw: RawConfig = match serde_ignored::deserialize(de, |path| {
            unknown.push(toml_key(&path))
        }) {
            Ok(raw) => raw,
            Err(e) => {
                let msg = e.message().to_string();
                let key = locate_toml_error(&source.text, e.span());
                return Err(fail(vec![problem(
                    &key,
                    msg,
                    "correct the value's type or the TOML syntax (durations are strings like \"5s\", sizes are integers)",
                )]));
            }
        };
        let mut problems: Vec<ConfigProblem> = unknown
            .into_iter()
            .map(|k| {
                problem(
                    &k,
                    "unknown key",
                    "remove it or correct its spelling; config.toml lists every key",
                )
            })
            .collect();
        let config = validate(raw, source, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }
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
            Ok(s) => value = Some(s.trim_end_matches(['\n', '\r']).to_string()),
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

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn validate(raw: RawConfig, source: &ConfigSource, problems: &mut Vec<ConfigProblem>) -> Config {
    let base = source.base_dir.as_path();
    let server = validate_server(raw.server.unwrap_or_default(), base, problems);
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
    let routes = validate_routes(raw.routes.unwrap_or_default(), upstream.mode, problems);
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

fn validate_server(
    raw: raw::RawServer,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> ServerConfig {
    let listen_raw = match raw.listen {
        None => vec!["127.0.0.1:8080".to_string()],
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    if listen_raw.is_empty() {
        problems.push(problem(
            "server.listen",
            "no address given",
            "give at least one \"host:port\", e.g. \"127.0.0.1:8080\"",
        ));
    }
    let mut listen = Vec::new();
    for a in &listen_raw {
        match a.parse::<SocketAddr>() {
            Ok(addr) => listen.push(addr),
            Err(_) => problems.push(problem(
                "server.listen",
                format!("`{a}` is not an IP:port address"),
                "write an address such as \"127.0.0.1:8080\", \"0.0.0.0:8080\" or \"[::]:8080\"",
            )),
        }
    }
    let public_url = raw
        .public_url
        .map(|u| u.trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty());
    if let Some(u) = &public_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            problems.push(problem(
                "server.public_url",
                format!("`{u}` is not an http(s) URL"),
                "write the URL clients use, e.g. \"https://chat.example.org\"",
            ));
        }
    }
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.unwrap_or_default().iter().enumerate() {
        let parsed = p
            .parse::<IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => problems.push(problem(
                &format!("server.trusted_proxies[{i}]"),
                format!("`{p}` is not an IP address or CIDR"),
                "write entries like \"10.0.0.0/8\" or \"192.0.2.7\"",
            )),
        }
    }
    let cores = default_parallelism();
    let tls = ops::validate_tls(raw.tls, base, problems);
    ServerConfig {
        listen,
        public_url,
        trusted_proxies,
        tls,
        shutdown_delay: duration_or(
            "server.shutdown_delay",
            raw.shutdown_delay.as_ref(),
            Duration::ZERO,
            Duration::ZERO,
            problems,
        ),
        header_read_timeout: duration_or(
            "server.header_read_timeout",
            raw.header_read_timeout.as_ref(),
            Duration::from_secs(10),
            Duration::from_millis(100),
            problems,
        ),
        idle_timeout: duration_or(
            "server.idle_timeout",
            raw.idle_timeout.as_ref(),
            Duration::from_secs(60),
            Duration::from_millis(100),
            problems,
        ),
        max_header_bytes: count_or(
            "server.max_header_bytes",
            raw.max_header_bytes,
            16 * 1024,
            8192,
            1 << 20,
            problems,
        ),
        max_connections: count_or(
            "server.max_connections",
            raw.max_connections,
            10_000,
            1,
            1_000_000,
            problems,
        ),
        login_body_limit: count_or(
            "server.login_body_limit",
            raw.login_body_limit,
            64 * 1024,
            256,
            1 << 20,
            problems,
        ),
        shutdown_grace: duration_or(
            "server.shutdown_grace",
            raw.shutdown_grace.as_ref(),
            Duration::from_secs(10),
            Duration::ZERO,
            problems,
        ),
        worker_threads: count_or(
            "server.worker_threads",
            raw.worker_threads,
            cores,
            1,
            1024,
            problems,
        ),
        password_hash_concurrency: count_or(
            "server.password_hash_concurrency",
            raw.password_hash_concurrency,
            cores.saturating_sub(1).max(1),
            1,
            1024,
            problems,
        ),
        login_queue_timeout: duration_or(
            "server.login_queue_timeout",
            raw.login_queue_timeout.as_ref(),
            Duration::from_secs(5),
            Duration::from_millis(1),
            problems,
        ),
    }
}

fn validate_directory(
    raw: raw::RawDirectory,
    base: &Path,
    embedded: bool,
    problems: &mut Vec<ConfigProblem>,
) -> DirectoryConfig {
    let local = raw.local.map(|l| match l.users_file {
        Some(f) if !f.trim().is_empty() => LocalDirectoryConfig {
            users_file: resolve_path(base, &f),
            missing_is_empty: embedded,
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

fn validate_routes(
    raw: raw::RawRoutes,
    mode: UpstreamMode,
    problems: &mut Vec<ConfigProblem>,
) -> RoutesConfig {
    let mut public_exact = Vec::new();
    let mut public_prefixes = Vec::new();
    for (i, entry) in raw
        .public
        .unwrap_or_else(|| vec!["/api/info".into()])
        .into_iter()
        .enumerate()
    {
        let key = format!("routes.public[{i}]");
        let (path, is_prefix) = match entry.strip_suffix('*') {
            Some(p) => (p.to_string(), true),
            None => (entry.clone(), false),
        };
        match crate::route::canonical_path(&path) {
            Ok(c) if !path.contains('*') && !path.contains('?') => {
                if crate::route::covers_gateway_path(&c, is_prefix) {
                    problems.push(problem(&key, format!("`{entry}` covers a login, logout or realtime path"), "public routes cannot include the gateway's own endpoints; use a narrower path"));
                } else if is_prefix {
                    if c.ends_with('/') {
                        public_prefixes.push(c);
                    } else {
                        problems.push(problem(&key, format!("`{entry}`: a prefix must end in \"/*\""), "write prefixes like \"/assets/*\""));
                    }
                } else {
                    public_exact.push(c);
                }
            }
            _ => problems.push(problem(&key, format!("`{entry}` is not a plain absolute path"), "write \"/exact/path\" or \"/prefix/*\" (no query, no dot segments, no encoded characters)")),
        }
    }
    let anonymous_forward = match raw.anonymous.as_deref() {
        None => mode == UpstreamMode::RocketChat,
        Some("deny") => false,
        Some("forward") if mode == UpstreamMode::RocketChat => true,
        Some("forward") => {
            problems.push(problem("routes.anonymous", "\"forward\" needs an upstream that authenticates by itself", "use it only with upstream.mode = \"rocketchat\", or list public paths in routes.public"));
            false
        }
        Some(other) => {
            problems.push(problem(
                "routes.anonymous",
                format!("`{other}` is not a policy"),
                "use \"deny\" or \"forward\"",
            ));
            false
        }
    };
    RoutesConfig {
        public_exact,
        public_prefixes,
        anonymous_forward,
    }
}

fn validate_log(raw: raw::RawLog, problems: &mut Vec<ConfigProblem>) -> LogConfig {
    let level = raw.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        problems.push(problem(
            "log.level",
            format!("`{level}` is not a log filter"),
            "use error, warn, info, debug or trace",
        ));
    }
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
