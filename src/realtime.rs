//! The realtime API (`/websocket`, SockJS `/sockjs/.../websocket`): WebSocket upgrades are
//! proxied only after the upstream answered 101, and every DDP frame is read on its way:
//! logins are authenticated by authgate and reach the upstream only as a resume authgate wrote
//! (in `rocketchat` mode with the Rocket.Chat token, renewed once if Rocket.Chat refuses it),
//! result frames get authgate's token back, public settings are rewritten, and a socket whose
//! session is revoked anywhere is closed within a second. In `trusted-headers` mode an upgrade
//! carrying a live session passes its identity on as `X-User-Id` / `X-Auth-Token`.
//!
//! Unlike the other handlers it takes the whole [`Gateway`]: over its lifetime a socket runs
//! logins (`login_flow`), token methods (`tokens`), forwarding and the public-settings rewrite.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::access::RequestFacts;
use crate::credentials::{cookie_credentials, Credentials};
use crate::ddp::{self, MethodCall};
use crate::error::{full_body, meteor, Body, GatewayError};
use crate::gateway::Gateway;
use crate::handlers::Handled;
use crate::login::LoginRequest;
use crate::login_flow;
use crate::rocketchat::settings;
use crate::route::Route;
use crate::session::{Session, Token};
use crate::tokens;

/// How a realtime path frames DDP messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One DDP message per WebSocket text frame.
    Raw,
    /// SockJS: the client sends `["msg", ...]`, the server `o`, `h`, `a["msg", ...]`, `c[...]`.
    SockJs,
}

/// What a realtime path is; `None` for SockJS's HTTP transports, which are refused so that
/// every DDP frame passes through a WebSocket authgate reads.
pub fn framing(canonical: &str) -> Option<Option<Framing>> {
    let c = canonical.to_ascii_lowercase();
    let c = c.trim_end_matches('/');
    if c == "/websocket" || c == "/sockjs/websocket" {
        return Some(Some(Framing::Raw));
    }
    if c == "/sockjs/info" {
        return Some(None);
    }
    let parts: Vec<&str> = c.split('/').collect();
    // ["", "sockjs", server, session, "websocket"]
    if parts.len() == 5 && parts[1] == "sockjs" && parts[4] == "websocket" {
        return Some(Some(Framing::SockJs));
    }
    None
}

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

/// Decodes the DDP messages in one text frame; `None` for anything but the shapes clients send.
/// Every message must be a single JSON object: a server may take an array (or a string holding
/// a frame) as a batch of messages, and those would pass unread.
fn decode(framing: Framing, text: &str) -> Option<Vec<Value>> {
    let object = |v: Value| v.is_object().then_some(v);
    match framing {
        Framing::Raw => serde_json::from_str(text)
            .ok()
            .and_then(object)
            .map(|v| vec![v]),
        // SockJS: a JSON array of strings, each holding one message. (A SockJS server also takes
        // a lone string; no client sends one, so it is refused with the rest.)
        Framing::SockJs => {
            let strings: Vec<String> = serde_json::from_str(text).ok()?;
            strings
                .iter()
                .map(|s| serde_json::from_str(s).ok().and_then(object))
                .collect()
        }
    }
}

fn encode_to_upstream(framing: Framing, messages: &[Value]) -> String {
    match framing {
        Framing::Raw => messages[0].to_string(),
        Framing::SockJs => {
            Value::Array(messages.iter().map(|m| json!(m.to_string())).collect()).to_string()
        }
    }
}

fn encode_to_client(framing: Framing, messages: &[Value]) -> Vec<String> {
    match framing {
        Framing::Raw => messages.iter().map(Value::to_string).collect(),
        Framing::SockJs => vec![format!(
            "a{}",
            Value::Array(messages.iter().map(|m| json!(m.to_string())).collect())
        )],
    }
}

/// A login sent upstream as a checked resume, waiting for its answer.
struct PendingLogin {
    token: Token,
    session: Session,
    /// `password` or `resume`: what the client did, as its login result says.
    kind: &'static str,
    /// Already resent once with a freshly minted Rocket.Chat token.
    retried: bool,
}

/// Per-socket state: who it is logged in as, and which answers to rewrite.
#[derive(Default)]
struct SocketState {
    /// authgate's token and the user id its session is stored under.
    bound: Option<(Token, String)>,
    /// Login method ids sent upstream as checked resumes.
    pending_logins: HashMap<String, PendingLogin>,
    pending_settings: Vec<String>,
}

/// What an upstream message turned into.
enum FromUpstream {
    Unchanged,
    Rewritten,
    /// Not for the client: this frame goes upstream instead (a refused login, retried).
    Resend(Value),
}

/// What one client frame turns into.
#[derive(Default)]
struct Routed {
    to_upstream: Vec<Value>,
    to_client: Vec<Value>,
}

/// The realtime route's handler (the whole gateway, see the module doc). The user a socket is
/// opened as is returned for the access line, whatever the answer.
pub(crate) async fn handle(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    route: &Route,
    facts: &RequestFacts,
    creds: Option<Credentials>,
) -> Handled {
    let framing = match framing(&route.path) {
        Some(Some(f)) => f,
        // `/sockjs/info` tells the client which transports exist; it is plain HTTP.
        Some(None) => return gw.proxy.forward_plain(req, route, facts).await,
        None => return GatewayError::RealtimeUnavailable.into(),
    };
    if !is_upgrade(&req) {
        return GatewayError::BadRequest("Not a valid websocket request.").into();
    }
    let opened_as = match upgrade_session(gw, &req, creds).await {
        Ok(opened_as) => opened_as,
        Err(e) => return e.into(),
    };
    let user_id = opened_as
        .as_ref()
        .map(|(_, session)| session.client_user_id().to_string());
    let answer = upgrade(gw, req, route, facts, opened_as, framing).await;
    Handled::as_user(user_id, answer)
}

/// Upgrades the socket once the upstream agreed, then pumps its frames in a task of its own.
async fn upgrade(
    gw: &Arc<Gateway>,
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
    let mut upstream = gw.upstream.send_upgrade(headers, &route.forward).await?;
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
    let gateway = gw.clone();
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
            return;
        };
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        let upstream =
            WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, None).await;
        pump(&gateway, client, upstream, framing, client_ip, bound).await;
    });
    Ok(answer)
}

/// `trusted-headers` mode: the live session an upgrade request carries (identity headers,
/// else `rc_uid` / `rc_token` cookies), which the backend then learns like on any proxied
/// request. Credentials that name no live session are stripped, never forwarded. In
/// `rocketchat` mode Rocket.Chat learns a socket's user only from a DDP login.
async fn upgrade_session(
    gw: &Gateway,
    req: &Request<Incoming>,
    creds: Option<Credentials>,
) -> Result<Option<(Credentials, Arc<Session>)>, GatewayError> {
    if !gw.identity.binds_sockets_by_headers() {
        return Ok(None);
    }
    let Some(creds) = creds.or_else(|| cookie_credentials(req.headers(), None)) else {
        return Ok(None);
    };
    Ok(gw.session_for(&creds).await?.map(|s| (creds, s)))
}

async fn pump<C, U>(
    gw: &Gateway,
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
    framing: Framing,
    ip: IpAddr,
    bound: Option<(Token, String)>,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let mut state = SocketState {
        bound,
        ..SocketState::default()
    };
    let mut check = tokio::time::interval(gw.config.realtime.revocation_check);
    loop {
        tokio::select! {
            msg = client_rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Some(messages) = decode(framing, text.as_str()) else {
                        // Not DDP: nothing authgate can vouch for reaches the upstream.
                        break;
                    };
                    let routed = route_client_messages(gw, &mut state, messages, ip).await;
                    if !routed.to_client.is_empty() {
                        for out in encode_to_client(framing, &routed.to_client) {
                            if client_tx.send(Message::text(out)).await.is_err() { return; }
                        }
                    }
                    if !routed.to_upstream.is_empty() && upstream_tx.send(Message::text(encode_to_upstream(framing, &routed.to_upstream))).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(p))) => { let _ = upstream_tx.send(Message::Ping(p)).await; }
                Some(Ok(Message::Pong(p))) => { let _ = upstream_tx.send(Message::Pong(p)).await; }
                Some(Ok(Message::Close(frame))) => { let _ = upstream_tx.send(Message::Close(frame)).await; break; }
                // Binary frames are not DDP.
                Some(Ok(_)) | Some(Err(_)) | None => break,
            },
            msg = upstream_rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let (out, resend) = rewrite_upstream_text(gw, &mut state, framing, text.as_str()).await;
                    for frame in resend {
                        if upstream_tx.send(Message::text(encode_to_upstream(framing, &[frame]))).await.is_err() { return; }
                    }
                    if let Some(out) = out {
                        if client_tx.send(Message::text(out)).await.is_err() { break; }
                    }
                }
                Some(Ok(Message::Close(frame))) => { let _ = client_tx.send(Message::Close(frame)).await; break; }
                Some(Ok(other)) => { if client_tx.send(other).await.is_err() { break; } }
                Some(Err(_)) | None => break,
            },
            _ = check.tick(), if state.bound.is_some() => {
                let (token, user_id) = state.bound.clone().expect("checked above");
                if let Ok(None) = gw.store.get(&user_id, &token.hash()).await {
                    let close = CloseFrame { code: CloseCode::Library(4001), reason: "You've been logged out by the server.".into() };
                    let _ = client_tx.send(Message::Close(Some(close))).await;
                    break;
                }
            }
        }
    }
    let _ = client_tx.close().await;
    let _ = upstream_tx.close().await;
}

/// Decides, message by message, what reaches the upstream and what is answered here.
async fn route_client_messages(
    gw: &Gateway,
    state: &mut SocketState,
    messages: Vec<Value>,
    ip: IpAddr,
) -> Routed {
    let mut routed = Routed::default();
    for message in messages {
        let Some(call) = ddp::parse_method(&message) else {
            routed.to_upstream.push(message);
            continue;
        };
        let id_key = call.id.to_string();
        match call.method.as_str() {
            "login" => match realtime_login(gw, state, &call, ip).await {
                Ok(checked) => routed.to_upstream.push(checked),
                Err(reply) => routed.to_client.push(reply),
            },
            "logout" => {
                if let Some((token, user_id)) = state.bound.take() {
                    if let Err(e) = gw.store.revoke(&user_id, &token.hash()).await {
                        tracing::warn!(error = %e, "could not revoke a session on realtime logout");
                    }
                }
                routed.to_upstream.push(message);
            }
            m if crate::tokens::method_operation(m).is_some() => {
                let (reply, rebound) =
                    tokens::methods::token_method_on_socket(gw, &call, state.bound.as_ref(), ip)
                        .await;
                if rebound.is_some() {
                    state.bound = rebound;
                }
                routed.to_client.push(reply);
            }
            "public-settings/get" => {
                state.pending_settings.push(id_key);
                routed.to_upstream.push(message);
            }
            m if crate::route::is_credential_method(m) => {
                routed
                    .to_client
                    .push(ddp::error_frame(&call.id, meteor::not_allowed()));
            }
            _ => routed.to_upstream.push(message),
        }
    }
    routed
}

/// A DDP `login`: `Ok(frame)` is the checked resume that goes upstream, `Err(frame)` the
/// answer to send the client. The client's password never leaves authgate.
async fn realtime_login(
    gw: &Gateway,
    state: &mut SocketState,
    call: &MethodCall,
    ip: IpAddr,
) -> Result<Value, Value> {
    let request = ddp::login_request(call);
    if request.is_none() {
        return Err(ddp::error_frame(&call.id, meteor::unrecognized_login()));
    }
    let is_resume = matches!(request, Some(LoginRequest::Resume(_)));
    let mut opened =
        match login_flow::log_in(gw, request, ip, None, &http::HeaderValue::from_static("-")).await
        {
            Ok(o) => o,
            Err(e) if is_resume && matches!(e, crate::error::GatewayError::LoginFailed) => {
                return Err(ddp::error_frame(&call.id, meteor::logged_out()))
            }
            Err(e) => {
                return Err(ddp::error_frame(&call.id, meteor::ddp_error(&e)));
            }
        };
    let checked = match gw
        .identity
        .socket_resume(gw.store.as_ref(), &mut opened, &call.id)
        .await
    {
        Ok(checked) => checked,
        Err(_) => return Err(ddp::error_frame(&call.id, meteor::logged_out())),
    };
    state.pending_logins.insert(
        call.id.to_string(),
        PendingLogin {
            token: opened.token,
            session: opened.session,
            kind: if opened.resumed { "resume" } else { "password" },
            retried: false,
        },
    );
    Ok(checked)
}

/// Puts authgate's token back into login results and rewrites public settings. Returns
/// the text for the client (`None` when nothing in it is for the client) and the frames to
/// send upstream again.
async fn rewrite_upstream_text(
    gw: &Gateway,
    state: &mut SocketState,
    framing: Framing,
    text: &str,
) -> (Option<String>, Vec<Value>) {
    let decoded = match framing {
        Framing::Raw => serde_json::from_str::<Value>(text).ok().map(|v| vec![v]),
        Framing::SockJs => text
            .strip_prefix('a')
            .and_then(|rest| serde_json::from_str::<Vec<String>>(rest).ok())
            .map(|strings| {
                strings
                    .iter()
                    .map(|s| serde_json::from_str(s).unwrap_or(Value::String(s.clone())))
                    .collect()
            }),
    };
    let Some(messages) = decoded else {
        return (Some(text.to_string()), Vec::new());
    };
    let mut changed = false;
    let mut to_client = Vec::with_capacity(messages.len());
    let mut resend = Vec::new();
    for mut m in messages {
        match rewrite_server_message(gw, state, &mut m).await {
            FromUpstream::Unchanged => to_client.push(m),
            FromUpstream::Rewritten => {
                changed = true;
                to_client.push(m);
            }
            FromUpstream::Resend(frame) => {
                changed = true;
                resend.push(frame);
            }
        }
    }
    if !changed {
        return (Some(text.to_string()), resend);
    }
    if to_client.is_empty() {
        return (None, resend);
    }
    (Some(encode_to_client(framing, &to_client).concat()), resend)
}

async fn rewrite_server_message(
    gw: &Gateway,
    state: &mut SocketState,
    m: &mut Value,
) -> FromUpstream {
    if m.get("msg") == Some(&json!("result")) {
        let id = m.get("id").map(Value::to_string).unwrap_or_default();
        if let Some(pending) = state.pending_logins.remove(&id) {
            return login_answered(gw, state, id, pending, m).await;
        }
        if let Some(pos) = state.pending_settings.iter().position(|p| *p == id) {
            state.pending_settings.remove(pos);
            if gw.config.upstream.rewrite_public_settings {
                if let Some(result) = m.get_mut("result") {
                    settings::rewrite_method_result(result, crate::session::now_unix_ms());
                    return FromUpstream::Rewritten;
                }
            }
        }
        // Never let an upstream token out: results of other methods are not touched,
        // but a login result authgate did not ask for is dropped to an error.
        if m.get("result").and_then(|r| r.get("token")).is_some()
            && m["result"].get("tokenExpires").is_some()
        {
            *m = ddp::error_frame(&m["id"].clone(), meteor::logged_out());
            return FromUpstream::Rewritten;
        }
    }
    if gw.config.upstream.rewrite_public_settings && m.get("msg") == Some(&json!("changed")) {
        let before = m.clone();
        settings::rewrite_changed_event(m);
        if *m != before {
            return FromUpstream::Rewritten;
        }
    }
    FromUpstream::Unchanged
}

/// The upstream's answer to a checked resume. A success reaches the client as its login
/// result with authgate's token and session expiry. In `rocketchat` mode a refusal means
/// Rocket.Chat dropped its token (expiry, "log out other sessions", a password change):
/// the session is still good, so a fresh token is minted and the resume sent once more,
/// and the client only sees the answer to that.
async fn login_answered(
    gw: &Gateway,
    state: &mut SocketState,
    id_key: String,
    mut pending: PendingLogin,
    m: &mut Value,
) -> FromUpstream {
    if m.get("result").is_some_and(Value::is_object) {
        let result = &mut m["result"];
        result["id"] = json!(pending.session.client_user_id());
        result["token"] = json!(pending.token.as_str());
        result["tokenExpires"] = json!({"$date": pending.session.expires_ms});
        result["type"] = json!(pending.kind);
        state.bound = Some((pending.token, pending.session.user.id));
        return FromUpstream::Rewritten;
    }
    let renewed = match pending.retried {
        true => None,
        false => {
            gw.identity
                .renew_refused(gw.store.as_ref(), &pending.token, &mut pending.session)
                .await
        }
    };
    if let Some(renewed) = renewed {
        match renewed {
            Ok(fresh) => {
                let frame = ddp::checked_resume(&m["id"], &fresh, None);
                pending.retried = true;
                state.pending_logins.insert(id_key, pending);
                return FromUpstream::Resend(frame);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew a refused upstream token on a socket");
            }
        }
    }
    // The socket stays whoever it was before (the upstream did not switch it), so its
    // session's revocation still closes it. A session opened for this login is dropped:
    // the client never learns its token.
    if pending.kind == "password" {
        let revoked = gw
            .store
            .revoke(&pending.session.user.id, &pending.token.hash())
            .await;
        if let Err(e) = revoked {
            tracing::warn!(error = %e, "could not revoke the session of a refused socket login");
        }
    }
    if m.get("result").is_some() {
        // Neither an error nor a login result: nothing the client could use.
        *m = ddp::error_frame(&m["id"].clone(), meteor::logged_out());
    }
    FromUpstream::Rewritten
}
