//! `authgate sessions list|revoke USER`: operators look at and end a user's sessions ("log out
//! everywhere") in the configured Redis deployment; every running instance stops accepting a
//! revoked session at once. The listing shows where and when each session began and when it was
//! last used, so the one to revoke can be told apart. A USER no directory knows is an error.

use std::process::ExitCode;

use clap::Subcommand;

use super::{build_store, DynSessionStore, TokenHash};
use crate::cli::common::{
    block_on, exit_with, find_in_ldap, load_config, utc, ConfigArg, Failure, EXIT_RUNTIME,
    EXIT_USAGE,
};
use crate::config::{Config, StoreKind};
use crate::directory::fold;

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List USER's live sessions and personal access tokens: token id, creation, last use
    /// (approximate), expiry (UTC), kind (a personal access token with its name), and the
    /// client IP and User-Agent of the login that created each. USER must be known to a
    /// directory (or be a user id with sessions).
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

pub fn run(cmd: SessionsCommand) -> ExitCode {
    let result = match cmd {
        SessionsCommand::List(args) => list(&args),
        SessionsCommand::Revoke {
            args,
            token_id,
            all,
        } => revoke(&args, token_id.as_deref(), all),
    };
    exit_with(result)
}

/// A user a directory knows, as operator commands name them.
pub struct KnownUser {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
}

/// The user `name` designates: a users-file user by username, email or id, else a user the
/// LDAP directory finds by login name. `Ok(None)` when no directory knows `name`; `Err` (with
/// its exit code) when the users file is broken or LDAP cannot be asked.
pub async fn find_known_user(config: &Config, name: &str) -> Result<Option<KnownUser>, Failure> {
    let wanted = fold(name);
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
                || u.profile.id == name.trim()
        }) {
            return Ok(Some(KnownUser {
                id: u.profile.id.clone(),
                username: u.profile.username.clone(),
                email: u.profile.email.clone(),
            }));
        }
    }
    let found = find_in_ldap(config, name).await?;
    Ok(found.map(|p| KnownUser {
        id: p.id,
        username: p.username,
        email: p.email,
    }))
}

/// The user's id and a name to print. A name no directory knows is still accepted as a user
/// id that has sessions (a user since removed from the users file, or an LDAP user's id), but
/// never silently: a typo is an error, not an empty list.
async fn resolve(
    config: &Config,
    store: &DynSessionStore,
    user: &str,
) -> Result<(String, String), Failure> {
    if fold(user).is_empty() {
        return Err(Failure(EXIT_USAGE, "USER is empty".into()));
    }
    if let Some(known) = find_known_user(config, user).await? {
        return Ok((known.id, known.username));
    }
    let id = user.trim();
    if !store.list_user(id).await.map_err(store_failure)?.is_empty() {
        return Ok((id.to_string(), id.to_string()));
    }
    let users_file = config
        .directory
        .local
        .as_ref()
        .map(|l| format!("the users file {}", l.users_file.display()))
        .unwrap_or_else(|| "no users file is configured".into());
    let ldap = if config.directory.ldap.is_some() {
        "the LDAP directory"
    } else {
        "no LDAP directory is configured"
    };
    Err(Failure(
        EXIT_USAGE,
        format!(
            "unknown user `{user}`: not in {users_file}, not in {ldap}, and no session is \
             stored under that user id; check the spelling (give a username, a users-file \
             user's email, or a user id)"
        ),
    ))
}

fn prepare(args: &SessionsArgs) -> Result<Config, Failure> {
    let config = load_config(&args.config).map_err(|e| Failure(EXIT_USAGE, e.to_string()))?;
    if config.session.store != StoreKind::Redis {
        return Err(Failure(EXIT_USAGE, MEMORY_STORE_UNREACHABLE.into()));
    }
    Ok(config)
}

/// Why the command cannot work with the memory store, in the words the README uses.
pub const MEMORY_STORE_UNREACHABLE: &str =
    "session.store is \"memory\": sessions live inside the running gateway process and cannot \
     be listed or revoked from the command line (restarting the gateway ends them all); use \
     session.store = \"redis\" to manage sessions with `authgate sessions`";

fn store_failure(e: super::StoreError) -> Failure {
    Failure(EXIT_RUNTIME, e.to_string())
}

/// `s` with control characters escaped: user agents, token names and login names are client
/// text, and an escape sequence must not reach the operator's terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn list(args: &SessionsArgs) -> Result<(), Failure> {
    let config = prepare(args)?;
    let (id, name, mut sessions) = block_on(async {
        let store = build_store(&config.session).map_err(store_failure)?;
        let (id, name) = resolve(&config, &store, &args.user).await?;
        let sessions = store.list_user(&id).await.map_err(store_failure)?;
        let hashes: Vec<TokenHash> = sessions.iter().map(|(h, _)| h.clone()).collect();
        let last_used = store.last_used(&id, &hashes).await.map_err(store_failure)?;
        let rows: Vec<_> = sessions
            .into_iter()
            .zip(last_used)
            .map(|((h, s), used)| (h, s, used))
            .collect();
        Ok((id, name, rows))
    })?;
    sessions.sort_by_key(|(_, s, _)| s.created_ms);
    if sessions.is_empty() {
        println!("{name} (id {id}) has no live sessions.");
        return Ok(());
    }
    let rows: Vec<[String; 7]> = sessions
        .iter()
        .map(|(hash, s, used)| {
            // A personal access token shows its name, never its secret or its last characters.
            let (expires, kind) = match &s.personal {
                Some(p) => (
                    "never".to_string(),
                    format!("personal access token \"{}\"", printable(&p.name)),
                ),
                None => (utc(s.expires_ms), "session".to_string()),
            };
            let origin = s.origin.as_ref();
            [
                hash.id(),
                utc(s.created_ms),
                used.map(utc).unwrap_or_else(|| "-".into()),
                expires,
                kind,
                origin.map(|o| o.ip.clone()).unwrap_or_else(|| "-".into()),
                origin
                    .and_then(|o| o.user_agent.as_deref())
                    .map(printable)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "TOKEN-ID",
        "CREATED",
        "LAST-USED",
        "EXPIRES",
        "KIND",
        "CLIENT-IP",
        "USER-AGENT",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{out}");
    };
    line(&header);
    for r in &rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    println!(
        "{} live session(s) of {name} (id {id}). Times are UTC; LAST-USED is approximate \
         (recorded at most once a minute), `-` when not used since login.",
        sessions.len()
    );
    Ok(())
}

fn revoke(args: &SessionsArgs, token_id: Option<&str>, all: bool) -> Result<(), Failure> {
    let config = prepare(args)?;
    if all {
        let (id, name, n) = block_on(async {
            let store = build_store(&config.session).map_err(store_failure)?;
            let (id, name) = resolve(&config, &store, &args.user).await?;
            let n = store.revoke_user(&id).await.map_err(store_failure)?;
            Ok((id, name, n))
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
    let (name, hash, revoked) = block_on(async {
        let store = build_store(&config.session).map_err(store_failure)?;
        let (id, name) = resolve(&config, &store, &args.user).await?;
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
        Ok((format!("{name} (id {id})"), hash, revoked))
    })?;
    if revoked {
        println!("Revoked session {} of {name}.", hash.id());
    } else {
        println!(
            "Session {} of {name} had already ended; nothing to revoke.",
            hash.id()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    // Spelled from the crate root: `super` here is this file, not the session module.
    use crate::session::command::printable;

    #[test]
    fn client_text_reaches_the_terminal_without_control_characters() {
        assert_eq!(printable("Mozilla/5.0 (X11)"), "Mozilla/5.0 (X11)");
        assert_eq!(printable("evil\u{1b}[2Jua\r\n"), "evil\\u{1b}[2Jua\\r\\n");
        assert_eq!(printable("ｆｕｌｌ ü"), "ｆｕｌｌ ü");
    }
}
