//! The realtime API (`/websocket`, SockJS `/sockjs/.../websocket`): WebSocket upgrades are
//! proxied only after the upstream answered 101, and every DDP frame is read on its way:
//! logins are authenticated by authgate and reach the upstream only as a resume authgate wrote
//! (in `rocketchat` mode with the Rocket.Chat token, renewed once if Rocket.Chat refuses it),
//! result frames get authgate's token back, public settings are rewritten, and a socket whose
//! session is revoked anywhere is closed within a second. In `trusted-headers` mode an upgrade
//! carrying a live session passes its identity on as `X-User-Id` / `X-Auth-Token`.
//!
//! Its handler value, [`Realtime`], holds what a socket uses over its lifetime: the login and
//! token handlers it shares with the REST doors, the upstream and its mode, the session store,
//! and the proxy for SockJS's plain `/info` request.

mod dependencies;
mod frames;
mod pump;
mod rewrite;

pub use dependencies::Realtime;
use frames::{framing, Framing};

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::access::RequestFacts;
use crate::credentials::{cookie_credentials, Credentials};
use crate::error::{full_body, Body, GatewayError};
use crate::handlers::Handled;
use crate::route::Route;
use crate::session::Session;

fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    req.method() == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
}

/// The realtime route's handler. The user a socket is opened as is returned for the access
/// line, whatever the answer.
pub(crate) async fn handle(
    rt: &Arc<Realtime>,
    req: Request<Incoming>,
    route: &Route,
    facts: &RequestFacts,
    creds: Option<Credentials>,
) -> Handled {
    let framing = match framing(&route.path) {
        Some(Some(f)) => f,
        // `/sockjs/info` tells the client which transports exist; it is plain HTTP.
        Some(None) => return rt.proxy.forward_plain(req, route, facts).await,
        None => return GatewayError::RealtimeUnavailable.into(),
    };
    if !is_upgrade(&req) {
        return GatewayError::BadRequest("Not a valid websocket request.").into();
    }
    let opened_as = match upgrade_session(rt, &req, creds).await {
        Ok(opened_as) => opened_as,
        Err(e) => return e.into(),
    };
    let user_id = opened_as
        .as_ref()
        .map(|(_, session)| session.client_user_id().to_string());
    let answer = upgrade(rt, req, route, facts, opened_as, framing).await;
    Handled::as_user(user_id, answer)
}

/// Upgrades the socket once the upstream agreed, then pumps its frames in a task of its own.
async fn upgrade(
    rt: &Arc<Realtime>,
    mut req: Request<Incoming>,
    route: &Route,
    facts: &RequestFacts,
    opened_as: Option<(Credentials, Arc<Session>)>,
    framing: Framing,
) -> Result<Response<Body>, GatewayError> {
    let identity = opened_as
        .as_ref()
        .map(|(creds, session)| crate::forward::Identity {
            user_id: session.client_user_id(),
            token: creds.token.as_str(),
            as_cookies: false,
        });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let client_ip = facts.client_ip;
    let mut headers = req.headers().clone();
    crate::forward::rewrite_request_headers(&mut headers, identity.as_ref(), &facts.origin());
    // The socket belongs to the session it was opened with: revoking it closes the socket.
    let bound = opened_as.map(|(creds, session)| (creds.token, session.user.id.clone()));
    headers.insert(crate::forward::X_REQUEST_ID, facts.request_id.clone());
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    // No compression: authgate must read every frame.
    headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    let mut upstream = rt.upstream.send_upgrade(headers, &route.forward).await?;
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = upstream.into_parts();
        crate::forward::rewrite_response_headers(&mut parts.headers);
        use http_body_util::BodyExt;
        return Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed_unsync(),
        ));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut upstream);
    let mut answer = Response::new(full_body(bytes::Bytes::new()));
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for name in [header::SEC_WEBSOCKET_ACCEPT, header::SEC_WEBSOCKET_PROTOCOL] {
        if let Some(v) = upstream.headers().get(&name) {
            answer.headers_mut().insert(name, v.clone());
        }
    }
    answer
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    answer
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let realtime = rt.clone();
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
            return;
        };
        let client = WebSocketStream::from_raw_socket(
            TokioIo::new(client),
            Role::Server,
            Some(pump::client_config()),
        )
        .await;
        let upstream = WebSocketStream::from_raw_socket(
            TokioIo::new(upstream),
            Role::Client,
            Some(pump::upstream_config()),
        )
        .await;
        pump::pump(&realtime, client, upstream, framing, client_ip, bound).await;
    });
    Ok(answer)
}

/// `trusted-headers` mode: the live session an upgrade request carries (identity headers,
/// else `rc_uid` / `rc_token` cookies), which the backend then learns like on any proxied
/// request. Credentials that name no live session are stripped, never forwarded. In
/// `rocketchat` mode Rocket.Chat learns a socket's user only from a DDP login.
async fn upgrade_session(
    rt: &Realtime,
    req: &Request<Incoming>,
    creds: Option<Credentials>,
) -> Result<Option<(Credentials, Arc<Session>)>, GatewayError> {
    if !rt.identity.binds_sockets_by_headers() {
        return Ok(None);
    }
    let Some(creds) = creds.or_else(|| cookie_credentials(req.headers(), None)) else {
        return Ok(None);
    };
    Ok(rt.sessions.find(&creds).await?.map(|s| (creds, s)))
}
