//! What every request passes, in order, after the connection guard (`conn_guard.rs`) and
//! hyper handed it over: its request id and access record, the panic rescue (the one place a
//! panic is caught), the framing check, the refused methods, the credentials it carries, the
//! canonical path and its route kind, the one handler of that kind (`handlers/`,
//! `realtime.rs`, `tokens/`), then the turn of any error into its answer (`error/`) and the
//! `X-Request-Id` on it. Handlers read the request's facts and return what they learned; the
//! access record here keeps it for the access line.

use std::sync::Arc;

use futures_util::FutureExt;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::access::{ip_header_value, request_id, AccessScope, Peer, RequestFacts, X_REQUEST_ID};
use crate::credentials::{
    carries_bearer_credentials, cookie_credentials, is_cookie_route, is_fetch, RequestHeaders,
};
use crate::error::{Body, GatewayError};
use crate::forward;
use crate::gateway::Gateway;
use crate::handlers::{method_login, rest_login, Handled};
use crate::realtime;
use crate::route::{self, RouteKind};
use crate::service::Service;
use crate::telemetry::{Metrics, UpstreamFailure};
use crate::tokens;

/// Answers one request with the configuration in force when it arrived.
/// `ambiguous_framing`: the connection guard saw the request framed two ways.
pub async fn handle(
    service: Arc<Service>,
    req: Request<Incoming>,
    from: Peer,
    ambiguous_framing: bool,
) -> Response<Body> {
    let gw = service.current();
    let facts = request_facts(&gw, &req, from);
    let mut scope = AccessScope::new(facts, req.method().clone(), &service.metrics);
    let result = if ambiguous_framing {
        // Never forwarded: a request framed two ways is how smuggling starts.
        Err(GatewayError::BadRequest(
            "Content-Length with Transfer-Encoding is not allowed.",
        ))
    } else {
        rescue_panics(decide(&gw, req, &mut scope)).await
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => error_answer(e, &service.metrics),
    };
    resp.headers_mut()
        .insert(X_REQUEST_ID, scope.facts.request_id.clone());
    scope.finish(resp.status().as_u16());
    resp
}

/// Who sent the request and its id: the client IP behind trusted proxies
/// (`server.trusted_proxies`) and a trusted proxy's request id, else fresh ones.
fn request_facts(gw: &Gateway, req: &Request<Incoming>, from: Peer) -> RequestFacts {
    let Peer {
        addr: peer,
        addr_value: peer_value,
        tls,
    } = from;
    let trusted = &gw.config.server.trusted_proxies;
    let peer_trusted = trusted.iter().any(|n| n.contains(&peer.ip()));
    let client_ip = forward::client_ip(peer.ip(), req.headers(), trusted);
    RequestFacts {
        request_id: request_id(req.headers(), peer_trusted),
        client_ip,
        peer: peer.ip(),
        peer_trusted,
        client_value: if client_ip == peer.ip() {
            peer_value.clone()
        } else {
            ip_header_value(client_ip)
        },
        peer_value,
        tls,
    }
}

/// Decides one request: the checks every request passes, then the handler of its route kind.
/// The path, and the user as soon as it is known, go into the access record before the
/// handler runs, so a client that leaves early is logged with them.
async fn decide(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    scope: &mut AccessScope,
) -> Result<Response<Body>, GatewayError> {
    // The header checks in one walk, in a block so that what it borrows is not kept in the
    // request's future.
    let checked = {
        let seen = RequestHeaders::read(req.headers());
        check_framing(&seen)?;
        // A tunnel or an echo of the request (with its credentials) is never what a chat
        // client wants, on any route.
        (!is_refused_method(req.method()))
            .then(|| seen.credentials().map(|creds| (creds, seen.authorization)))
    };
    let Some(checked) = checked else {
        return Box::pin(answer_locally(req, Err(GatewayError::MethodNotAllowed))).await;
    };
    let (creds, authorization) = checked?;
    let route = route::route_uri(req.uri(), &gw.config.routes)
        .map_err(|_| GatewayError::BadRequest("The request path is not allowed."))?;
    if gw.identity.honours_foreign_credentials()
        && !gw.config.upstream.allow_bearer_credentials
        && carries_bearer_credentials(authorization, req.uri().query())
    {
        return Box::pin(answer_locally(req, Err(GatewayError::NotLoggedIn))).await;
    }
    let creds = match creds {
        // Browsers send cookies and URL credentials only to fetch (`<img>`, download links).
        None if is_cookie_route(&route.path) && is_fetch(req.method()) => {
            cookie_credentials(req.headers(), req.uri().query())
        }
        other => other,
    };
    scope.path = Some(route.path.clone());
    let facts = &scope.facts;
    // Every path but the proxied ones is boxed: a request's future is as large as its largest
    // path, and it is moved (copied) whole when the request starts.
    let handled: Handled = match route.kind {
        RouteKind::Login => Box::pin(rest_login::login(&gw.login, req, facts)).await,
        RouteKind::Logout => {
            let handled = Box::pin(rest_login::logout(&gw.login, req.method(), creds)).await;
            Handled {
                answer: Box::pin(answer_locally(req, handled.answer)).await,
                learned: handled.learned,
            }
        }
        RouteKind::LoginMethod => {
            let anonymous = route.path.to_ascii_lowercase().contains("method.callanon");
            Box::pin(method_login::login_method(&gw.login, req, facts, anonymous)).await
        }
        RouteKind::Realtime if gw.config.realtime.enabled => {
            Box::pin(realtime::handle(&gw.realtime, req, &route, facts, creds)).await
        }
        RouteKind::Realtime => {
            return Box::pin(answer_locally(req, Err(GatewayError::RealtimeUnavailable))).await
        }
        RouteKind::Refused => {
            return Box::pin(answer_locally(req, Err(GatewayError::NotThroughGateway))).await
        }
        // Token management is answered here, even under a public route an operator wrote: an
        // upstream token must never reach a client.
        RouteKind::Public | RouteKind::Protected if tokens::is_token_route(&route.path) => {
            Box::pin(tokens::rest::token_route(
                &gw.tokens, req, &route, creds, facts,
            ))
            .await
        }
        RouteKind::Public => gw.proxy.forward_plain(req, &route, facts).await,
        RouteKind::Protected => {
            let session = match &creds {
                Some(c) => gw.sessions.find(c).await?,
                None => None,
            };
            match (session, creds) {
                (Some(session), Some(creds)) => {
                    scope.learned.user_id = Some(creds.user_id.clone());
                    let facts = &scope.facts;
                    gw.proxy
                        .forward_authenticated(req, &route, facts, &creds, &session)
                        .await
                }
                // No usable credentials: the upstream may decide, if it authenticates by itself.
                // Stale cookies are stripped like any client credential.
                (None, None) if gw.config.routes.anonymous_forward => {
                    gw.proxy.forward_plain(req, &route, facts).await
                }
                (None, Some(c)) if c.from_cookies && gw.config.routes.anonymous_forward => {
                    gw.proxy.forward_plain(req, &route, facts).await
                }
                _ => return Box::pin(answer_locally(req, Err(GatewayError::NotLoggedIn))).await,
            }
        }
    };
    scope.record(handled.learned);
    handled.answer
}

/// The one place a panic is caught: a request whose handler panics answers 500 through the same
/// path as any other error (request id, access line, metrics), and the connection, the other
/// requests and the process carry on.
///
/// A plain function, not an `async fn`: an async fn would keep its argument and the future
/// built from it side by side, doubling the request future it wraps.
fn rescue_panics(
    handler: impl std::future::Future<Output = Result<Response<Body>, GatewayError>>,
) -> impl std::future::Future<Output = Result<Response<Body>, GatewayError>> {
    std::panic::AssertUnwindSafe(handler)
        .catch_unwind()
        .map(|answer| {
            answer.unwrap_or_else(|_| {
                tracing::error!("request handler panicked");
                Err(GatewayError::Internal("handler panicked".into()))
            })
        })
}

/// A request's error as its answer (`GatewayError::into_response`, the one mapping), logged
/// and counted once here.
fn error_answer(e: GatewayError, metrics: &Metrics) -> Response<Body> {
    match &e {
        GatewayError::Unavailable(dep, why) => {
            tracing::warn!(dependency = dep.name(), %why, "dependency unavailable")
        }
        GatewayError::UpstreamUnreachable(why) => {
            metrics.upstream_error(UpstreamFailure::Unreachable);
            tracing::warn!(%why, "upstream unreachable")
        }
        GatewayError::UpstreamTimeout => metrics.upstream_error(UpstreamFailure::Timeout),
        GatewayError::Internal(why) => tracing::error!(%why, "internal error"),
        _ => {}
    }
    e.into_response()
}

/// `CONNECT` and `TRACE` (and IIS's `TRACK`): refused with 405 everywhere.
fn is_refused_method(method: &Method) -> bool {
    method == Method::CONNECT || method == Method::TRACE || method.as_str() == "TRACK"
}

/// The most of an unread request body the gateway reads and drops before answering it itself.
const DISCARD_LIMIT: usize = 64 * 1024;

/// Reads and drops a small request body before answering locally: hyper closes a connection
/// whose request body was left unread, and a client that already sent its next request on it
/// would see the connection drop. Larger or slower bodies are left; the connection then closes.
async fn answer_locally(
    req: Request<Incoming>,
    answer: Result<Response<Body>, GatewayError>,
) -> Result<Response<Body>, GatewayError> {
    let body = Limited::new(req.into_body(), DISCARD_LIMIT);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), body.collect()).await;
    answer
}

/// Requests whose framing could be read two ways are refused before anything else.
fn check_framing(seen: &RequestHeaders<'_>) -> Result<(), GatewayError> {
    if seen.transfer_encoding && seen.first_content_length.is_some() {
        return Err(GatewayError::BadRequest(
            "Content-Length and Transfer-Encoding together are not allowed.",
        ));
    }
    if seen.hosts > 1 {
        return Err(GatewayError::BadRequest(
            "Repeated Host headers are not allowed.",
        ));
    }
    if seen.conflicting_content_length {
        return Err(GatewayError::BadRequest(
            "Conflicting Content-Length headers.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_contract_body() {
        let answer = rescue_panics(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Ok(crate::error::json_response(http::StatusCode::OK, "{}"))
        })
        .await;
        let resp = answer.expect_err("a panic is an error").into_response();
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], crate::error::INTERNAL_ERROR_BODY.as_bytes());
        // The runtime and this task survive the panic.
        let ok =
            rescue_panics(async { Ok(crate::error::json_response(http::StatusCode::OK, "{}")) })
                .await
                .expect("no panic, no error");
        assert_eq!(ok.status(), 200);
    }
}
