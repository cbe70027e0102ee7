//! Token management over REST: `users.logoutOtherClients`, `users.removeOtherTokens` and the
//! personal access token endpoints, plus the DDP twins over `method.call[Anon]/<method>`, in
//! Rocket.Chat's request and response shapes.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::methods::answer_token_method;
use super::{
    manage_tokens, method_operation, rest_operation, Call, Caller, Operation, Outcome, Refusal,
    Tokens,
};
use crate::access::RequestFacts;
use crate::credentials::Credentials;
use crate::ddp;
use crate::error::{json_response, meteor, Body, GatewayError, TOKEN_NAME_REQUIRED_BODY};
use crate::handlers::Handled;
use crate::route::Route;

/// A date as JavaScript's `toISOString` writes it, as Rocket.Chat's REST answers carry dates.
pub(crate) fn iso_date(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn rest_answer(outcome: Result<Outcome, Refusal>) -> Result<Response<Body>, GatewayError> {
    let body = match outcome {
        Ok(Outcome::Fresh { token, expires_ms }) => json!({
            "token": token.as_str(),
            "tokenExpires": iso_date(expires_ms),
            "success": true,
        }),
        Ok(Outcome::Done) => json!({"success": true}),
        Ok(Outcome::LoggedOut(user_id)) => json!({
            "message": format!("User {user_id} has been logged out!"),
            "success": true,
        }),
        Ok(Outcome::Secret(token)) => json!({"token": token.as_str(), "success": true}),
        Ok(Outcome::Listed(listed)) => {
            let tokens: Vec<Value> = listed
                .iter()
                .map(|l| {
                    json!({
                        "name": l.token.name,
                        "createdAt": iso_date(l.created_ms),
                        "lastTokenPart": l.token.last_token_part,
                        "bypassTwoFactor": l.token.bypass_two_factor,
                    })
                })
                .collect();
            json!({"tokens": tokens, "success": true})
        }
        Err(Refusal::NameRequired) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                TOKEN_NAME_REQUIRED_BODY,
            ))
        }
        Err(Refusal::Meteor {
            error,
            reason,
            method,
        }) => {
            return Ok(meteor::rest_failure(
                error,
                reason,
                json!({"method": method}),
            ))
        }
        Err(Refusal::Gateway(e)) => {
            return match meteor::rest_second_factor_failure(&e) {
                Some(failure) => Ok(failure),
                None => Err(e),
            }
        }
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// `{tokenName, bypassTwoFactor}` from a JSON body; anything else names no token.
fn call_from_body(headers: &HeaderMap, body: &[u8]) -> Call {
    let params: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Call {
        token_name: params["tokenName"].as_str().map(str::to_string),
        bypass_two_factor: params["bypassTwoFactor"].as_bool().unwrap_or(false),
        code: header(headers, "x-2fa-code").map(str::to_string),
        code_method: header(headers, "x-2fa-method").map(str::to_string),
        user_id: params["userId"].as_str().map(str::to_string),
    }
}

/// A token-management request over REST; nothing of it is forwarded. The caller's user is
/// returned for the access line once its session is found, whatever the answer.
pub(crate) async fn token_route(
    tokens: &Tokens,
    req: Request<Incoming>,
    route: &Route,
    creds: Option<Credentials>,
    facts: &RequestFacts,
) -> Handled {
    let op = rest_operation(&route.path);
    let wanted = match op {
        Some(Operation::List) => Method::GET,
        _ => Method::POST,
    };
    let method_ok = *req.method() == wanted;
    // Read before answering, so the connection stays usable; bounded like a login body.
    let (headers, body) = match tokens.body.read(req).await {
        Ok(read) => read,
        Err(e) => return e.into(),
    };
    if !method_ok {
        return GatewayError::MethodNotAllowed.into();
    }
    let (creds, session) = match tokens.sessions.require(creds).await {
        Ok(found) => found,
        Err(e) => return e.into(),
    };
    let caller = Caller {
        token: creds.token,
        session,
    };
    let answer = answer_for(tokens, &caller, op, route, &headers, &body, facts.client_ip).await;
    Handled::as_user(Some(creds.user_id), answer)
}

/// The answer to `caller`'s token-management request: a REST operation, or a DDP method call
/// over REST.
async fn answer_for(
    tokens: &Tokens,
    caller: &Caller,
    op: Option<Operation>,
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
    ip: IpAddr,
) -> Result<Response<Body>, GatewayError> {
    match (op, ddp::rest_method_name(&route.path)) {
        (Some(op), _) => {
            let call = call_from_body(headers, body);
            rest_answer(manage_tokens(tokens, caller, op, call, ip).await)
        }
        (None, Some(url_method)) => {
            let frame = method_frame(body, &url_method)?;
            let call = ddp::parse_method(&frame).ok_or(GatewayError::BadRequest(
                "The method call is not a DDP method.",
            ))?;
            let op = method_operation(&call.method).ok_or(GatewayError::BadRequest(
                "The method call does not match its URL.",
            ))?;
            let reply = answer_token_method(tokens, caller, op, &call, ip)
                .await
                .map(|(frame, _)| frame)?;
            Ok(json_response(
                StatusCode::OK,
                json!({"message": reply.to_string(), "success": true}).to_string(),
            ))
        }
        (None, None) => Err(GatewayError::Internal(
            "a token route without an operation".into(),
        )),
    }
}

/// The DDP frame in a `{"message": "<frame>"}` body, when it calls the method its URL names.
fn method_frame(body: &[u8], url_method: &str) -> Result<Value, GatewayError> {
    let frame = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")?
                .as_str()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
        })
        .ok_or(GatewayError::BadRequest(
            "The method call is not a DDP method.",
        ))?;
    let named = frame.get("method").and_then(Value::as_str).unwrap_or("");
    if named != url_method && named != url_method.replace(':', "/") {
        return Err(GatewayError::BadRequest(
            "The method call does not match its URL.",
        ));
    }
    Ok(frame)
}
