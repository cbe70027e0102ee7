//! DDP (Meteor's protocol) as Rocket.Chat clients speak it: method frames, result frames and
//! the login method, whether it arrives over REST (`method.call[Anon]/login`) or a WebSocket.

use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::login::{self, LoginRequest};

/// A `{"msg": "method"}` frame.
#[derive(Debug, Clone)]
pub struct MethodCall {
    pub id: Value,
    pub method: String,
    pub params: Vec<Value>,
}

pub fn parse_method(frame: &Value) -> Option<MethodCall> {
    if frame.get("msg")? != "method" {
        return None;
    }
    Some(MethodCall {
        id: frame.get("id").cloned().unwrap_or(Value::Null),
        method: frame.get("method")?.as_str()?.to_string(),
        params: frame
            .get("params")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    })
}

/// The login shape in a `login` method's first parameter; `None` for anything unusable.
pub fn login_request(call: &MethodCall) -> Option<LoginRequest> {
    match call.params.as_slice() {
        [Value::Object(o)] => login::interpret(o, None),
        _ => None,
    }
}

pub fn result_frame(id: &Value, result: Value) -> Value {
    json!({"msg": "result", "id": id, "result": result})
}

pub fn error_frame(id: &Value, error: Value) -> Value {
    json!({"msg": "result", "id": id, "error": error})
}

/// The largest DDP call over REST authgate reads to check it.
const MAX_METHOD_CALL: usize = 1024 * 1024;

/// The method a `method.call/<name>` or `method.callAnon/<name>` URL names (clients write `/`
/// in method names as `:`), from the canonical path, under any API version prefix.
pub fn rest_method_name(canonical: &str) -> Option<String> {
    let name = crate::route::api_endpoint_name(canonical.trim_end_matches('/'))?;
    let prefix = ["method.callanon/", "method.call/"].into_iter().find(|p| {
        name.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })?;
    Some(name[prefix.len()..].to_string())
}

/// Reads a `{"message": "<DDP method frame>"}` body and lets it through only when the frame
/// calls the method its URL names: otherwise a URL authgate lets pass could carry a `login`, a
/// registration or a password reset that the upstream would run.
pub async fn checked_method_call(
    body: Incoming,
    url_method: &str,
) -> Result<bytes::Bytes, GatewayError> {
    use http_body_util::{BodyExt, Limited};
    let bytes = Limited::new(body, MAX_METHOD_CALL)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                GatewayError::LoginBodyTooLarge
            } else {
                GatewayError::BadRequest("The request body could not be read.")
            }
        })?;
    let bytes = bytes.to_bytes();
    let frame_method = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("message")?
                .as_str()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
        })
        .and_then(|frame| frame.get("method")?.as_str().map(str::to_string));
    match frame_method {
        Some(m) if m == url_method || m == url_method.replace(':', "/") => Ok(bytes),
        _ => Err(GatewayError::BadRequest(
            "The method call does not match its URL.",
        )),
    }
}

/// The `login` frame authgate sends upstream for a login it checked: a resume with `token`
/// (authgate's own in `trusted-headers` mode, with the session's `userId`; the Rocket.Chat
/// token in `rocketchat` mode). A client's own login frame never reaches the upstream, so every
/// `login` a backend receives on a socket is one of these.
pub fn checked_resume(id: &Value, token: &str, user_id: Option<&str>) -> Value {
    let mut params = json!({"resume": token});
    if let Some(user_id) = user_id {
        params["userId"] = json!(user_id);
    }
    json!({"msg": "method", "id": id, "method": "login", "params": [params]})
}
