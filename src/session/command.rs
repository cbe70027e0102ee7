//! `authgate sessions list|revoke USER`: operators look at and end a user's sessions ("log out
//! everywhere") in the configured Redis deployment; every running instance stops accepting a
//! revoked session at once.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;

use super::{build_store, TokenHash};
use crate::cli::common::{load_config, ConfigArg, EXIT_RUNTIME, EXIT_USAGE};
use crate::config::{Config, StoreKind};
use crate::directory::fold;

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List USER's live sessions and personal access tokens: token id, creation, expiry (UTC)
    /// and kind (a personal access token with its name).
    List(SessionsArgs),
    /// Revoke one of USER's sessions by its token id (from `list`), or all of them with --all.
    Revoke {
        #[command(flatten)]
        args: SessionsArgs,
        /// The token id `authgate sessions list` shows (a unique prefix of it will do).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        token_id: Option<String>,
        /// Revoke every session of USER.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    /// The user: a users-file username or email, or a user id (the `userId` logins return).
    pub user: String,
    #[command(flatten)]
    pub config: ConfigArg,
}

struct Failure(u8, String);

pub fn run(cmd: SessionsCommand) -> ExitCode {
    let result = match cmd {
        SessionsCommand::List(args) => list(&args),
        SessionsCommand::Revoke {
            args,
            token_id,
            all,
        } => revoke(&args, token_id.as_deref(), all),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("authgate: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The user's id and a name to print: users-file users by username or email, anyone else by id.
fn resolve(config: &Config, user: &str) -> Result<(String, String), Failure> {
    let wanted = fold(user);
    if wanted.is_empty() {
        return Err(Failure(EXIT_USAGE, "USER is empty".into()));
    }
    if let Some(local) = &config.directory.local {
        let users = crate::directory::local::load_users(local).map_err(|p| {
            Failure(
                EXIT_USAGE,
                p.iter().map(|p| format!("\n  - {p}")).collect::<String>(),
            )
        })?;
        if let Some(u) = users.iter().find(|u| {
            fold(&u.profile.username) == wanted
                || u.profile.email.as_deref().map(fold) == Some(wanted.clone())
                || u.profile.id == user.trim()
        }) {
            return Ok((u.profile.id.clone(), u.profile.username.clone()));
        }
    }
    Ok((user.trim().to_string(), user.trim().to_string()))
}

fn prepare(args: &SessionsArgs) -> Result<(Config, String, String), Failure> {
    let config = load_config(&args.config).map_err(|e| Failure(EXIT_USAGE, e.to_string()))?;
    if config.session.store != StoreKind::Redis {
        return Err(Failure(
            EXIT_USAGE,
            "session.store is \"memory\": sessions live inside the running gateway process and \
             cannot be reached from here; restarting the gateway ends them all"
                .into(),
        ));
    }
    let (id, name) = resolve(&config, &args.user)?;
    Ok((config, id, name))
}

fn store_failure(e: super::StoreError) -> Failure {
    Failure(EXIT_RUNTIME, e.to_string())
}

/// One runtime for the whole command: Redis connections live on the runtime that made them.
fn block_on<T>(f: impl std::future::Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(EXIT_RUNTIME, e.to_string()))?
        .block_on(f)
}

fn utc(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn list(args: &SessionsArgs) -> Result<(), Failure> {
    let (config, id, name) = prepare(args)?;
    let mut sessions = block_on(async {
        let store = build_store(&config.session).map_err(store_failure)?;
        store.list_user(&id).await.map_err(store_failure)
    })?;
    sessions.sort_by_key(|(_, s)| s.created_ms);
    if sessions.is_empty() {
        println!("{name} (id {id}) has no live sessions.");
        return Ok(());
    }
    println!("{:<14}{:<24}{:<24}KIND", "TOKEN-ID", "CREATED", "EXPIRES");
    for (hash, s) in &sessions {
        // A personal access token shows its name, never its secret or its last characters.
        let (expires, kind) = match &s.personal {
            Some(p) => (
                "never".to_string(),
                format!("personal access token {:?}", p.name),
            ),
            None => (utc(s.expires_ms), "session".to_string()),
        };
        println!(
            "{:<14}{:<24}{:<24}{kind}",
            hash.id(),
            utc(s.created_ms),
            expires
        );
    }
    println!("{} live session(s) of {name} (id {id}).", sessions.len());
    Ok(())
}

fn revoke(args: &SessionsArgs, token_id: Option<&str>, all: bool) -> Result<(), Failure> {
    let (config, id, name) = prepare(args)?;
    if all {
        let n = block_on(async {
            let store = build_store(&config.session).map_err(store_failure)?;
            store.revoke_user(&id).await.map_err(store_failure)
        })?;
        println!("Revoked {n} session(s) of {name} (id {id}).");
        return Ok(());
    }
    let wanted = token_id.unwrap_or_default().trim();
    if wanted.len() < 4 {
        return Err(Failure(
            EXIT_USAGE,
            "give the token id `authgate sessions list` shows (at least 4 characters of it)".into(),
        ));
    }
    let (hash, revoked) = block_on(async {
        let store = build_store(&config.session).map_err(store_failure)?;
        let sessions = store.list_user(&id).await.map_err(store_failure)?;
        let matches: Vec<&TokenHash> = sessions
            .iter()
            .map(|(h, _)| h)
            .filter(|h| h.id().starts_with(wanted))
            .collect();
        let hash = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(Failure(
                    EXIT_USAGE,
                    format!("{name} (id {id}) has no live session with token id `{wanted}`"),
                ))
            }
            _ => {
                return Err(Failure(
                    EXIT_USAGE,
                    format!("`{wanted}` matches several sessions of {name}; give more of the id"),
                ))
            }
        };
        let revoked = store.revoke(&id, &hash).await.map_err(store_failure)?;
        Ok((hash, revoked))
    })?;
    if revoked {
        println!("Revoked session {} of {name} (id {id}).", hash.id());
    } else {
        println!(
            "Session {} of {name} had already ended; nothing to revoke.",
            hash.id()
        );
    }
    Ok(())
}
