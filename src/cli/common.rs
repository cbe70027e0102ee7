//! What every subcommand shares: exit codes, the `--config` argument and its overrides, and
//! loading a config with the files it names checked too. The subcommands (`serve`, `totp`,
//! `sessions`, `import`) import this module, never the command-line parser that dispatches to
//! them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use crate::config::{Config, ConfigError, ConfigOverrides, ConfigProblem, ConfigSource};

/// Runtime failure, and "unhealthy" for `healthcheck`.
pub const EXIT_RUNTIME: u8 = 1;
/// Bad usage or configuration (EX_USAGE from sysexits.h).
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file; without it, AUTHGATE_CONFIG, then ./config.toml, then the embedded default.
    #[arg(long, short = 'c', env = "AUTHGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The config file, and the values that override it (what `serve` runs with).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

#[derive(Debug, clap::Args)]
pub struct OverrideArgs {
    /// Listen on ADDR instead of `server.listen`; repeat it (or separate with commas) for several.
    #[arg(
        long,
        value_name = "ADDR",
        env = "AUTHGATE_LISTEN",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// Forward to URL instead of `upstream.url`, e.g. http://chat:3000.
    #[arg(long, value_name = "URL", env = "AUTHGATE_UPSTREAM")]
    pub upstream: Option<String>,
}

impl OverrideArgs {
    pub fn to_overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            listen: self
                .listen
                .iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            upstream_url: self
                .upstream
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from),
        }
    }
}

impl ConfigArg {
    pub fn source(&self) -> Result<ConfigSource, ConfigError> {
        match &self.config {
            Some(p) => ConfigSource::from_file(p),
            None if std::path::Path::new("config.toml").exists() => {
                ConfigSource::from_file(std::path::Path::new("config.toml"))
            }
            None => Ok(ConfigSource::embedded_default()),
        }
    }
}

/// Loads and fully validates a config, including the files it names.
pub fn load_config(arg: &ConfigArg) -> Result<Config, ConfigError> {
    load_checked(arg, &ConfigOverrides::default()).map(|checked| checked.config)
}

/// A valid configuration, with what `check-config` tells the operator about it.
pub struct Checked {
    pub config: Config,
    pub source_name: String,
    /// How many users the users file holds, when one is configured and present.
    pub local_users: Option<usize>,
}

/// What `serve` (and `check-config`, and a reload) runs with: the config with its overrides, and
/// AUTHGATE_LOG, which would otherwise silence the logs as quietly as a bad `log.level`.
pub fn load_serving_config(args: &ServeArgs) -> Result<Checked, ConfigError> {
    if let Some(filter) = std::env::var("AUTHGATE_LOG").ok().filter(|v| !v.is_empty()) {
        let mut problems = Vec::new();
        crate::config::check_log_level("AUTHGATE_LOG", &filter, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError {
                source_name: "the environment".into(),
                problems,
            });
        }
    }
    load_checked(&args.config, &args.overrides.to_overrides())
}

/// The config, then the users file and the TOTP store it names, each problem of the files
/// listed together.
fn load_checked(arg: &ConfigArg, overrides: &ConfigOverrides) -> Result<Checked, ConfigError> {
    let source = arg.source()?;
    let config = Config::load_with(&source, overrides)?;
    let mut problems = Vec::new();
    let mut local_users = None;
    if let Some(local) = &config.directory.local {
        match crate::directory::local::load_users(local) {
            Ok(users) if local.users_file.exists() => local_users = Some(users.len()),
            Ok(_) => {}
            Err(p) => problems.extend(p),
        }
    }
    if let Err(why) = crate::totp::enrollment::read(&config.totp.secrets_file) {
        problems.push(ConfigProblem {
            key: "totp.secrets_file".into(),
            problem: why,
            fix: "repair or remove the file; `authgate totp enroll` rewrites it".into(),
        });
    }
    problems.extend(crate::secret_files::problems(&config));
    if !problems.is_empty() {
        return Err(ConfigError {
            source_name: source.name,
            problems,
        });
    }
    Ok(Checked {
        config,
        source_name: source.name,
        local_users,
    })
}

/// A subcommand's failure: the exit code and the message for stderr.
pub struct Failure(pub u8, pub String);

/// Ends a subcommand: exit 0, or its failure's message on stderr and its exit code.
pub fn exit_with(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("authgate: {msg}");
            ExitCode::from(code)
        }
    }
}

/// One runtime for a whole command: Redis connections live on the runtime that made them.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(EXIT_RUNTIME, e.to_string()))?
        .block_on(f)
}

/// A time in milliseconds since the epoch, as operator listings show it.
pub fn utc(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The user the LDAP directory finds by login name, asked with the service account as a login
/// would, for operator commands that must tell a real user from a typo. `None` without an LDAP
/// directory or when it knows no such login.
pub async fn find_in_ldap(
    config: &Config,
    name: &str,
) -> Result<Option<crate::directory::UserProfile>, Failure> {
    use crate::directory::Directory;
    let Some(ldap) = &config.directory.ldap else {
        return Ok(None);
    };
    let unreachable = |e: String| {
        Failure(
            EXIT_RUNTIME,
            format!("cannot look `{name}` up in the LDAP directory: {e}"),
        )
    };
    let directory =
        crate::directory::ldap::LdapDirectory::new(ldap.clone()).map_err(unreachable)?;
    directory
        .find(name.trim())
        .await
        .map_err(|e| unreachable(e.to_string()))
}
