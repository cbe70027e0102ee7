//! The command line: `serve`, `check-config`, `healthcheck`, `hash-password`, `totp`,
//! `sessions`, `blocks`, `import`. Exit codes: 0 done, 1 runtime failure (and "unhealthy"), 64 bad usage
//! or configuration (EX_USAGE).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

pub mod common;
mod serve;

use common::load_serving_config;
pub use common::{load_config, ConfigArg, OverrideArgs, ServeArgs, EXIT_RUNTIME, EXIT_USAGE};

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
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Probe `/healthz` (the process answers) instead of `/readyz` (it can serve requests).
    #[arg(long)]
    pub live: bool,
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
        Command::Serve(args) => serve::serve(&args),
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
