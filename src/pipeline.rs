//! What every request passes, in order: the framing check, the refused methods, the
//! credentials it carries, the canonical path and its route kind, then the one handler of that
//! kind (`handlers/`, `realtime.rs`, `tokens/`). Connection-level checks come before this
//! (`conn_guard.rs`); the request id, the access record and the panic rescue wrap it
//! (`service.rs`).

use std::sync::Arc;

use http::{header, HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::access::RequestFacts;
use crate::credentials::{
    carries_bearer_credentials, cookie_credentials, credentials, is_cookie_route, is_fetch,
};
use crate::error::{Body, GatewayError};
use crate::gateway::Gateway;
use crate::handlers::{method_login, proxy, rest_login};
use crate::realtime;
use crate::route::{self, RouteKind};
use crate::tokens;

/// Decides one request. What it learns on the way (path, user, upstream time) goes into
/// `facts` for the access line.
pub async fn dispatch(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    facts: &mut RequestFacts,
) -> Result<Response<Body>, GatewayError> {
    check_framing(req.headers())?;
    // A tunnel or an echo of the request (with its credentials) is never what a chat client
    // wants, on any route.
    if is_refused_method(req.method()) {
        return Box::pin(answer_locally(req, Err(GatewayError::MethodNotAllowed))).await;
    }
    let creds = credentials(req.headers())?;
    let route = route::route_uri(req.uri(), &gw.config.routes)
        .map_err(|_| GatewayError::BadRequest("The request path is not allowed."))?;
    if gw.identity.honours_foreign_credentials()
        && !gw.config.upstream.allow_bearer_credentials
        && carries_bearer_credentials(req.headers(), req.uri().query())
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
    facts.path = Some(route.path.clone());
    // Every path but the proxied ones is boxed: a request's future is as large as its largest
    // path, and it is moved (copied) whole when the request starts.
    let authenticated = match route.kind {
        RouteKind::Login => return Box::pin(rest_login::login(gw, req, facts)).await,
        RouteKind::Logout => {
            let answer = Box::pin(rest_login::logout(gw, req.method(), creds, facts)).await;
            return Box::pin(answer_locally(req, answer)).await;
        }
        RouteKind::LoginMethod => {
            let anonymous = route.path.to_ascii_lowercase().contains("method.callanon");
            return Box::pin(method_login::login_method(gw, req, facts, anonymous)).await;
        }
        RouteKind::Realtime if gw.config.realtime.enabled => {
            return Box::pin(realtime::handle(gw, req, &route, facts, creds)).await;
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
            return Box::pin(tokens::rest::token_route(gw, req, &route, creds, facts)).await;
        }
        RouteKind::Public => None,
        RouteKind::Protected => {
            let session = match &creds {
                Some(c) => gw.session_for(c).await?,
                None => None,
            };
            match (session, creds) {
                (Some(session), Some(creds)) => {
                    facts.user_id = Some(creds.user_id.clone());
                    Some((creds, session))
                }
                // No usable credentials: the upstream may decide, if it authenticates by itgw.
                // Stale cookies are stripped like any client credential.
                (None, None) if gw.config.routes.anonymous_forward => None,
                (None, Some(c)) if c.from_cookies && gw.config.routes.anonymous_forward => None,
                _ => return Box::pin(answer_locally(req, Err(GatewayError::NotLoggedIn))).await,
            }
        }
    };
    match &authenticated {
        Some((creds, session)) => {
            proxy::forward_authenticated(gw, req, &route, facts, creds, session).await
        }
        None => proxy::forward_plain(gw, req, &route, facts).await,
    }
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
fn check_framing(headers: &HeaderMap) -> Result<(), GatewayError> {
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    let mut cls = headers.get_all(header::CONTENT_LENGTH).iter();
    let first_cl = cls.next();
    if te && first_cl.is_some() {
        return Err(GatewayError::BadRequest(
            "Content-Length and Transfer-Encoding together are not allowed.",
        ));
    }
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(GatewayError::BadRequest(
            "Repeated Host headers are not allowed.",
        ));
    }
    if let Some(first) = first_cl {
        if cls.any(|v| v != first) {
            return Err(GatewayError::BadRequest(
                "Conflicting Content-Length headers.",
            ));
        }
    }
    Ok(())
}
