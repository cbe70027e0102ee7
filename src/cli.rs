//! The command line: `serve`, `check-config`, `healthcheck`, `hash-password`, `totp`,
//! `sessions`, `import`. Exit codes: 0 done, 1 runtime failure (and "unhealthy"), 64 bad usage
//! or configuration (EX_USAGE).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, ConfigOverrides, ConfigSource};

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authentication gateway for Rocket.Chat-compatible chat backends"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Validate the configuration and the users file; list every problem.
    CheckConfig(ServeArgs),
    /// Probe the gateway this config describes (Docker HEALTHCHECK): exit 0 when it answers
    /// `/readyz` with 200 on the `[metrics]` listener (or, with that off, when its first public
    /// listener accepts a connection), 1 otherwise.
    Healthcheck(HealthcheckArgs),
    /// Read a password from stdin (prompting without echo on a terminal) and print the
    /// `password_hash` and `password_prehash` lines of a users-file entry (argon2id over its
    /// SHA-256 hex: plain and digest logins both verify).
    HashPassword,
    /// Convert another system's users into a users file (printed on stdout).
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Manage TOTP two-factor enrollment (the store in `totp.secrets_file`).
    Totp {
        #[command(subcommand)]
        command: crate::totp::command::TotpCommand,
    },
    /// List or revoke a user's sessions in the configured Redis ("log out everywhere").
    Sessions {
        #[command(subcommand)]
        command: crate::session::command::SessionsCommand,
    },
    /// List or lift brute-force login blocks (users, login names, client IPs) in Redis.
    Blocks {
        #[command(subcommand)]
        command: crate::regulation::command::BlocksCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportSource {
    /// A Rocket.Chat users export (mongoexport of `users`, JSON lines or an array); ids and
    /// passwords are kept.
    Rocketchat {
        /// The export file.
        file: PathBuf,
    },
}

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
    fn to_overrides(&self) -> ConfigOverrides {
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

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Probe `/healthz` (the process answers) instead of `/readyz` (it can serve requests).
    #[arg(long)]
    pub live: bool,
}

impl ConfigArg {
    fn source(&self) -> Result<ConfigSource, ConfigError> {
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
struct Checked {
    config: Config,
    source_name: String,
    /// How many users the users file holds, when one is configured and present.
    local_users: Option<usize>,
}

/// What `serve` (and `check-config`, and a reload) runs with: the config with its overrides, and
/// AUTHGATE_LOG, which would otherwise silence the logs as quietly as a bad `log.level`.
fn load_serving_config(args: &ServeArgs) -> Result<Checked, ConfigError> {
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
        problems.push(crate::config::ConfigProblem {
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

/// `check-config`: every problem at once, or what was read and what to watch out for.
fn check_config(args: &ServeArgs) -> ExitCode {
    let checked = match load_serving_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = &checked.config;
    for warning in crate::secret_files::warnings(config) {
        eprintln!("warning: {warning}");
    }
    println!("configuration is valid: {}", checked.source_name);
    match (&config.directory.local, checked.local_users) {
        (Some(local), Some(0)) => eprintln!(
            "warning: the users file {} holds no users; nobody can log in through it",
            local.users_file.display()
        ),
        (Some(local), Some(n)) => {
            println!("users file {}: {n} user(s)", local.users_file.display())
        }
        (Some(local), None) => eprintln!(
            "warning: the users file {} does not exist; nobody can log in through it \
             (create it with entries from `authgate hash-password`)",
            local.users_file.display()
        ),
        (None, _) => {}
    }
    if let Some(ldap) = &config.directory.ldap {
        println!("LDAP directory: {}", ldap.url);
    }
    if config.directory.local.is_none() && config.directory.ldap.is_none() {
        eprintln!("warning: no directory is configured; nobody can log in");
    }
    ExitCode::SUCCESS
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Healthcheck(args) => healthcheck(&args),
        Command::HashPassword => hash_password(),
        Command::Import {
            source: ImportSource::Rocketchat { file },
        } => crate::import::run_rocketchat(&file),
        Command::Totp { command } => crate::totp::command::run(command),
        Command::Sessions { command } => crate::session::command::run(command),
        Command::Blocks { command } => crate::regulation::command::run(command),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let (config, config_name) = match load_serving_config(args) {
        Ok(c) => (c.config, c.source_name),
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    crate::logging::init(&config.log);
    for warning in crate::secret_files::warnings(&config) {
        tracing::warn!("{warning}");
    }
    // This thread is worker 0; `server::start` adds a thread per further worker.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authgate: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        let running = match crate::server::start(config).await {
            Ok(r) => r,
            Err(e @ crate::server::StartError::Config(_)) => {
                eprint!("invalid configuration:\n{e}");
                return ExitCode::from(EXIT_USAGE);
            }
            Err(e) => {
                eprintln!("authgate: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        for addr in &running.addrs {
            // Tests and scripts read this line to learn the port when listening on port 0.
            println!("authgate listening on {addr}");
        }
        if let Some(addr) = running.metrics_addr {
            println!("authgate metrics listening on {addr}");
        }
        running.log_started(&config_name);
        wait_for_stop_signal(args, &running).await;
        tracing::info!("stop signal received; readiness off, draining connections");
        running.shutdown().await;
        tracing::info!("authgate stopped");
        ExitCode::SUCCESS
    })
}

/// Runs until SIGTERM or SIGINT; every SIGHUP reloads the configuration meanwhile.
async fn wait_for_stop_signal(args: &ServeArgs, running: &crate::server::RunningGateway) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut users_file = UsersFileWatch::new(running);
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP received; reloading the configuration");
                reload(args, running).await;
                users_file = UsersFileWatch::new(running);
            }
            _ = users_file.changed() => {
                tracing::info!(file = %users_file.path.display(), "the users file changed; reloading the configuration");
                reload(args, running).await;
                users_file = UsersFileWatch::new(running);
            }
        }
    }
}

/// Notices edits of the users file (`directory.local.watch`), so adding a user needs no SIGHUP.
/// It compares contents, not modification times, which miss two writes within one tick.
struct UsersFileWatch {
    path: std::path::PathBuf,
    every: std::time::Duration,
    seen: Option<Vec<u8>>,
}

impl UsersFileWatch {
    fn new(running: &crate::server::RunningGateway) -> Self {
        let gw = running.service().current();
        let (path, every) = match &gw.config.directory.local {
            Some(l) => (l.users_file.clone(), l.watch),
            None => (std::path::PathBuf::new(), std::time::Duration::ZERO),
        };
        let seen = std::fs::read(&path).ok();
        Self { path, every, seen }
    }

    /// Resolves when the file's contents differ from what the running configuration read;
    /// never when watching is off.
    async fn changed(&mut self) {
        if self.every.is_zero() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(self.every).await;
            let now = std::fs::read(&self.path).ok();
            if now != self.seen {
                self.seen = now;
                return;
            }
        }
    }
}

/// Re-reads the config and the files it names. A config with problems changes nothing.
async fn reload(args: &ServeArgs, running: &crate::server::RunningGateway) {
    let config = match load_serving_config(args) {
        Ok(c) => c.config,
        Err(e) => {
            running.service().metrics.reload(false);
            let problems: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
            tracing::error!(source = %e.source_name, problems = %problems.join("; "), "new configuration rejected; the running one stays");
            return;
        }
    };
    match running.reload(config).await {
        Ok(restart) => {
            for key in restart {
                tracing::warn!(
                    key,
                    "changed in the configuration, but only applies after a restart"
                );
            }
            tracing::info!("configuration reloaded");
        }
        Err(why) => {
            tracing::error!(problems = %why.trim(), "new configuration rejected; the running one stays")
        }
    }
}

fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let overrides = args.overrides.to_overrides();
    let config = match args
        .config
        .source()
        .and_then(|s| Config::load_with(&s, &overrides))
    {
        Ok(c) => c,
        Err(e) => {
            // Docker reads any status but 0 and 1 as reserved: a config problem is "unhealthy".
            eprint!("{e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match crate::admin::probe(&config, args.live) {
        Ok(what) => {
            println!("healthy: {what}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("unhealthy: {why}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn hash_password() -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let second = rpassword::prompt_password("Repeat password: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("authgate: the passwords do not match");
                return ExitCode::from(EXIT_USAGE);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("authgate: cannot read the password: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        let mut input = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut input) {
            eprintln!("authgate: cannot read the password from stdin: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        // Only the line ending a shell or `echo` adds is removed; every other character counts.
        let trimmed = input
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&input);
        trimmed.to_string()
    };
    if password.is_empty() {
        eprintln!("authgate: the password is empty; give a non-empty password on stdin");
        return ExitCode::from(EXIT_USAGE);
    }
    println!("{}", crate::password::users_file_entry(&password));
    ExitCode::SUCCESS
}
