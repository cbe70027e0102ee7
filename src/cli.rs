//! The command line: `serve`, `check-config`, `healthcheck`, `hash-password`, `totp`,
//! `sessions`, `import`. Exit codes: 0 done, 1 runtime failure (and "unhealthy"), 64 bad usage
//! or configuration (EX_USAGE).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, ConfigSource};

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
    Serve(ConfigArg),
    /// Validate the configuration and the users file; list every problem.
    CheckConfig(ConfigArg),
    /// Probe the gateway this config describes (Docker HEALTHCHECK): exit 0 when it answers
    /// `/readyz` with 200 on the `[metrics]` listener (or, with that off, when its first public
    /// listener accepts a connection), 1 otherwise.
    Healthcheck(HealthcheckArgs),
    /// Read a password from stdin (prompting without echo on a terminal) and print its argon2id PHC hash.
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

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
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
    let source = arg.source()?;
    let config = Config::load(&source)?;
    if let Some(local) = &config.directory.local {
        if let Err(problems) = crate::directory::local::load_users(local) {
            return Err(ConfigError {
                source_name: source.name,
                problems,
            });
        }
    }
    if let Err(why) = crate::totp::enrollment::read(&config.totp.secrets_file) {
        return Err(ConfigError {
            source_name: source.name,
            problems: vec![crate::config::ConfigProblem {
                key: "totp.secrets_file".into(),
                problem: why,
                fix: "repair or remove the file; `authgate totp enroll` rewrites it".into(),
            }],
        });
    }
    let problems = crate::secret_files::problems(&config);
    if !problems.is_empty() {
        return Err(ConfigError {
            source_name: source.name,
            problems,
        });
    }
    Ok(config)
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(arg) => serve(&arg),
        Command::CheckConfig(arg) => match load_config(&arg) {
            Ok(config) => {
                for warning in crate::secret_files::warnings(&config) {
                    eprintln!("warning: {warning}");
                }
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Healthcheck(args) => healthcheck(&args),
        Command::HashPassword => hash_password(),
        Command::Import {
            source: ImportSource::Rocketchat { file },
        } => crate::import::run_rocketchat(&file),
        Command::Totp { command } => crate::totp::command::run(command),
        Command::Sessions { command } => crate::session::command::run(command),
    }
}

fn serve(arg: &ConfigArg) -> ExitCode {
    let config = match load_config(arg) {
        Ok(c) => c,
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
        tracing::info!(addrs = ?running.addrs, metrics = ?running.metrics_addr, "authgate started");
        wait_for_stop_signal(arg, &running).await;
        tracing::info!("stop signal received; readiness off, draining connections");
        running.shutdown().await;
        tracing::info!("authgate stopped");
        ExitCode::SUCCESS
    })
}

/// Runs until SIGTERM or SIGINT; every SIGHUP reloads the configuration meanwhile.
async fn wait_for_stop_signal(arg: &ConfigArg, running: &crate::server::RunningGateway) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => reload(arg, running).await,
        }
    }
}

/// Re-reads the config and the files it names. A config with problems changes nothing.
async fn reload(arg: &ConfigArg, running: &crate::server::RunningGateway) {
    tracing::info!("SIGHUP received; reloading the configuration");
    let config = match load_config(arg) {
        Ok(c) => c,
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
    let config = match args.config.source().and_then(|s| Config::load(&s)) {
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
    println!("{}", crate::password::hash_password(&password));
    ExitCode::SUCCESS
}
