//! `authgate blocks list|clear`: operators see which login names, users and client IPs have
//! failed logins on record and which of them are blocked now, and lift a block early (a user
//! who locked themselves out, an office behind one NAT address) instead of waiting for the
//! window to pass.
//!
//! The counters live in the session store, so with Redis this command sees and changes exactly
//! what every running instance consults on the next login. With the memory store they live inside
//! the gateway process, out of this command's reach: it says so and exits 64.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Subcommand;

use super::{ip_key, user_id_key, user_key};
use crate::cli::common::{
    block_on, exit_with, load_config, utc, ConfigArg, Failure, EXIT_RUNTIME, EXIT_USAGE,
};
use crate::config::{Config, RegulationConfig, StoreKind};
use crate::session::command::{find_known_user, printable};
use crate::session::{build_store, now_unix_ms, DynSessionStore, StoreError};

#[derive(Debug, Subcommand)]
pub enum BlocksCommand {
    /// List the login names, users and client IPs with failed logins within their window: how
    /// many, the limit, and until when each blocked one stays blocked (UTC).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only those blocked now.
        #[arg(long)]
        blocked: bool,
    },
    /// Lift a block now: forget the failed logins of a user (under every name the directory
    /// knows them by, and their user id) or of a client IP, or all of them.
    Clear(ClearArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClearArgs {
    /// A username, a users-file user's email, a user id, or any login name that was typed.
    #[arg(long, required_unless_present_any = ["ip", "all"])]
    pub user: Option<String>,
    /// A client IP address, as `blocks list` shows it.
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// Forget every failed login on record.
    #[arg(long, conflicts_with_all = ["user", "ip"])]
    pub all: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

fn store_failure(e: StoreError) -> Failure {
    Failure(EXIT_RUNTIME, e.to_string())
}

pub fn run(cmd: BlocksCommand) -> ExitCode {
    let result = match cmd {
        BlocksCommand::List { config, blocked } => list(&config, blocked),
        BlocksCommand::Clear(args) => clear(&args),
    };
    exit_with(result)
}

/// Why the command cannot work with the memory store, in the words the README uses.
pub const MEMORY_STORE_UNREACHABLE: &str =
    "session.store is \"memory\": failed-login counters and blocks live inside the running \
     gateway process and cannot be listed or cleared from the command line; they lift by \
     themselves once regulation.user_block / regulation.ip_block has passed, or when the \
     gateway restarts. Use session.store = \"redis\" to manage blocks with `authgate blocks`";

fn prepare(arg: &ConfigArg) -> Result<Config, Failure> {
    let config = load_config(arg).map_err(|e| Failure(EXIT_USAGE, e.to_string()))?;
    if config.session.store != StoreKind::Redis {
        return Err(Failure(EXIT_USAGE, MEMORY_STORE_UNREACHABLE.into()));
    }
    Ok(config)
}

/// One regulation counter, read against the configuration that governs it.
struct Counter {
    /// The store key (`ip:…`, `user:…`, `uid:…`).
    key: String,
    kind: &'static str,
    subject: String,
    /// Failures (and attempts in flight) within the window.
    count: u64,
    limit: u64,
    /// When the block lifts, for a counter at or over its limit.
    blocked_until_ms: Option<u64>,
}

impl Counter {
    fn read(key: String, mut times: Vec<u64>, config: &RegulationConfig, now: u64) -> Self {
        let (kind, subject, limit, window) = if let Some(ip) = key.strip_prefix("ip:") {
            ("client-ip", ip, config.ip_failures, config.ip_block)
        } else if let Some(login) = key.strip_prefix("user:") {
            ("login", login, config.user_failures, config.user_block)
        } else if let Some(id) = key.strip_prefix("uid:") {
            ("user-id", id, config.user_failures, config.user_block)
        } else {
            ("other", key.as_str(), 0, config.user_block)
        };
        let window = window.as_millis() as u64;
        times.retain(|t| *t > now.saturating_sub(window));
        times.sort_unstable();
        let count = times.len() as u64;
        // An attempt is refused while the window holds `limit` entries; the block lifts when the
        // entry that brings the count below the limit leaves the window.
        let blocked_until_ms = (config.enabled && limit > 0 && count >= limit)
            .then(|| times[(count - limit) as usize] + window);
        Counter {
            subject: subject.to_string(),
            key,
            kind,
            count,
            limit,
            blocked_until_ms,
        }
    }
}

async fn counters(
    store: &DynSessionStore,
    config: &RegulationConfig,
) -> Result<Vec<Counter>, Failure> {
    let now = now_unix_ms();
    let mut counters: Vec<Counter> = store
        .failure_records()
        .await
        .map_err(store_failure)?
        .into_iter()
        .map(|(key, times)| Counter::read(key, times, config, now))
        .filter(|c| c.count > 0)
        .collect();
    counters.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
    Ok(counters)
}

fn list(arg: &ConfigArg, only_blocked: bool) -> Result<(), Failure> {
    let config = prepare(arg)?;
    let counters = block_on(async {
        let store = build_store(&config.session).map_err(store_failure)?;
        counters(&store, &config.regulation).await
    })?;
    if !config.regulation.enabled {
        println!("regulation.enabled is false: no login is blocked, whatever is on record.");
    }
    let shown: Vec<&Counter> = counters
        .iter()
        .filter(|c| !only_blocked || c.blocked_until_ms.is_some())
        .collect();
    if shown.is_empty() {
        println!(
            "{}",
            if counters.is_empty() {
                "No failed logins on record: nothing is blocked."
            } else {
                "Nothing is blocked."
            }
        );
        return Ok(());
    }
    let subjects: Vec<String> = shown.iter().map(|c| printable(&c.subject)).collect();
    let width = subjects
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(7);
    println!(
        "{:<10}{:<width$}  {:<10}STATUS",
        "KIND", "SUBJECT", "FAILURES"
    );
    for (c, subject) in shown.iter().zip(&subjects) {
        let status = match c.blocked_until_ms {
            Some(until) => format!("blocked until {}", utc(until)),
            None => "not blocked".into(),
        };
        let failures = format!("{}/{}", c.count, c.limit);
        println!("{:<10}{subject:<width$}  {failures:<10}{status}", c.kind);
    }
    let blocked = shown
        .iter()
        .filter(|c| c.blocked_until_ms.is_some())
        .count();
    println!(
        "{blocked} blocked. Lift a block with `authgate blocks clear --user NAME` or `--ip ADDRESS`."
    );
    Ok(())
}

/// The counters that hold `name` back: the typed login name, and, for a user a directory knows,
/// their username, email and user id, since an attempt under any of them counts for the user.
async fn user_keys(config: &Config, name: &str) -> Result<(Vec<String>, bool), Failure> {
    let mut keys = vec![user_key(name), user_id_key(name.trim())];
    let known = find_known_user(config, name).await?;
    if let Some(user) = &known {
        keys.push(user_key(&user.username));
        keys.extend(user.email.as_deref().map(user_key));
        keys.push(user_id_key(&user.id));
    }
    keys.sort();
    keys.dedup();
    Ok((keys, known.is_some()))
}

/// An IPv4 client may be seen as itself or in its IPv6-mapped form, depending on the socket
/// that accepted it: both are cleared.
fn ip_keys(ip: IpAddr) -> Vec<String> {
    let twin = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
    };
    std::iter::once(ip).chain(twin).map(ip_key).collect()
}

fn clear(args: &ClearArgs) -> Result<(), Failure> {
    let config = prepare(&args.config)?;
    if args.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err(Failure(EXIT_USAGE, "--user is empty".into()));
    }
    let cleared = block_on(async {
        let store = build_store(&config.session).map_err(store_failure)?;
        let on_record = counters(&store, &config.regulation).await?;
        let mut wanted: Vec<String> = Vec::new();
        if args.all {
            wanted.extend(on_record.iter().map(|c| c.key.clone()));
        }
        if let Some(name) = &args.user {
            let (keys, known) = user_keys(&config, name).await?;
            if !known && !on_record.iter().any(|c| keys.contains(&c.key)) {
                return Err(Failure(
                    EXIT_USAGE,
                    format!(
                        "unknown user `{}`: no directory knows it and no failed login is on \
                         record under that name; check the spelling (`authgate blocks list` \
                         shows what is on record)",
                        printable(name)
                    ),
                ));
            }
            wanted.extend(keys);
        }
        if let Some(ip) = args.ip {
            wanted.extend(ip_keys(ip));
        }
        for key in &wanted {
            store.clear_failures(key).await.map_err(store_failure)?;
        }
        Ok(on_record
            .into_iter()
            .filter(|c| wanted.contains(&c.key))
            .collect::<Vec<_>>())
    })?;
    if cleared.is_empty() {
        println!("No failed logins on record for that; nothing to clear.");
        return Ok(());
    }
    for c in &cleared {
        let was = if c.blocked_until_ms.is_some() {
            "was blocked"
        } else {
            "was not blocked"
        };
        println!(
            "Cleared {} {}: {} failed login(s) forgotten ({was}).",
            c.kind,
            printable(&c.subject),
            c.count
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(user_failures: u64) -> RegulationConfig {
        RegulationConfig {
            enabled: true,
            user_failures,
            user_block: Duration::from_secs(300),
            ip_failures: 50,
            ip_block: Duration::from_secs(300),
            ip_allowlist: Vec::new(),
        }
    }

    #[test]
    fn a_counter_is_blocked_until_enough_failures_leave_the_window() {
        let now = 1_000_000_000;
        let times = vec![now - 400_000, now - 30_000, now - 20_000, now - 10_000];
        let c = Counter::read("user:ada".into(), times.clone(), &config(3), now);
        assert_eq!((c.kind, c.subject.as_str(), c.count), ("login", "ada", 3));
        // Three in the window, limit three: blocked until the oldest of them leaves it.
        assert_eq!(c.blocked_until_ms, Some(now - 30_000 + 300_000));
        let c = Counter::read("uid:u1".into(), times.clone(), &config(2), now);
        assert_eq!(c.blocked_until_ms, Some(now - 20_000 + 300_000));
        let c = Counter::read("ip:192.0.2.7".into(), times, &config(3), now);
        assert_eq!(
            (c.kind, c.count, c.blocked_until_ms),
            ("client-ip", 3, None)
        );
    }

    #[test]
    fn an_ipv4_client_is_cleared_in_both_of_its_forms() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(ip_keys(ip), ["ip:203.0.113.9", "ip:::ffff:203.0.113.9"]);
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(ip_keys(mapped), ["ip:::ffff:203.0.113.9", "ip:203.0.113.9"]);
    }
}
