//! Configuration: the raw TOML (`raw`), validated into the typed [`Config`] the gateway runs on.
//!
//! Validation never stops at the first problem: operators get every problem, each with the TOML
//! key it concerns and how to fix it. This module only declares the sections, re-exports their
//! types and composes them; the shared checks live in the leaf `problem`, secrets in `secret`,
//! reading the TOML in `source`.

mod directory;
mod keys;
mod ldap;
mod ops;
mod overrides;
pub mod problem;
mod raw;
mod regulation;
mod routes;
pub(crate) mod secret;
mod server;
mod session;
mod source;
mod totp;
mod upstream;

pub use directory::{DirectoryConfig, DirectoryKind, LocalDirectoryConfig};
pub use keys::accepted_keys;
pub use ldap::{fill as fill_placeholders, LdapAttributes, LdapDirectoryConfig, LdapPreset};
pub use ops::{check_log_level, LogConfig, LogFormat, MetricsConfig, TlsConfig};
pub use overrides::ConfigOverrides;
pub use problem::{parse_duration, problem_list, ConfigError, ConfigProblem};
pub use regulation::RegulationConfig;
pub use routes::RoutesConfig;
pub use secret::{ExposeSecret, SecretString};
pub use server::ServerConfig;
pub use session::{
    parse_sentinel_url, NodeAuth, RedisConfig, RedisTopology, SessionConfig, StoreKind,
};
pub use source::{ConfigSource, EMBEDDED_DEFAULT};
pub use totp::{TotpAlgorithm, TotpConfig};
pub use upstream::{UpstreamConfig, UpstreamMode};

use std::time::Duration;

use problem::duration_or;
use raw::RawConfig;

impl Config {
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        Config::load_with(source, &ConfigOverrides::default())
    }

    /// Loads `source` with `overrides` taking the place of the file's values.
    pub fn load_with(
        source: &ConfigSource,
        overrides: &ConfigOverrides,
    ) -> Result<Config, ConfigError> {
        let (mut raw, mut problems) = source::read_raw(source)?;
        overrides.apply(&mut raw);
        let config = validate(raw, source, &mut problems);
        overrides.attribute(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                source_name: source.name.clone(),
                problems,
            })
        }
    }
}

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
pub struct RealtimeConfig {
    /// Proxy the realtime API (`/websocket`, SockJS websockets), reading every DDP frame.
    pub enabled: bool,
    /// How often each socket checks that its session still lives (revocation reaches every
    /// socket on every instance within this time).
    pub revocation_check: Duration,
}

fn validate(raw: RawConfig, source: &ConfigSource, problems: &mut Vec<ConfigProblem>) -> Config {
    let base = source.base_dir.as_path();
    let server = server::validate_server(raw.server.unwrap_or_default(), base, problems);
    let upstream = upstream::validate(raw.upstream.unwrap_or_default(), base, problems);
    let session = session::validate_session(raw.session.unwrap_or_default(), base, problems);
    let directory = directory::validate_directory(
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
    let log = ops::validate_log(raw.log.unwrap_or_default(), problems);
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
