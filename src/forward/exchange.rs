//! The exchange with the upstream: a request prepared for the wire (origin-form target,
//! HTTP/1.1, `Host`), sent on a pooled keep-alive connection within the timeout, and the answer
//! streamed back with its hop-by-hop headers stripped.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{future, FutureExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;

use super::headers::rewrite_response_headers;
use crate::config::UpstreamConfig;
use crate::error::{Body, GatewayError};
use crate::upstream_pool::{Pool, PoolError, UpstreamBody};

/// The chat backend: where requests go, and the keep-alive connections they go on.
pub struct Upstream {
    config: UpstreamConfig,
    pool: Arc<Pool>,
    host_header: HeaderValue,
    preserve_host: bool,
    timeout: Duration,
}

impl Upstream {
    /// `workers` is the number of worker runtimes, each of which keeps its own connections.
    pub fn new(config: &UpstreamConfig, workers: usize) -> Self {
        let authority = config
            .url
            .authority()
            .expect("validated upstream URL has an authority")
            .clone();
        let pool = Pool::new(
            authority.host(),
            authority.port_u16().unwrap_or(80),
            config.connect_timeout,
            config.pool_idle_timeout,
            config.pool_max_idle_per_host,
            workers,
        );
        Self {
            config: config.clone(),
            pool: Arc::new(pool),
            host_header: HeaderValue::from_str(authority.as_str())
                .expect("authority is a valid header value"),
            preserve_host: config.preserve_host,
            timeout: config.timeout,
        }
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Whether a TCP connection to the upstream opens within the connect timeout (`/readyz`).
    pub async fn probe(&self) -> Result<(), String> {
        self.pool.probe().await.map_err(|e| e.to_string())
    }

    fn prepare<B>(&self, req: &mut Request<B>, forward: &str) -> Result<(), GatewayError> {
        // Origin form on the wire, as an HTTP/1.1 origin server expects it from a proxy. Most
        // requests arrive in exactly that form already.
        let as_received = req.uri().scheme().is_none()
            && req.uri().path_and_query().map(|pq| pq.as_str()) == Some(forward);
        if !as_received {
            *req.uri_mut() = Uri::try_from(forward)
                .map_err(|_| GatewayError::BadRequest("The request target cannot be forwarded."))?;
        }
        *req.version_mut() = http::Version::HTTP_11;
        if !self.preserve_host || !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, self.host_header.clone());
        }
        Ok(())
    }

    /// Combinators, not `async`: an async fn or block keeps its arguments beside the futures it
    /// builds from them, and the request is large; this future holds it once.
    fn exchange(
        &self,
        req: Result<Request<UpstreamBody>, GatewayError>,
    ) -> impl std::future::Future<Output = Result<Response<Body>, GatewayError>> + Send + '_ {
        let req = match req {
            Ok(req) => req,
            Err(e) => return future::Either::Left(future::ready(Err(e))),
        };
        // The timeout is kept by the pool, on the connection's own timer.
        let sent = self.pool.send(req, self.timeout);
        future::Either::Right(sent.map(|answer| {
            let (mut parts, body) = upstream_answer(Ok(answer))?.into_parts();
            rewrite_response_headers(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                http_body_util::BodyExt::map_err(body, Into::into).boxed_unsync(),
            ))
        }))
    }

    /// Sends a request whose headers were already rewritten to `forward` (canonical path+query).
    pub fn send(
        &self,
        req: Request<Incoming>,
        forward: &str,
    ) -> impl std::future::Future<Output = Result<Response<Body>, GatewayError>> + Send + '_ {
        let mut req = req.map(Either::Left);
        let prepared = self.prepare(&mut req, forward).map(|()| req);
        self.exchange(prepared)
    }

    /// Sends a WebSocket upgrade request; the answer comes back untouched, so its 101 and the
    /// upgrade itself can be handed on.
    pub async fn send_upgrade(
        &self,
        headers: HeaderMap,
        forward: &str,
    ) -> Result<Response<Incoming>, GatewayError> {
        let mut req = Request::new(Either::Right(Full::default()));
        *req.headers_mut() = headers;
        self.prepare(&mut req, forward)?;
        upstream_answer(tokio::time::timeout(self.timeout, self.pool.send_upgrade(req)).await)
    }

    /// Sends a request whose body authgate holds whole (empty for a replay after the upstream
    /// refused a stale token).
    pub async fn send_buffered(
        &self,
        method: http::Method,
        headers: HeaderMap,
        body: bytes::Bytes,
        forward: &str,
    ) -> Result<Response<Body>, GatewayError> {
        let mut req = Request::new(Either::Right(Full::new(body)));
        *req.method_mut() = method;
        *req.headers_mut() = headers;
        let prepared = self.prepare(&mut req, forward).map(|()| req);
        self.exchange(prepared).await
    }
}

/// What the upstream answered within the timeout, or why it did not.
fn upstream_answer<T>(
    answer: Result<Result<T, PoolError>, tokio::time::error::Elapsed>,
) -> Result<T, GatewayError> {
    match answer {
        Err(_) | Ok(Err(PoolError::Timeout)) => Err(GatewayError::UpstreamTimeout),
        Ok(Err(e)) => Err(GatewayError::UpstreamUnreachable(error_chain(&e))),
        Ok(Ok(resp)) => Ok(resp),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
