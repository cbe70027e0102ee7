//! The realtime API (`/websocket`, SockJS `/sockjs/.../websocket`): WebSocket upgrades are
//! proxied only after the upstream answered 101, and every DDP frame is read on its way:
//! logins are authenticated by authgate (resumes checked and, in `rocketchat` mode, swapped to
//! the Rocket.Chat token), result frames get authgate's token back, public settings are
//! rewritten, and a socket whose session is revoked anywhere is closed within a second.

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
use crate::ddp::{self, MethodCall};
use crate::error::{full_body, Body, GatewayError};
use crate::gateway::Gateway;
use crate::login::LoginRequest;
use crate::rocketchat::settings;
use crate::route::Route;
use crate::session::Token;

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

fn logged_out_error() -> Value {
    json!({"isClientSafe": true, "error": 403, "reason": "You've been logged out by the server. Please log in again.",
           "message": "You've been logged out by the server. Please log in again. [403]", "errorType": "Meteor.Error"})
}

fn bad_login_error() -> Value {
    json!({"isClientSafe": true, "error": 400, "reason": "Unrecognized options for login request",
           "message": "Unrecognized options for login request [400]", "errorType": "Meteor.Error"})
}

/// Per-socket state: who it is logged in as, and which answers to rewrite.
#[derive(Default)]
struct SocketState {
    /// authgate's token and the user id its session is stored under.
    bound: Option<(Token, String)>,
    /// Login method ids sent upstream as resumes, with the session to bind on success.
    pending_logins: HashMap<String, (Token, String)>,
    pending_settings: Vec<String>,
}

/// What one client frame turns into.
#[derive(Default)]
struct Routed {
    to_upstream: Vec<Value>,
    to_client: Vec<Value>,
}

impl Gateway {
    pub async fn realtime(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        route: &Route,
        facts: &mut RequestFacts,
    ) -> Result<Response<Body>, GatewayError> {
        let framing = match framing(&route.path) {
            Some(Some(f)) => f,
            // `/sockjs/info` tells the client which transports exist; it is plain HTTP.
            Some(None) => return self.forward_plain(req, route, facts).await,
            None => return Err(GatewayError::RealtimeUnavailable),
        };
        if !is_upgrade(&req) {
            return Err(GatewayError::BadRequest("Not a valid websocket request."));
        }
        let client_upgrade = hyper::upgrade::on(&mut req);
        let client_ip = facts.client_ip;
        let mut headers = req.headers().clone();
        crate::forward::rewrite_request_headers(&mut headers, None, &facts.origin());
        headers.insert(crate::forward::X_REQUEST_ID, facts.request_id.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        // No compression: authgate must read every frame.
        headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
        let mut upstream = self.upstream.send_upgrade(headers, &route.forward).await?;
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
        let gateway = self.clone();
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                return;
            };
            let client =
                WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
            let upstream =
                WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, None).await;
            gateway.pump(client, upstream, framing, client_ip).await;
        });
        Ok(answer)
    }

    async fn pump<C, U>(
        &self,
        client: WebSocketStream<C>,
        upstream: WebSocketStream<U>,
        framing: Framing,
        ip: IpAddr,
    ) where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut client_tx, mut client_rx) = client.split();
        let (mut upstream_tx, mut upstream_rx) = upstream.split();
        let mut state = SocketState::default();
        let mut check = tokio::time::interval(self.config.realtime.revocation_check);
        loop {
            tokio::select! {
                msg = client_rx.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        let Some(messages) = decode(framing, text.as_str()) else {
                            // Not DDP: nothing authgate can vouch for reaches the upstream.
                            break;
                        };
                        let routed = self.route_client_messages(&mut state, messages, ip).await;
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
                        let out = self.rewrite_upstream_text(&mut state, framing, text.as_str());
                        if client_tx.send(Message::text(out)).await.is_err() { break; }
                    }
                    Some(Ok(Message::Close(frame))) => { let _ = client_tx.send(Message::Close(frame)).await; break; }
                    Some(Ok(other)) => { if client_tx.send(other).await.is_err() { break; } }
                    Some(Err(_)) | None => break,
                },
                _ = check.tick(), if state.bound.is_some() => {
                    let (token, user_id) = state.bound.clone().expect("checked above");
                    if let Ok(None) = self.store.get(&user_id, &token.hash()).await {
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
        &self,
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
                "login" => match self.realtime_login(state, &call, ip).await {
                    Ok(Some(rewritten)) => routed.to_upstream.push(rewritten),
                    Ok(None) => {}
                    Err(reply) => routed.to_client.push(reply),
                },
                "logout" => {
                    if let Some((token, user_id)) = state.bound.take() {
                        if let Err(e) = self.store.revoke(&user_id, &token.hash()).await {
                            tracing::warn!(error = %e, "could not revoke a session on realtime logout");
                        }
                    }
                    routed.to_upstream.push(message);
                }
                "public-settings/get" => {
                    state.pending_settings.push(id_key);
                    routed.to_upstream.push(message);
                }
                m if crate::route::is_credential_method(m) => {
                    let error = json!({"isClientSafe": true, "error": "error-not-allowed", "reason": "Not allowed", "message": "Not allowed [error-not-allowed]", "errorType": "Meteor.Error"});
                    routed.to_client.push(ddp::error_frame(&call.id, error));
                }
                _ => routed.to_upstream.push(message),
            }
        }
        routed
    }

    /// A DDP `login`: `Ok(Some(frame))` goes upstream (a resume Rocket.Chat understands),
    /// `Ok(None)` was answered already, `Err(frame)` is the answer to send the client.
    async fn realtime_login(
        &self,
        state: &mut SocketState,
        call: &MethodCall,
        ip: IpAddr,
    ) -> Result<Option<Value>, Value> {
        let request = ddp::login_request(call);
        if request.is_none() {
            return Err(ddp::error_frame(&call.id, bad_login_error()));
        }
        let is_resume = matches!(request, Some(LoginRequest::Resume(_)));
        let mut opened = match self
            .log_in(request, ip, &http::HeaderValue::from_static("-"))
            .await
        {
            Ok(o) => o,
            Err(e) if is_resume && matches!(e, crate::error::GatewayError::LoginFailed) => {
                return Err(ddp::error_frame(&call.id, logged_out_error()))
            }
            Err(e) => {
                let error = ddp::login_error(&e).unwrap_or_else(|| json!({"isClientSafe": true, "error": 503, "reason": "Service unavailable", "message": "Service unavailable [503]", "errorType": "Meteor.Error"}));
                return Err(ddp::error_frame(&call.id, error));
            }
        };
        if !self.rocketchat_mode() {
            // The upstream trusts authgate: a checked resume passes on as it is, a password
            // login is answered here with the session it opened.
            state.bound = Some((opened.token.clone(), opened.session.user.id.clone()));
            if is_resume {
                return Ok(Some(
                    json!({"msg": "method", "id": call.id, "method": "login", "params": [{"resume": opened.token.as_str()}]}),
                ));
            }
            let result = json!({"id": opened.session.client_user_id(), "token": opened.token.as_str(), "tokenExpires": {"$date": opened.session.expires_ms}, "type": "password"});
            return Err(ddp::result_frame(&call.id, result));
        }
        let rc_token = match self
            .upstream_token(&opened.token, &mut opened.session, false)
            .await
        {
            Ok(t) => t,
            Err(_) => return Err(ddp::error_frame(&call.id, logged_out_error())),
        };
        state.pending_logins.insert(
            call.id.to_string(),
            (opened.token.clone(), opened.session.user.id.clone()),
        );
        Ok(Some(
            json!({"msg": "method", "id": call.id, "method": "login", "params": [{"resume": rc_token}]}),
        ))
    }

    /// Puts authgate's token back into login results and rewrites public settings.
    fn rewrite_upstream_text(
        &self,
        state: &mut SocketState,
        framing: Framing,
        text: &str,
    ) -> String {
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
        let Some(mut messages) = decoded else {
            return text.to_string();
        };
        let mut changed = false;
        for m in messages.iter_mut() {
            changed |= self.rewrite_server_message(state, m);
        }
        if !changed {
            return text.to_string();
        }
        encode_to_client(framing, &messages).concat()
    }

    fn rewrite_server_message(&self, state: &mut SocketState, m: &mut Value) -> bool {
        if m.get("msg") == Some(&json!("result")) {
            let id = m.get("id").map(Value::to_string).unwrap_or_default();
            if let Some((token, user_id)) = state.pending_logins.remove(&id) {
                if m.get("result").and_then(|r| r.get("token")).is_some() {
                    m["result"]["token"] = json!(token.as_str());
                    state.bound = Some((token, user_id));
                } else {
                    state.bound = None;
                }
                return true;
            }
            if let Some(pos) = state.pending_settings.iter().position(|p| *p == id) {
                state.pending_settings.remove(pos);
                if self.config.upstream.rewrite_public_settings {
                    if let Some(result) = m.get_mut("result") {
                        settings::rewrite_method_result(result, crate::session::now_unix_ms());
                        return true;
                    }
                }
            }
            // Never let an upstream token out: results of other methods are not touched,
            // but a login result authgate did not ask for is dropped to an error.
            if m.get("result").and_then(|r| r.get("token")).is_some()
                && m["result"].get("tokenExpires").is_some()
            {
                *m = ddp::error_frame(&m["id"].clone(), logged_out_error());
                return true;
            }
        }
        if self.config.upstream.rewrite_public_settings && m.get("msg") == Some(&json!("changed")) {
            let before = m.clone();
            settings::rewrite_changed_event(m);
            return *m != before;
        }
        false
    }
}
