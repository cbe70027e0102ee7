//! What authgate does with the DDP messages it reads on a socket: logins are checked here and
//! reach the upstream as resumes authgate wrote, token methods are answered here, credential
//! methods refused; login results get authgate's token back and public settings are rewritten.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::dependencies::Realtime;
use super::frames::encode_to_client;
use super::frames::Framing;
use crate::ddp::{self, MethodCall};
use crate::error::meteor;
use crate::login::LoginRequest;
use crate::rocketchat::settings;
use crate::session::{Session, Token};
use crate::tokens;

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
pub(super) struct SocketState {
    /// authgate's token and the user id its session is stored under.
    pub(super) bound: Option<(Token, String)>,
    /// Login method ids sent upstream as checked resumes.
    pending_logins: HashMap<String, PendingLogin>,
    pending_settings: Vec<String>,
}

impl SocketState {
    /// A socket opened as `bound` (trusted-headers mode), or as nobody yet.
    pub(super) fn new(bound: Option<(Token, String)>) -> Self {
        SocketState {
            bound,
            ..SocketState::default()
        }
    }
}

/// What an upstream message turned into.
pub(super) enum FromUpstream {
    Unchanged,
    Rewritten,
    /// Not for the client: this frame goes upstream instead (a refused login, retried).
    Resend(Value),
}

/// What one client frame turns into.
#[derive(Default)]
pub(super) struct Routed {
    pub(super) to_upstream: Vec<Value>,
    pub(super) to_client: Vec<Value>,
}

/// Decides, message by message, what reaches the upstream and what is answered here.
pub(super) async fn route_client_messages(
    rt: &Realtime,
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
            "login" => match realtime_login(rt, state, &call, ip).await {
                Ok(checked) => routed.to_upstream.push(checked),
                Err(reply) => routed.to_client.push(reply),
            },
            "logout" => {
                if let Some((token, user_id)) = state.bound.take() {
                    if let Err(e) = rt.store.revoke(&user_id, &token.hash()).await {
                        tracing::warn!(error = %e, "could not revoke a session on realtime logout");
                    }
                }
                routed.to_upstream.push(message);
            }
            m if crate::tokens::method_operation(m).is_some() => {
                let (reply, rebound) = tokens::methods::token_method_on_socket(
                    &rt.tokens,
                    &call,
                    state.bound.as_ref(),
                    ip,
                )
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
    rt: &Realtime,
    state: &mut SocketState,
    call: &MethodCall,
    ip: IpAddr,
) -> Result<Value, Value> {
    let request = ddp::login_request(call);
    if request.is_none() {
        return Err(ddp::error_frame(&call.id, meteor::unrecognized_login()));
    }
    let is_resume = matches!(request, Some(LoginRequest::Resume(_)));
    let mut opened = match rt
        .login
        .log_in(request, ip, None, &http::HeaderValue::from_static("-"))
        .await
    {
        Ok(o) => o,
        Err(e) if is_resume && matches!(e, crate::error::GatewayError::LoginFailed) => {
            return Err(ddp::error_frame(&call.id, meteor::logged_out()))
        }
        Err(e) => {
            return Err(ddp::error_frame(&call.id, meteor::ddp_error(&e)));
        }
    };
    let checked = match rt
        .identity
        .socket_resume(rt.store.as_ref(), &mut opened, &call.id)
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

/// What an upstream text frame becomes for the client.
pub(super) enum ToClient {
    /// The frame as it came.
    Unchanged,
    /// A rewritten frame.
    Rewritten(String),
    /// Nothing: every message in it was for authgate.
    Nothing,
}

/// Puts authgate's token back into login results and rewrites public settings. Returns what
/// the client gets and the frames to send upstream again.
pub(super) async fn rewrite_upstream_text(
    rt: &Realtime,
    state: &mut SocketState,
    framing: Framing,
    text: &str,
) -> (ToClient, Vec<Value>) {
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
        return (ToClient::Unchanged, Vec::new());
    };
    let mut changed = false;
    let mut to_client = Vec::with_capacity(messages.len());
    let mut resend = Vec::new();
    for mut m in messages {
        match rewrite_server_message(rt, state, &mut m).await {
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
        return (ToClient::Unchanged, resend);
    }
    if to_client.is_empty() {
        return (ToClient::Nothing, resend);
    }
    (
        ToClient::Rewritten(encode_to_client(framing, &to_client).concat()),
        resend,
    )
}

async fn rewrite_server_message(
    rt: &Realtime,
    state: &mut SocketState,
    m: &mut Value,
) -> FromUpstream {
    let kind = m.get("msg").and_then(Value::as_str);
    let (is_result, is_changed) = (kind == Some("result"), kind == Some("changed"));
    if is_result {
        let id = m.get("id").map(Value::to_string).unwrap_or_default();
        if let Some(pending) = state.pending_logins.remove(&id) {
            return login_answered(rt, state, id, pending, m).await;
        }
        if let Some(pos) = state.pending_settings.iter().position(|p| *p == id) {
            state.pending_settings.remove(pos);
            if rt.rewrite_public_settings {
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
    if rt.rewrite_public_settings && is_changed && settings::rewrite_changed_event(m) {
        return FromUpstream::Rewritten;
    }
    FromUpstream::Unchanged
}

/// The upstream's answer to a checked resume. A success reaches the client as its login
/// result with authgate's token and session expiry. In `rocketchat` mode a refusal means
/// Rocket.Chat dropped its token (expiry, "log out other sessions", a password change):
/// the session is still good, so a fresh token is minted and the resume sent once more,
/// and the client only sees the answer to that.
async fn login_answered(
    rt: &Realtime,
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
            rt.identity
                .renew_refused(rt.store.as_ref(), &pending.token, &mut pending.session)
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
        let revoked = rt
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
