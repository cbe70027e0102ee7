//! Listeners, connections and the graceful stop. HTTP/1.1 and h2 (prior knowledge) are served
//! by hyper-util's auto builder with a timer, so the header-read timeout really applies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::{Config, DirectoryKind};
use crate::conn_guard::GuardedIo;
use crate::directory::ldap::LdapDirectory;
use crate::directory::local::{load_users, LocalDirectory};
use crate::directory::{Directories, DynDirectory};
use crate::error::{Body, GatewayError};
use crate::forward::Upstream;
use crate::gateway::Gateway;
use crate::password::Verifier;
use crate::regulation::Regulation;
use crate::session::build_store;
use crate::totp::SecondFactor;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A gateway that is accepting connections.
pub struct RunningGateway {
    pub addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningGateway {
    /// Stops accepting, lets requests in flight finish up to `shutdown_grace`, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until the listeners end (after `trigger_shutdown`).
    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Builds everything the config asks for and binds its listeners.
pub async fn build_gateway(config: Config) -> Result<Arc<Gateway>, StartError> {
    let verifier = Verifier::new(
        config.server.password_hash_concurrency,
        config.server.login_queue_timeout,
    );
    let mut directories: Vec<DynDirectory> = Vec::new();
    for kind in &config.directory.order {
        match kind {
            DirectoryKind::Local => {
                if let Some(local) = &config.directory.local {
                    let users = load_users(local).map_err(|problems| {
                        StartError::Config(problems.iter().map(|p| format!("  - {p}\n")).collect())
                    })?;
                    directories.push(Arc::new(LocalDirectory::new(users, verifier.clone())));
                }
            }
            DirectoryKind::Ldap => {
                if let Some(ldap) = &config.directory.ldap {
                    let dir = LdapDirectory::new(ldap.clone())
                        .map_err(|e| StartError::Config(format!("  - {e}\n")))?;
                    directories.push(Arc::new(dir));
                }
            }
        }
    }
    let store = build_store(&config.session)
        .map_err(|e| StartError::Config(format!("  - `session.redis_url`: {e}\n")))?;
    let upstream = Upstream::new(&config.upstream);
    let bridge = (config.upstream.mode == crate::config::UpstreamMode::RocketChat)
        .then(|| crate::rocketchat::Bridge::new(&config.upstream));
    let regulation = Regulation::new(config.regulation.clone(), store.clone());
    let totp = SecondFactor::new(&config.totp)
        .map_err(|why| StartError::Config(format!("  - `totp.secrets_file`: {why}\n")))?;
    Ok(Arc::new(Gateway {
        config: Arc::new(config),
        store,
        totp,
        directories: Directories::new(directories),
        upstream,
        regulation,
        bridge,
    }))
}

pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    let mut listeners = Vec::new();
    for addr in &config.server.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
        listeners.push(l);
    }
    let gateway = build_gateway(config).await?;
    if let Err(e) = gateway.store.ping().await {
        tracing::warn!(error = %e, "session store not reachable yet; logins and protected requests answer 503 until it is");
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(gateway.config.server.max_connections));
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    for listener in listeners {
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: gateway.config.server.listen[0],
            source,
        })?;
        addrs.push(addr);
        tasks.spawn(accept_loop(
            listener,
            gateway.clone(),
            shutdown_rx.clone(),
            connections.clone(),
        ));
    }
    Ok(RunningGateway {
        addrs,
        shutdown,
        tasks,
    })
}

fn connection_builder(gateway: &Gateway) -> auto::Builder<TokioExecutor> {
    let server = &gateway.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's timer bounds the wait for the next request head, i.e. the idle keep-alive time;
        // the slow-head (slowloris) deadline is enforced per head by `GuardedIo`.
        .header_read_timeout(server.idle_timeout)
        .keep_alive(true)
        .max_buf_size(server.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(server.max_header_bytes as u32);
    builder
}

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(connection_builder(&gateway));
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
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
        let _ = stream.set_nodelay(true);
        let server = &gateway.config.server;
        let (io, flags) =
            GuardedIo::new(stream, server.max_header_bytes, server.header_read_timeout);
        let gw = gateway.clone();
        let service = service_fn(move |req| {
            let gw = gw.clone();
            let flags = flags.clone();
            async move {
                if flags.ambiguous_framing() {
                    // Never forwarded: a request framed two ways is how smuggling starts.
                    return Ok::<_, Infallible>(
                        GatewayError::BadRequest(
                            "Content-Length with Transfer-Encoding is not allowed.",
                        )
                        .into_response(),
                    );
                }
                Ok::<_, Infallible>(rescue_panics(gw.handle(req, peer)).await)
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = gateway.config.server.shutdown_grace;
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// A panic in one request answers 500 and leaves the process and other requests alone.
pub async fn rescue_panics(
    handler: impl std::future::Future<Output = http::Response<Body>>,
) -> http::Response<Body> {
    std::panic::AssertUnwindSafe(handler)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!("request handler panicked");
            GatewayError::Internal("handler panicked".into()).into_response()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_contract_body() {
        let resp = rescue_panics(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            crate::error::json_response(http::StatusCode::OK, "{}")
        })
        .await;
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], crate::error::INTERNAL_ERROR_BODY.as_bytes());
        // The runtime and this task survive the panic.
        let ok =
            rescue_panics(async { crate::error::json_response(http::StatusCode::OK, "{}") }).await;
        assert_eq!(ok.status(), 200);
    }
}
