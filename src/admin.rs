//! The management listener (`[metrics] listen`): `/metrics` (Prometheus text), `/healthz` (the
//! process answers) and `/readyz` (it can serve: session store and upstream answer, and it is
//! not stopping; a directory that is down is reported as `degraded` with a 200). Never mounted on
//! the public listeners: readiness details and metrics are for operators, not for clients. Also
//! the client side used by `authgate healthcheck` (hyper's HTTP/1 client).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::service::{Readiness, Service};

/// How often recorded histogram samples are folded in when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How long `authgate healthcheck` waits for the whole exchange: `/readyz` may itself spend up
/// to 3 s on a hung dependency, and should still get to say which one.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

pub async fn serve(listener: TcpListener, service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "management listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = upkeep.tick() => {
                service.metrics.upkeep();
                // The directory gauges stay current for scrapers that never probe `/readyz`.
                let service = service.clone();
                connections.spawn(async move {
                    let gw = service.current();
                    service.directory_checks(&gw).await;
                });
                continue;
            }
            _ = stop.changed() => break,
        };
        // Finished connections are reaped here so the set does not grow with every probe.
        while connections.try_join_next().is_some() {}
        let service = service.clone();
        connections.spawn(async move {
            let handler = service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(answer(&service, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
    connections.shutdown().await;
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn answer(service: &Service, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let checks = service.readiness().await;
            let readiness = Readiness::of(&checks);
            let mut detail = serde_json::Map::new();
            for c in &checks {
                let v = match &c.result {
                    Ok(()) => "ok".to_string(),
                    Err(why) => why.clone(),
                };
                detail.insert(c.name.clone(), v.into());
            }
            let body = serde_json::json!({
                "status": readiness.as_str(),
                "checks": detail,
            });
            let status = match readiness {
                Readiness::Ready | Readiness::Degraded => StatusCode::OK,
                Readiness::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            };
            text(status, "application/json", format!("{body}\n"))
        }
        "/metrics" => match service.metrics.render() {
            Some(body) => text(StatusCode::OK, "text/plain; version=0.0.4", body),
            None => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "metrics are off\n".into(),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "/metrics, /healthz, /readyz\n".into(),
        ),
    }
}

/// A listen address as a local client reaches it: the wildcard becomes loopback.
fn local_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// `authgate healthcheck`: with the management listener on, GET `/readyz` (or `/healthz` when
/// `live`) and require a 200; without it, require the first public listener to accept a
/// connection. Ok holds a one-line description of what answered.
///
/// Called from the command line, outside any runtime: it runs its own single-threaded one.
pub fn probe(config: &Config, live: bool) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        tokio::time::timeout(PROBE_TIMEOUT, probe_within(config, live))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
    })
}

async fn probe_within(config: &Config, live: bool) -> Result<String, String> {
    let Some(admin) = config.metrics.listen else {
        let addr = local_target(
            *config
                .server
                .listen
                .first()
                .ok_or("no server.listen address")?,
        );
        TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        return Ok(format!("{addr} accepts connections"));
    };
    let addr = local_target(admin);
    let path = if live { "/healthz" } else { "/readyz" };
    let (status, body) = get(addr, path)
        .await
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let body = String::from_utf8_lossy(&body);
    let body = body.trim();
    if status == StatusCode::OK {
        Ok(format!("{addr}{path}: {body}"))
    } else {
        Err(format!("{addr}{path}: {status} {body}"))
    }
}

/// One GET over a fresh HTTP/1.1 connection, with hyper's client.
async fn get(
    addr: SocketAddr,
    path: &str,
) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection; it ends with the exchange, or with the runtime if the answer hangs.
    tokio::spawn(connection);
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
