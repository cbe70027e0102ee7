//! Listeners, connections and the graceful stop. HTTP/1.1 and h2 are served by hyper-util's auto
//! builder behind the connection guard, which bounds every phase of a connection; with
//! `[server.tls]` the same happens inside rustls, h2 being chosen by ALPN (or prior knowledge)
//! and HTTP/1.1 otherwise.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::access::Peer;
use crate::config::Config;
use crate::conn_guard::{ConnLimits, GuardedIo, InProgressBody, RequestInProgress};
use crate::error::Body;
use crate::service::Service;
use crate::telemetry::ConnectionClose;
use crate::tls::CertResolver;

pub use crate::compose::StartError;

/// A gateway that is accepting connections.
pub struct RunningGateway {
    pub addrs: Vec<SocketAddr>,
    /// The management listener (`/metrics`, `/healthz`, `/readyz`), when `[metrics]` is on.
    pub metrics_addr: Option<SocketAddr>,
    service: Arc<Service>,
    shutdown: watch::Sender<bool>,
    admin_shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    admin: Option<tokio::task::JoinHandle<()>>,
}

impl RunningGateway {
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// The startup records: one per listener, then what this gateway serves with. Every field
    /// is a plain value (no Rust renderings), so JSON logs hold proper JSON.
    pub fn log_started(&self, config_name: &str) {
        for addr in &self.addrs {
            tracing::info!(address = %addr, "listening");
        }
        if let Some(addr) = self.metrics_addr {
            tracing::info!(address = %addr, "management listener (metrics, health) listening");
        }
        let gw = self.service.current();
        let config = &gw.config;
        let upstream_mode = match config.upstream.mode {
            crate::config::UpstreamMode::TrustedHeaders => "trusted-headers",
            crate::config::UpstreamMode::RocketChat => "rocketchat",
        };
        let session_store = match (&config.session.store, &config.session.redis.topology) {
            (crate::config::StoreKind::Memory, _) => "memory",
            (_, crate::config::RedisTopology::Single { .. }) => "redis",
            (_, crate::config::RedisTopology::Sentinel { .. }) => "redis-sentinel",
            (_, crate::config::RedisTopology::Cluster { .. }) => "redis-cluster",
        };
        let users_local = gw.directories.user_count("local");
        let ldap = config.directory.ldap.as_ref().map(|l| l.url.as_str());
        tracing::info!(
            config = config_name,
            upstream = %config.upstream.url,
            upstream_mode,
            session_store,
            listeners = self.addrs.len(),
            users_local,
            directory_ldap = ldap,
            "authgate started"
        );
    }

    /// Applies a new configuration (see [`Service::reload`]).
    pub async fn reload(
        &self,
        config: Config,
    ) -> Result<Vec<&'static str>, crate::service::ReloadError> {
        self.service.reload(config).await
    }

    /// Readiness turns false at once; after `shutdown_delay` the listeners close, requests in
    /// flight may finish up to `shutdown_grace`, and the management listener closes last.
    pub async fn shutdown(mut self) {
        self.service.start_draining();
        let delay = self.service.current().config.server.shutdown_delay;
        if !delay.is_zero() {
            tracing::info!(
                delay = %humantime::format_duration(delay),
                "readiness is off; closing the listeners after the delay"
            );
            tokio::time::sleep(delay).await;
        }
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        let _ = self.admin_shutdown.send(true);
        if let Some(admin) = self.admin.take() {
            let _ = admin.await;
        }
    }

    /// Starts the stop without waiting for it.
    pub fn trigger_shutdown(&self) {
        self.service.start_draining();
        let _ = self.shutdown.send(true);
        let _ = self.admin_shutdown.send(true);
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// The listening sockets, per worker: `by_worker[w]` holds one socket for every listen address.
fn bind_workers(config: &Config) -> Result<Vec<Vec<std::net::TcpListener>>, StartError> {
    let workers = config.server.worker_threads;
    let mut by_worker: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for addr in &config.server.listen {
        let sockets = crate::workers::bind(*addr, workers).map_err(|source| StartError::Bind {
            addr: *addr,
            source,
        })?;
        for (w, socket) in sockets.into_iter().enumerate() {
            by_worker[w].push(socket);
        }
    }
    Ok(by_worker)
}

pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    let by_worker = bind_workers(&config)?;
    let addrs = by_worker[0]
        .iter()
        .zip(&config.server.listen)
        .map(|(l, addr)| {
            l.local_addr().map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = config;
    crate::reload::resolve_port_zero(&mut config.server.listen, &addrs);
    let admin_listener = match config.metrics.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let tls = match &config.server.tls {
        Some(t) => Some(Arc::new(CertResolver::load(t).map_err(|e| {
            StartError::Config(vec![crate::config::problem::problem(
                e.key(),
                e.to_string(),
                e.fix(),
            )])
        })?)),
        None => None,
    };
    let acceptor = tls.clone().map(crate::tls::acceptor);
    let watched = tls.clone();
    let gateway = crate::compose::build_gateway(config).await?;
    if let Err(e) = gateway.store.ping().await {
        tracing::warn!(error = %e, "session store not reachable yet; logins and protected requests answer 503 until it is");
    }
    if let Err(e) = gateway.upstream.probe().await {
        tracing::warn!(upstream = %gateway.config.upstream.url, error = %e, "upstream not reachable yet; proxied requests answer 502 until it is");
    }
    let max_connections = gateway.config.server.max_connections;
    let service = Arc::new(Service::new(
        Arc::into_inner(gateway).expect("the gateway is not shared yet"),
        tls,
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (admin_shutdown, admin_shutdown_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    for (index, listeners) in by_worker.into_iter().enumerate() {
        let worker = Worker {
            listeners,
            service: service.clone(),
            shutdown: shutdown_rx.clone(),
            connections: connections.clone(),
            tls: acceptor.clone(),
        };
        if index == 0 {
            // The first worker is the runtime this is called on.
            tasks.spawn(worker.run());
        } else {
            let (done, finished) = tokio::sync::oneshot::channel();
            crate::workers::spawn(index, move || worker.run(), done)
                .map_err(|source| StartError::Worker { index, source })?;
            tasks.spawn(async move {
                let _ = finished.await;
            });
        }
    }
    if let Some(resolver) = watched {
        let service = service.clone();
        tasks.spawn(crate::tls::watch_files(
            resolver,
            move || service.current().config.server.tls.clone(),
            shutdown_rx.clone(),
        ));
    }
    let (metrics_addr, admin) = match admin_listener {
        Some(l) => {
            let addr = l.local_addr().map_err(|source| StartError::Bind {
                addr: service.current().config.server.listen[0],
                source,
            })?;
            let task = tokio::spawn(crate::admin::serve(l, service.clone(), admin_shutdown_rx));
            (Some(addr), Some(task))
        }
        None => (None, None),
    };
    Ok(RunningGateway {
        addrs,
        metrics_addr,
        service,
        shutdown,
        admin_shutdown,
        tasks,
        admin,
    })
}

fn connection_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let server = &config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The wait for the next request and the slow-head (slowloris) deadline are both bounded
        // by `GuardedIo`'s one timer per connection: hyper's would be armed per request.
        .header_read_timeout(None::<std::time::Duration>)
        .keep_alive(true)
        .max_buf_size(server.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(server.max_header_bytes as u32);
    builder
}

/// One worker's share of the listeners, and what its accept loops need.
struct Worker {
    listeners: Vec<std::net::TcpListener>,
    service: Arc<Service>,
    shutdown: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
    tls: Option<TlsAcceptor>,
}

impl Worker {
    /// Accepts on every listener until the stop, then waits for the connections to drain.
    async fn run(self) {
        let mut loops = JoinSet::new();
        for listener in self.listeners {
            // Registered with the runtime of the thread that runs this worker.
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot register a listener");
                    continue;
                }
            };
            loops.spawn(accept_loop(
                listener,
                self.service.clone(),
                self.shutdown.clone(),
                self.connections.clone(),
                self.tls.clone(),
            ));
        }
        while loops.join_next().await.is_some() {}
    }
}

/// What one accepted connection needs, taken from the configuration current at accept time.
struct ConnSetup {
    service: Arc<Service>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    max_header_bytes: usize,
    limits: ConnLimits,
    peer: SocketAddr,
    tls: bool,
}

async fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    mut shutdown: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
    tls: Option<TlsAcceptor>,
) {
    let graceful = GracefulShutdown::new();
    // Rebuilt only when a reload swapped the configuration.
    let mut built_for = service.current().config.clone();
    let mut builder = Arc::new(connection_builder(&built_for));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // The permit is taken after the accept: workers share the limit, and a permit held by
        // a worker whose socket gets no connection would strand one queued on another's. So at
        // most one accepted connection per worker waits here, unserved, for a slot.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let config = service.current().config.clone();
        if !Arc::ptr_eq(&config, &built_for) {
            builder = Arc::new(connection_builder(&config));
            built_for = config.clone();
        }
        let setup = ConnSetup {
            service: service.clone(),
            builder: builder.clone(),
            max_header_bytes: config.server.max_header_bytes,
            limits: conn_limits(&config.server),
            peer,
            tls: tls.is_some(),
        };
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, setup, watcher, permit).await,
                Some(acceptor) => {
                    // The handshake happens here, off the accept loop, within the head deadline.
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(setup.limits.header_read, handshake).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(tls_stream, setup, watcher, permit).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => {
                            setup
                                .service
                                .metrics
                                .connection_closed(ConnectionClose::TlsHandshakeTimeout);
                            tracing::debug!(%peer, "TLS handshake timed out")
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let grace = service.current().config.server.shutdown_grace;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// Serves one connection (plain, or the decrypted side of TLS) behind the framing guard.
async fn serve_connection<I>(
    io: I,
    setup: ConnSetup,
    watcher: Watcher,
    _permit: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = setup.service.metrics.clone();
    let (io, flags) = GuardedIo::new(io, setup.max_header_bytes, setup.limits, metrics.clone());
    let handler = hyper_util::service::TowerToHyperService::new(PerRequest {
        service: setup.service,
        peer: Peer::new(setup.peer, setup.tls),
        flags,
    });
    let conn = setup
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), handler)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        // A bound that passed was counted by the guard.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

fn conn_limits(server: &crate::config::ServerConfig) -> ConnLimits {
    ConnLimits {
        first_byte: server.first_byte_timeout,
        header_read: server.header_read_timeout,
        body_read: server.body_read_timeout,
        h2_preface: server.h2_preface_timeout,
        idle: server.idle_timeout,
    }
}

/// The tower service one connection's requests go through: each is decided by the current
/// configuration's gateway ([`crate::pipeline::handle`], which also rescues a panicking handler).
#[derive(Clone)]
struct PerRequest {
    service: Arc<Service>,
    peer: Peer,
    flags: Arc<crate::conn_guard::ConnFlags>,
}

impl tower::Service<http::Request<hyper::body::Incoming>> for PerRequest {
    type Response = http::Response<InProgressBody>;
    type Error = std::convert::Infallible;
    type Future = Decided;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        // Until its answer's body is over, the connection is not idle.
        let in_progress = self.flags.request_started();
        // Set before hyper hands this request over: whatever follows it on the connection was
        // not followed by the guard, so it is never read as a request.
        let close_after =
            (!self.flags.is_h2() && self.flags.lost_track()).then(|| self.service.metrics.clone());
        Decided {
            // Boxed as it is built: wrapped in a combinator first, the large request future
            // would be moved (copied) once more on its way into the box.
            handled: Box::pin(crate::pipeline::handle(
                self.service.clone(),
                req,
                self.peer.clone(),
                self.flags.ambiguous_framing(),
            )),
            in_progress: Some(in_progress),
            close_after,
        }
    }
}

/// One request's answer on its way out of the tower stack.
struct Decided {
    handled: Pin<Box<dyn Future<Output = http::Response<Body>> + Send>>,
    in_progress: Option<RequestInProgress>,
    /// Set when the connection must close after this answer (the guard lost track).
    close_after: Option<crate::telemetry::Metrics>,
}

impl Future for Decided {
    type Output = Result<http::Response<InProgressBody>, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut resp = std::task::ready!(self.handled.as_mut().poll(cx));
        if let Some(metrics) = self.close_after.take() {
            if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                metrics.connection_closed(ConnectionClose::UnfollowedFraming);
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
        }
        let in_progress = self.in_progress.take().expect("polled after its answer");
        Poll::Ready(Ok(in_progress.until_sent(resp)))
    }
}
