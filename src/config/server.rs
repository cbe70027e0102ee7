//! `[server]`: listeners, limits and timeouts of the public side.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use std::path::Path;

use super::ops::{validate_tls, TlsConfig};
use super::problem::{count_or, duration_or, problem, ConfigProblem};
use super::raw::{self, OneOrMany};
pub use crate::password::HashPriority;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// Base for `avatarUrl`; when absent the first listen address is (never the client's Host).
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// A new connection must send its first byte within this.
    pub first_byte_timeout: Duration,
    /// Longest pause between two reads of a request body.
    pub body_read_timeout: Duration,
    /// A login body must be whole within this of its head.
    pub login_body_timeout: Duration,
    /// The HTTP/2 preface and the client's first SETTINGS must be whole within this.
    pub h2_preface_timeout: Duration,
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
    pub password_hash_priority: HashPriority,
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub(super) fn validate_server(
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
    let header_read_timeout = duration_or(
        "server.header_read_timeout",
        raw.header_read_timeout.as_ref(),
        Duration::from_secs(10),
        Duration::from_millis(100),
        problems,
    );
    let idle_timeout = duration_or(
        "server.idle_timeout",
        raw.idle_timeout.as_ref(),
        Duration::from_secs(60),
        Duration::from_millis(100),
        problems,
    );
    let bound = |key: &str, raw: Option<&String>, default: Duration, problems: &mut Vec<_>| {
        duration_or(key, raw, default, Duration::from_millis(100), problems)
    };
    let tls = validate_tls(raw.tls, base, problems);
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
        header_read_timeout,
        idle_timeout,
        // Unset, a silent connection is bound as tightly as a slow head or an idle one.
        first_byte_timeout: bound(
            "server.first_byte_timeout",
            raw.first_byte_timeout.as_ref(),
            header_read_timeout.min(idle_timeout),
            problems,
        ),
        body_read_timeout: bound(
            "server.body_read_timeout",
            raw.body_read_timeout.as_ref(),
            Duration::from_secs(30),
            problems,
        ),
        login_body_timeout: bound(
            "server.login_body_timeout",
            raw.login_body_timeout.as_ref(),
            Duration::from_secs(10),
            problems,
        ),
        h2_preface_timeout: bound(
            "server.h2_preface_timeout",
            raw.h2_preface_timeout.as_ref(),
            Duration::from_secs(10),
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
        password_hash_priority: match raw.password_hash_priority.as_deref().unwrap_or("low") {
            "normal" => HashPriority::Normal,
            "low" => HashPriority::Low,
            "idle" => HashPriority::Idle,
            other => {
                problems.push(problem(
                    "server.password_hash_priority",
                    format!("`{other}` is not a hashing priority"),
                    "use \"low\" (nice 10, the default), \"idle\" (only spare CPU) or \"normal\"",
                ));
                HashPriority::Low
            }
        },
    }
}

#[cfg(test)]
mod tests {
    // The module under test, named in full: `super` here is `server`, not the config root.
    use crate::config::server::*;

    fn server(raw: raw::RawServer) -> (ServerConfig, Vec<ConfigProblem>) {
        let mut problems = Vec::new();
        let config = validate_server(raw, Path::new("."), &mut problems);
        (config, problems)
    }

    #[test]
    fn connection_bounds_have_safe_defaults() {
        let (c, problems) = server(raw::RawServer::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.first_byte_timeout, Duration::from_secs(10));
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.login_body_timeout, Duration::from_secs(10));
        assert_eq!(c.h2_preface_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        // Unset, the first-byte bound follows the tighter of the head and idle bounds.
        let (c, _) = server(raw::RawServer {
            idle_timeout: Some("2s".into()),
            ..Default::default()
        });
        assert_eq!(c.first_byte_timeout, Duration::from_secs(2));
    }

    #[test]
    fn a_zero_short_or_unreadable_bound_is_refused_with_its_key_and_a_fix() {
        let (_, problems) = server(raw::RawServer {
            first_byte_timeout: Some("0s".into()),
            body_read_timeout: Some("soon".into()),
            login_body_timeout: Some("10ms".into()),
            h2_preface_timeout: Some("0s".into()),
            ..Default::default()
        });
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.first_byte_timeout",
                "server.body_read_timeout",
                "server.login_body_timeout",
                "server.h2_preface_timeout"
            ]
        );
        assert!(problems.iter().all(|p| !p.fix.is_empty()), "{problems:?}");
    }
}
