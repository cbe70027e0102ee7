//! Connections to whichever Redis deployment is configured: one server, a master found through
//! Sentinel, or a Cluster. Every failure drops the shared connection, so the next command
//! reconnects, and with Sentinel asks the sentinels again for the current master: that is how a
//! failover is followed without a restart.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    RedisFuture, TlsMode, Value,
};

use super::store::StoreError;
use crate::config::{ExposeSecret, NodeAuth, RedisConfig, RedisTopology};

pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// One multiplexed connection, cheap to clone, whatever the deployment.
#[derive(Clone)]
pub(super) enum Conn {
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection and the generation it belongs to, so that a failure only drops the connection
/// it happened on, not a fresh one another request already made.
#[derive(Clone)]
pub(super) struct Lease {
    generation: u64,
    pub conn: Conn,
}

/// A client for the master the sentinels name now.
async fn current_master(
    sentinel: &tokio::sync::Mutex<SentinelClient>,
) -> Result<Client, StoreError> {
    sentinel
        .lock()
        .await
        .async_get_client()
        .await
        .map_err(unavailable)
}

enum Target {
    Single(Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster {
        nodes: Vec<redis::ConnectionInfo>,
        auth: NodeAuth,
    },
}

pub(super) struct Connector {
    target: Target,
    timeout: Duration,
    current: Mutex<Option<Lease>>,
    generation: std::sync::atomic::AtomicU64,
    connecting: tokio::sync::Mutex<()>,
}

fn addr(host: &str, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    }
}

fn tls_mode(auth: &NodeAuth) -> TlsMode {
    if auth.tls {
        TlsMode::Secure
    } else {
        TlsMode::Insecure
    }
}

impl Connector {
    pub fn new(config: &RedisConfig, timeout: Duration) -> Result<Self, StoreError> {
        let target = match &config.topology {
            RedisTopology::Single { url } => {
                Target::Single(Client::open(url.as_str()).map_err(unavailable)?)
            }
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                db,
                auth,
            } => {
                let addrs = sentinels.iter().map(|(h, p)| addr(h, *p, auth.tls));
                let mut b = SentinelClientBuilder::new(
                    addrs,
                    master_name.clone(),
                    SentinelServerType::Master,
                )
                .map_err(unavailable)?
                .set_client_to_redis_db(*db);
                if auth.tls {
                    b = b
                        .set_client_to_redis_tls_mode(tls_mode(auth))
                        .set_client_to_sentinel_tls_mode(tls_mode(auth));
                }
                if let Some(u) = &auth.username {
                    b = b
                        .set_client_to_redis_username(u)
                        .set_client_to_sentinel_username(u);
                }
                if let Some(p) = auth.password.as_ref().map(|p| p.expose_secret()) {
                    b = b
                        .set_client_to_redis_password(p)
                        .set_client_to_sentinel_password(p);
                }
                Target::Sentinel(tokio::sync::Mutex::new(b.build().map_err(unavailable)?))
            }
            RedisTopology::Cluster { nodes, auth } => Target::Cluster {
                nodes: nodes
                    .iter()
                    .map(|(h, p)| addr(h, *p, auth.tls).into_connection_info())
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?,
                auth: auth.clone(),
            },
        };
        Ok(Self {
            target,
            timeout,
            current: Mutex::new(None),
            generation: Default::default(),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> Option<Lease> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The shared connection, opened on first use so the gateway starts (and answers 503)
    /// while Redis is down, and recovers by itself when Redis returns.
    pub async fn lease(&self) -> Result<Lease, StoreError> {
        if let Some(l) = self.cached() {
            return Ok(l);
        }
        let _guard = tokio::time::timeout(self.timeout, self.connecting.lock())
            .await
            .map_err(|_| StoreError::Timeout)?;
        if let Some(l) = self.cached() {
            return Ok(l);
        }
        let conn = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| StoreError::Timeout)??;
        let lease = Lease {
            generation: self
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            conn,
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease.clone());
        Ok(lease)
    }

    /// Forgets the connection a command failed on; the next command connects again.
    pub fn failed(&self, lease: &Lease) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current
            .as_ref()
            .is_some_and(|c| c.generation == lease.generation)
        {
            *current = None;
        }
    }

    /// Forgets the shared connection whatever it is: the subscriber saw the server go away, so
    /// the next command must not be the one to find the connection dead.
    pub fn forget_current(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn plain_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        match &self.target {
            Target::Single(client) => client
                .get_multiplexed_async_connection_with_config(&self.plain_config())
                .await
                .map(Conn::Plain)
                .map_err(unavailable),
            Target::Sentinel(sentinel) => {
                let client = current_master(sentinel).await?;
                client
                    .get_multiplexed_async_connection_with_config(&self.plain_config())
                    .await
                    .map(Conn::Plain)
                    .map_err(unavailable)
            }
            Target::Cluster { nodes, auth } => {
                let mut b = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(2)
                    .min_retry_wait(20)
                    .max_retry_wait(200);
                if auth.tls {
                    b = b.tls(tls_mode(auth));
                }
                if let Some(u) = &auth.username {
                    b = b.username(u);
                }
                if let Some(p) = auth.password.as_ref().map(|p| p.expose_secret()) {
                    b = b.password(p);
                }
                let client = b.build().map_err(unavailable)?;
                client
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
                    .map_err(unavailable)
            }
        }
    }

    /// A dedicated subscriber connection. Cluster nodes forward every PUBLISH to each other, so
    /// any reachable node will do; with Sentinel, the current master.
    pub async fn pubsub(&self) -> Result<PubSub, StoreError> {
        let fut = async {
            match &self.target {
                Target::Single(client) => client.get_async_pubsub().await.map_err(unavailable),
                Target::Sentinel(sentinel) => current_master(sentinel)
                    .await?
                    .get_async_pubsub()
                    .await
                    .map_err(unavailable),
                Target::Cluster { nodes, auth } => {
                    let mut last = StoreError::Unavailable("no cluster node configured".into());
                    for node in nodes {
                        let mut settings = RedisConnectionInfo::default();
                        if let Some(u) = &auth.username {
                            settings = settings.set_username(u);
                        }
                        if let Some(p) = auth.password.as_ref().map(|p| p.expose_secret()) {
                            settings = settings.set_password(p);
                        }
                        let info = node.clone().set_redis_settings(settings);
                        let attempt = async { Client::open(info)?.get_async_pubsub().await };
                        match attempt.await {
                            Ok(p) => return Ok(p),
                            Err(e) => last = unavailable(e),
                        }
                    }
                    Err(last)
                }
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    /// Waits until `replicas` replicas hold every write made so far on this connection to the
    /// node owning `key`. Fewer acknowledgements within `timeout` is an error: the write may not
    /// survive a failover, and the caller must not report it as done.
    pub async fn wait(
        &self,
        lease: &Lease,
        key: &str,
        replicas: usize,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        if replicas == 0 {
            return Ok(());
        }
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout.as_millis() as u64);
        let mut conn = lease.conn.clone();
        let acked: redis::RedisResult<i64> = match &mut conn {
            Conn::Plain(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                c.route_command(cmd, route)
                    .await
                    .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
            }
        };
        let acked = acked.map_err(|e| {
            self.failed(lease);
            unavailable(e)
        })?;
        if (acked.max(0) as usize) < replicas {
            return Err(StoreError::Unavailable(format!(
                "only {acked} of {replicas} replica(s) acknowledged the write within {}",
                humantime::format_duration(timeout)
            )));
        }
        Ok(())
    }

    /// Every key matching a glob `pattern`: `SCAN` on one server; a Cluster spreads keys over
    /// its primaries, where the client sends `KEYS` to each. For operator commands, never on a
    /// request's path.
    pub async fn keys_matching(
        &self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let lease = self.lease().await?;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut conn = lease.conn.clone();
            let page = async {
                if matches!(conn, Conn::Cluster(_)) {
                    let all: Vec<String> = redis::cmd("KEYS")
                        .arg(pattern)
                        .query_async(&mut conn)
                        .await?;
                    return Ok((0, all));
                }
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async::<(u64, Vec<String>)>(&mut conn)
                    .await
            };
            let (next, batch) = match tokio::time::timeout(timeout, page).await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    self.failed(&lease);
                    return Err(unavailable(e));
                }
                Err(_) => {
                    self.failed(&lease);
                    return Err(StoreError::Timeout);
                }
            };
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// `s` as a literal in a Redis glob pattern: a key prefix may hold `*`, `?`, `[` or a backslash.
pub(super) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
