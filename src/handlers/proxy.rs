//! The proxied request: forwarded with the identity the upstream mode gives a live session,
//! or without any (public routes, anonymous forwarding). Public settings are rewritten on the
//! way back, and a DDP call over REST is checked against its URL before it goes up.

use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::RequestFacts;
use crate::credentials::Credentials;
use crate::ddp;
use crate::error::{Body, GatewayError};
use crate::forward;
use crate::gateway::Gateway;
use crate::rocketchat::settings;
use crate::route::Route;
use crate::session::Session;

/// Forwards with a live session: the upstream learns the user the way its mode says.
pub(crate) async fn forward_authenticated(
    gw: &Gateway,
    req: Request<Incoming>,
    route: &Route,
    facts: &mut RequestFacts,
    creds: &Credentials,
    session: &Session,
) -> Result<Response<Body>, GatewayError> {
    if gw.identity.renews_refused_tokens() {
        // Boxed: the renewing path is the larger future, and the plain one is the hot path.
        return Box::pin(forward_renewing(gw, req, route, facts, creds, session)).await;
    }
    let credential = gw
        .identity
        .credential(gw.store.as_ref(), creds, session)
        .await?;
    let identity = forward::Identity {
        user_id: credential.user_id,
        token: &credential.token,
        as_cookies: credential.as_cookies,
    };
    forward(gw, req, route, facts, Some(identity)).await
}

/// Forwards with the session's upstream token; a request the upstream refused with 401 is sent
/// once more with a renewed token, when it can be sent again.
async fn forward_renewing(
    gw: &Gateway,
    req: Request<Incoming>,
    route: &Route,
    facts: &mut RequestFacts,
    creds: &Credentials,
    session: &Session,
) -> Result<Response<Body>, GatewayError> {
    let credential = gw
        .identity
        .credential(gw.store.as_ref(), creds, session)
        .await?;
    let replay = is_replayable(&req).then(|| (req.method().clone(), req.headers().clone()));
    let identity = forward::Identity {
        user_id: credential.user_id,
        token: &credential.token,
        as_cookies: credential.as_cookies,
    };
    let first = forward(gw, req, route, facts, Some(identity)).await?;
    let Some((method, headers)) = replay.filter(|_| first.status() == StatusCode::UNAUTHORIZED)
    else {
        return Ok(first);
    };
    send_renewed(gw, method, headers, route, facts, creds, session, first).await
}

/// A GET, HEAD or OPTIONS without a body: sending it twice changes nothing.
fn is_replayable(req: &Request<Incoming>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v == "0")
}

/// Sends a refused request again with a renewed upstream token (`refused` stands when the mode
/// has none to renew).
#[allow(clippy::too_many_arguments)]
async fn send_renewed(
    gw: &Gateway,
    method: Method,
    mut headers: HeaderMap,
    route: &Route,
    facts: &RequestFacts,
    creds: &Credentials,
    session: &Session,
    refused: Response<Body>,
) -> Result<Response<Body>, GatewayError> {
    let mut session = Session::clone(session);
    let fresh = match gw
        .identity
        .renew_refused(gw.store.as_ref(), &creds.token, &mut session)
        .await
    {
        Some(fresh) => fresh?,
        None => return Ok(refused),
    };
    forward::rewrite_request_headers(
        &mut headers,
        Some(&forward::Identity {
            user_id: session.client_user_id(),
            token: &fresh,
            as_cookies: creds.from_cookies,
        }),
        &facts.origin(),
    );
    headers.insert(forward::X_REQUEST_ID, facts.request_id.clone());
    gw.upstream
        .send_buffered(method, headers, Bytes::new(), &route.forward)
        .await
}

pub(crate) async fn forward(
    gw: &Gateway,
    mut req: Request<Incoming>,
    route: &Route,
    facts: &mut RequestFacts,
    identity: Option<forward::Identity<'_>>,
) -> Result<Response<Body>, GatewayError> {
    forward::rewrite_request_headers(req.headers_mut(), identity.as_ref(), &facts.origin());
    let settings = match gw.config.upstream.rewrite_public_settings {
        true => settings::answer_kind(&route.path),
        false => None,
    };
    if settings.is_some() {
        // The answer is rewritten, so it must come uncompressed.
        req.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    // Replaces whatever the client sent: the upstream logs the same id as the gateway.
    req.headers_mut()
        .insert(forward::X_REQUEST_ID, facts.request_id.clone());
    let resp = match ddp::rest_method_name(&route.path) {
        // A DDP call over REST: the method that runs is the one in the body, so the body is
        // read and checked against the URL before anything is sent.
        Some(url_method) => {
            let (parts, body) = req.into_parts();
            let bytes = Box::pin(ddp::checked_method_call(body, &url_method)).await?;
            let started = Instant::now();
            let resp = Box::pin(gw.upstream.send_buffered(
                parts.method,
                parts.headers,
                bytes,
                &route.forward,
            ))
            .await;
            facts.upstream = Some(started.elapsed());
            resp
        }
        None => {
            let started = Instant::now();
            let resp = gw.upstream.send(req, &route.forward).await;
            facts.upstream = Some(started.elapsed());
            resp
        }
    };
    let resp = resp?;
    match settings {
        Some(kind) => Box::pin(settings::rewrite_response(resp, kind)).await,
        None => Ok(resp),
    }
}

/// Forwards without any identity (the client's identity headers are stripped).
pub(crate) async fn forward_plain(
    gw: &Gateway,
    req: Request<Incoming>,
    route: &Route,
    facts: &mut RequestFacts,
) -> Result<Response<Body>, GatewayError> {
    forward(gw, req, route, facts, None).await
}
