//! `[session]` and `[session.redis]`: where sessions live, which Redis deployment holds them
//! (one server, Sentinel, or Cluster), and the in-process cache of hot sessions.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::problem::{count_or, duration_or, problem, resolve_path, ConfigProblem};
use super::secret::{check_secret_file, env_secret, ExposeSecret, SecretString};

#[derive(Debug, Default, Deserialize)]
pub struct RawSession {
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub redis_url_file: Option<String>,
    pub redis_timeout: Option<String>,
    pub key_prefix: Option<String>,
    pub ttl: Option<String>,
    pub cache_ttl: Option<String>,
    pub cache_size: Option<i64>,
    pub personal_access_tokens: Option<bool>,
    pub redis: Option<RawRedis>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRedis {
    pub sentinels: Option<Vec<String>>,
    pub master_name: Option<String>,
    pub cluster: Option<Vec<String>>,
    pub db: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub tls: Option<bool>,
    pub wait_replicas: Option<i64>,
    pub wait_timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

#[derive(Clone)]
pub struct SessionConfig {
    pub store: StoreKind,
    /// The single-server URL as written (kept for messages and the single topology).
    pub redis_url: String,
    pub redis: RedisConfig,
    pub redis_timeout: Duration,
    pub key_prefix: String,
    pub ttl: Duration,
    /// How long a session read from Redis may be served from memory; zero turns the cache off.
    pub cache_ttl: Duration,
    pub cache_size: usize,
    /// Whether personal access tokens may be created and used (`false` refuses existing ones too).
    pub personal_access_tokens: bool,
}

impl fmt::Debug for SessionConfig {
    // The Redis URL may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("store", &self.store)
            .field("redis_url", &"<redacted>")
            .field("redis", &self.redis)
            .field("redis_timeout", &self.redis_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("ttl", &self.ttl)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_size", &self.cache_size)
            .field("personal_access_tokens", &self.personal_access_tokens)
            .finish()
    }
}

/// Credentials and transport shared by every node of a Sentinel or Cluster deployment.
#[derive(Clone, Default)]
pub struct NodeAuth {
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub tls: bool,
}

// By value, secrets included: a reload compares topologies to see whether Redis changed.
impl PartialEq for NodeAuth {
    fn eq(&self, other: &Self) -> bool {
        let password = |a: &NodeAuth| a.password.as_ref().map(|p| p.expose_secret().to_owned());
        self.username == other.username
            && password(self) == password(other)
            && self.tls == other.tls
    }
}

impl Eq for NodeAuth {}

impl fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server: `redis://` or `rediss://` (TLS).
    Single { url: String },
    /// A master found through Sentinel, re-resolved whenever its connection fails.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master_name: String,
        db: i64,
        auth: NodeAuth,
    },
    /// Redis Cluster: any reachable subset of its nodes; the rest is discovered.
    Cluster {
        nodes: Vec<(String, u16)>,
        auth: NodeAuth,
    },
}

impl fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTopology::Single { .. } => f.write_str("Single(<redacted url>)"),
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                db,
                auth,
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master_name", master_name)
                .field("db", db)
                .field("auth", auth)
                .finish(),
            RedisTopology::Cluster { nodes, auth } => f
                .debug_struct("Cluster")
                .field("nodes", nodes)
                .field("auth", auth)
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    /// Replicas that must acknowledge a revocation or a used TOTP step (`WAIT`) before it is
    /// reported done, so a failover cannot bring it back.
    pub wait_replicas: usize,
    pub wait_timeout: Duration,
}

impl RedisConfig {
    /// One server at `url`, nothing awaited: what tests and the CLI mostly need.
    pub fn single(url: &str) -> Self {
        RedisConfig {
            topology: RedisTopology::Single { url: url.into() },
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
        }
    }
}

fn parse_host_port(entry: &str) -> Option<(String, u16)> {
    let entry = entry.trim();
    let (host, port) = entry.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    (!host.is_empty() && !host.contains(['/', '@', ' '])).then(|| (host.to_string(), port))
}

/// Decodes the user or password of a Sentinel URL. A malformed escape is refused rather than
/// kept as written (what `percent_decode_str` alone would do): the operator typed a credential
/// that cannot be what they meant.
fn percent_decode(s: &str) -> Option<String> {
    let malformed = s.match_indices('%').any(|(i, _)| {
        !s.get(i + 1..i + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if malformed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// `redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db]`, with
/// `rediss+sentinel://` for TLS. Credentials and TLS apply to the sentinels and the master.
pub fn parse_sentinel_url(url: &str) -> Result<RedisTopology, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("rediss+sentinel://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("redis+sentinel://") {
        (false, r)
    } else {
        return Err("not a redis+sentinel:// URL".into());
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut auth = NodeAuth {
        tls,
        ..NodeAuth::default()
    };
    if let Some(u) = userinfo {
        let (user, pass) = u.split_once(':').unwrap_or((u, ""));
        let bad = || "the user or password is not valid percent-encoding".to_string();
        auth.username = Some(percent_decode(user).ok_or_else(bad)?).filter(|s| !s.is_empty());
        auth.password = Some(percent_decode(pass).ok_or_else(bad)?)
            .filter(|s| !s.is_empty())
            .map(SecretString::from);
    }
    let sentinels: Vec<(String, u16)> = hosts
        .split(',')
        .map(|h| parse_host_port(h).ok_or_else(|| format!("`{h}` is not host:port")))
        .collect::<Result<_, _>>()?;
    let mut parts = path.split('/');
    let master_name = parts.next().unwrap_or("").to_string();
    if master_name.is_empty() {
        return Err("the master name is missing after the hosts".into());
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(d) => d
            .parse::<i64>()
            .map_err(|_| format!("`{d}` is not a db number"))?,
    };
    Ok(RedisTopology::Sentinel {
        sentinels,
        master_name,
        db,
        auth,
    })
}

fn node_list(
    key: &str,
    entries: &[String],
    problems: &mut Vec<ConfigProblem>,
) -> Vec<(String, u16)> {
    if entries.is_empty() {
        problems.push(problem(
            key,
            "the list is empty",
            "list at least one node as \"host:port\"",
        ));
    }
    let mut nodes = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match parse_host_port(e) {
            Some(n) => nodes.push(n),
            None => problems.push(problem(
                &format!("{key}[{i}]"),
                format!("`{e}` is not host:port"),
                "write entries like \"10.0.0.1:26379\"",
            )),
        }
    }
    nodes
}

pub fn validate_session(
    raw: RawSession,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> SessionConfig {
    let store = match raw.store.as_deref().unwrap_or("memory") {
        "memory" => StoreKind::Memory,
        "redis" => StoreKind::Redis,
        other => {
            problems.push(problem(
                "session.store",
                format!("`{other}` is not a session store"),
                "use \"memory\" (one instance) or \"redis\"",
            ));
            StoreKind::Memory
        }
    };
    let url_given = raw.redis_url.is_some() || raw.redis_url_file.is_some();
    let mut redis_url = raw
        .redis_url
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    if let Some(file) = raw.redis_url_file {
        let path = resolve_path(base, &file);
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                redis_url = s.trim().to_string();
                check_secret_file("session.redis_url_file", &path, problems);
            }
            Err(e) => problems.push(problem(
                "session.redis_url_file",
                format!("cannot read {}: {e}", path.display()),
                "point it at a readable file holding the Redis URL",
            )),
        }
    }
    if let Some(v) = env_secret("AUTHGATE_SESSION_REDIS_URL") {
        redis_url = v;
    }
    let redis_timeout = duration_or(
        "session.redis_timeout",
        raw.redis_timeout.as_ref(),
        Duration::from_secs(2),
        Duration::from_millis(1),
        problems,
    );
    let redis = validate_redis(
        raw.redis.unwrap_or_default(),
        &redis_url,
        url_given,
        store == StoreKind::Redis,
        redis_timeout,
        base,
        problems,
    );
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "authgate:".into());
    if key_prefix.contains(['{', '}']) {
        problems.push(problem(
            "session.key_prefix",
            format!("`{key_prefix}` contains a brace"),
            "remove `{` and `}`: authgate puts the user id in braces so that Redis Cluster keeps one user's keys in one slot",
        ));
    }
    let ttl = duration_or(
        "session.ttl",
        raw.ttl.as_ref(),
        Duration::from_secs(90 * 86400),
        Duration::from_secs(1),
        problems,
    );
    let cache_ttl = duration_or(
        "session.cache_ttl",
        raw.cache_ttl.as_ref(),
        Duration::from_secs(10),
        Duration::ZERO,
        problems,
    );
    if cache_ttl > Duration::from_secs(3600) {
        problems.push(problem(
            "session.cache_ttl",
            "longer than an hour",
            "use at most \"1h\"; revocations reach the cache at once, the TTL is a safety net",
        ));
    }
    SessionConfig {
        store,
        redis_url,
        redis,
        redis_timeout,
        key_prefix,
        ttl,
        cache_ttl,
        cache_size: count_or(
            "session.cache_size",
            raw.cache_size,
            10_000,
            0,
            10_000_000,
            problems,
        ),
        personal_access_tokens: raw.personal_access_tokens.unwrap_or(true),
    }
}

fn validate_redis(
    raw: RawRedis,
    url: &str,
    url_given: bool,
    used: bool,
    redis_timeout: Duration,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> RedisConfig {
    let mut password = raw.password.clone();
    if let Some(file) = &raw.password_file {
        let path = resolve_path(base, file);
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                password = Some(s.trim_end_matches(['\r', '\n']).to_string());
                let key = "session.redis.password_file";
                check_secret_file(key, &path, problems);
            }
            Err(e) => problems.push(problem(
                "session.redis.password_file",
                format!("cannot read {}: {e}", path.display()),
                "point it at a readable file holding the Redis password",
            )),
        }
    }
    if let Some(v) = env_secret("AUTHGATE_SESSION_REDIS_PASSWORD") {
        password = Some(v);
    }
    let auth = NodeAuth {
        username: raw.username.clone(),
        password: password.map(SecretString::from),
        tls: raw.tls.unwrap_or(false),
    };
    let sentinel_url =
        url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://");
    let chosen = [raw.sentinels.is_some(), raw.cluster.is_some(), url_given]
        .iter()
        .filter(|x| **x)
        .count();
    if chosen > 1 {
        problems.push(problem(
            "session.redis",
            "more than one of session.redis_url, session.redis.sentinels and session.redis.cluster is set",
            "keep exactly one: a server URL, a Sentinel deployment or a Cluster",
        ));
    }
    if raw.master_name.is_some() && raw.sentinels.is_none() {
        problems.push(problem(
            "session.redis.master_name",
            "set without session.redis.sentinels",
            "list the sentinels too, or remove master_name",
        ));
    }
    let topology = if let Some(entries) = &raw.sentinels {
        let sentinels = node_list("session.redis.sentinels", entries, problems);
        let master_name = raw.master_name.clone().unwrap_or_default();
        if master_name.is_empty() {
            problems.push(problem(
                "session.redis.master_name",
                "missing",
                "name the master the sentinels monitor, e.g. master_name = \"mymaster\"",
            ));
        }
        RedisTopology::Sentinel {
            sentinels,
            master_name,
            db: raw.db.unwrap_or(0),
            auth,
        }
    } else if let Some(entries) = &raw.cluster {
        if raw.db.is_some_and(|d| d != 0) {
            problems.push(problem(
                "session.redis.db",
                "Redis Cluster has only db 0",
                "remove db",
            ));
        }
        RedisTopology::Cluster {
            nodes: node_list("session.redis.cluster", entries, problems),
            auth,
        }
    } else if sentinel_url {
        match parse_sentinel_url(url) {
            Ok(t) => t,
            Err(why) => {
                problems.push(problem(
                    "session.redis_url",
                    why,
                    "write redis+sentinel://[:password@]host:port[,host:port...]/master_name[/db]",
                ));
                RedisTopology::Single { url: url.into() }
            }
        }
    } else {
        if used && redis::Client::open(url).is_err() {
            problems.push(problem(
                "session.redis_url",
                "not a valid Redis URL",
                "write redis://[:password@]host:port/db, rediss://... (TLS) or redis+sentinel://...",
            ));
        }
        if raw.username.is_some() || raw.password.is_some() || raw.tls.is_some() || raw.db.is_some()
        {
            problems.push(problem(
                "session.redis",
                "username, password, tls and db apply to sentinels and cluster only",
                "put them in session.redis_url (redis://user:password@host:port/db, rediss:// for TLS)",
            ));
        }
        RedisTopology::Single { url: url.into() }
    };
    let default_wait = usize::from(matches!(topology, RedisTopology::Sentinel { .. }));
    let wait_timeout = duration_or(
        "session.redis.wait_timeout",
        raw.wait_timeout.as_ref(),
        Duration::from_millis(500).min(redis_timeout / 2),
        Duration::from_millis(1),
        problems,
    );
    if wait_timeout >= redis_timeout {
        problems.push(problem(
            "session.redis.wait_timeout",
            "not shorter than session.redis_timeout",
            "make it shorter than redis_timeout, which bounds the whole command",
        ));
    }
    RedisConfig {
        topology,
        wait_replicas: count_or(
            "session.redis.wait_replicas",
            raw.wait_replicas,
            default_wait,
            0,
            16,
            problems,
        ),
        wait_timeout,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::session::*;

    #[test]
    fn sentinel_urls_parse() {
        let t =
            parse_sentinel_url("rediss+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380/mymaster/2")
                .unwrap();
        assert_eq!(
            t,
            RedisTopology::Sentinel {
                sentinels: vec![("10.0.0.1".into(), 26379), ("::1".into(), 26380)],
                master_name: "mymaster".into(),
                db: 2,
                auth: NodeAuth {
                    username: None,
                    password: Some("p@ss".into()),
                    tls: true
                },
            }
        );
        assert!(parse_sentinel_url("redis+sentinel://h:1").is_err());
        assert!(parse_sentinel_url("redis+sentinel://h/m").is_err());
        assert!(parse_sentinel_url("redis://h:1/m").is_err());
    }

    #[test]
    fn sentinel_credentials_are_percent_decoded_and_malformed_escapes_refused() {
        let auth = |url: &str| match parse_sentinel_url(url) {
            Ok(RedisTopology::Sentinel { auth, .. }) => Ok(auth),
            other => Err(format!("{other:?}")),
        };
        let decoded = auth("redis+sentinel://us%65r:p%2Fss%20w@h:1/m").unwrap();
        assert_eq!(decoded.username.as_deref(), Some("user"));
        assert_eq!(
            decoded.password.as_ref().map(|p| p.expose_secret()),
            Some("p/ss w")
        );
        for bad in ["p%zz", "p%4", "p%", "%ff"] {
            let url = format!("redis+sentinel://:{bad}@h:1/m");
            assert_eq!(
                auth(&url).unwrap_err(),
                "Err(\"the user or password is not valid percent-encoding\")",
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_output_hides_passwords() {
        let t = parse_sentinel_url("redis+sentinel://u:secret@h:1/m").unwrap();
        assert!(!format!("{t:?}").contains("secret"));
    }
}
