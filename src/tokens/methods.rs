//! Token management as DDP methods (`logoutOtherClients`, `removeOtherTokens`, `getNewToken`,
//! `personalAccessTokens:*`), on the WebSocket and over REST `method.call`: answered with the
//! result and error frames Meteor and Rocket.Chat send.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::{manage_tokens, method_operation, Call, Caller, Operation, Outcome, Refusal, Tokens};
use crate::ddp::{self, MethodCall};
use crate::error::{meteor, GatewayError};
use crate::session::Token;

/// `[{tokenName, bypassTwoFactor}, {twoFactorCode, twoFactorMethod}]`: Rocket.Chat's
/// `twoFactorRequired` methods take the code as an extra last parameter.
fn call_from_params(params: &[Value]) -> Call {
    let first = params.first().cloned().unwrap_or(Value::Null);
    let second_factor = params
        .last()
        .filter(|p| p.get("twoFactorCode").is_some() && p.get("twoFactorMethod").is_some());
    Call {
        token_name: first["tokenName"].as_str().map(str::to_string),
        bypass_two_factor: first["bypassTwoFactor"].as_bool().unwrap_or(false),
        code: second_factor.and_then(|p| p["twoFactorCode"].as_str().map(str::to_string)),
        code_method: second_factor.and_then(|p| p["twoFactorMethod"].as_str().map(str::to_string)),
        user_id: None,
    }
}

/// What a method throws for a connection without a user: Rocket.Chat's `not-authorized` for
/// its personal-token methods, Meteor's bare "You are not logged in." for its own.
fn not_logged_in(op: Operation) -> Value {
    match op.is_personal() {
        true => meteor::not_authorized(op.method_name()),
        false => meteor::meteor_not_logged_in(),
    }
}

/// The result frame; `removeOtherTokens` and `removeToken` return nothing, so their frame has
/// no `result`, as Meteor sends it.
fn result_frame(id: &Value, op: Operation, outcome: Outcome, user_id: &str) -> Value {
    match outcome {
        Outcome::Fresh { token, expires_ms } => {
            let expires = json!({"$date": expires_ms});
            let result = match op {
                Operation::GetNewToken => {
                    json!({"id": user_id, "token": token.as_str(), "tokenExpires": expires})
                }
                _ => json!({"token": token.as_str(), "tokenExpires": expires}),
            };
            ddp::result_frame(id, result)
        }
        Outcome::Done | Outcome::LoggedOut(_) => json!({"msg": "result", "id": id}),
        Outcome::Secret(token) => ddp::result_frame(id, json!(token.as_str())),
        Outcome::Listed(listed) => ddp::result_frame(
            id,
            Value::Array(
                listed
                    .iter()
                    .map(|l| {
                        json!({"name": l.token.name, "createdAt": {"$date": l.created_ms},
                                    "lastTokenPart": l.token.last_token_part,
                                    "bypassTwoFactor": l.token.bypass_two_factor})
                    })
                    .collect(),
            ),
        ),
    }
}

/// Answers one token-management method frame of `caller`. Faults that are not the method's
/// own (a dead store or upstream) stay errors for the transport to answer.
pub(crate) async fn answer_token_method(
    tokens: &Tokens,
    caller: &Caller,
    op: Operation,
    call: &MethodCall,
    ip: IpAddr,
) -> Result<(Value, Option<Token>), GatewayError> {
    let params = call_from_params(&call.params);
    let outcome = manage_tokens(tokens, caller, op, params, ip).await;
    let error = match outcome {
        Ok(outcome) => {
            // Meteor's getNewToken moves the connection to the new token.
            let rebind = match (&outcome, op) {
                (Outcome::Fresh { token, .. }, Operation::GetNewToken) => Some(token.clone()),
                _ => None,
            };
            let user_id = caller.session.client_user_id().to_string();
            return Ok((result_frame(&call.id, op, outcome, &user_id), rebind));
        }
        Err(Refusal::NameRequired) => meteor::meteor_error(
            json!("error-the-field-is-required"),
            "The field tokenName is required.",
            Some(json!({"method": op.method_name()})),
        ),
        Err(Refusal::Meteor {
            error,
            reason,
            method,
        }) => meteor::meteor_error(json!(error), reason, Some(json!({"method": method}))),
        Err(Refusal::Gateway(GatewayError::NotLoggedIn)) => not_logged_in(op),
        Err(Refusal::Gateway(e)) => meteor::login_error(&e).ok_or(e)?,
    };
    Ok((ddp::error_frame(&call.id, error), None))
}

/// A token-management method on a socket, whose session (`bound`: token and stored user
/// id) is the caller. Returns the frame for the client and the socket's new binding, if
/// the call moved it to a new token.
pub(crate) async fn token_method_on_socket(
    tokens: &Tokens,
    call: &MethodCall,
    bound: Option<&(Token, String)>,
    ip: IpAddr,
) -> (Value, Option<(Token, String)>) {
    let Some(op) = method_operation(&call.method) else {
        return (ddp::error_frame(&call.id, meteor::unavailable()), None);
    };
    let session = match bound {
        Some((token, user_id)) => tokens.sessions.store.get(user_id, &token.hash()).await,
        None => Ok(None),
    };
    let (token, user_id, session) = match (bound, session) {
        (Some((token, user_id)), Ok(Some(s))) if tokens.sessions.usable(&s) => {
            (token.clone(), user_id.clone(), s)
        }
        (_, Err(_)) => return (ddp::error_frame(&call.id, meteor::unavailable()), None),
        _ => return (ddp::error_frame(&call.id, not_logged_in(op)), None),
    };
    let caller = Caller { token, session };
    match answer_token_method(tokens, &caller, op, call, ip).await {
        Ok((frame, rebind)) => (frame, rebind.map(|t| (t, user_id))),
        Err(e) => {
            tracing::warn!(error = %e, method = %call.method, "token management on a socket failed");
            (ddp::error_frame(&call.id, meteor::unavailable()), None)
        }
    }
}
