//! The contract's texts for failures a client reads as a `Meteor.Error`: in DDP result frames
//! (WebSocket, REST `method.call`) and in Rocket.Chat's REST `API.v1.failure` form. Every
//! handler takes these texts from here; `mod.rs` holds the REST bodies of the other failures.

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{json_response, BlockedBy, Body, GatewayError};

/// A `Meteor.Error` as it travels in a DDP result frame.
pub fn meteor_error(error: Value, reason: &str, details: Option<Value>) -> Value {
    let code = match &error {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut e = Map::new();
    e.insert("isClientSafe".into(), json!(true));
    e.insert("error".into(), error);
    e.insert("reason".into(), json!(reason));
    if let Some(d) = details {
        e.insert("details".into(), d);
    }
    e.insert("message".into(), json!(format!("{reason} [{code}]")));
    e.insert("errorType".into(), json!("Meteor.Error"));
    Value::Object(e)
}

/// The `details` of Rocket.Chat's second-factor errors.
pub fn totp_details() -> Value {
    json!({"method": "totp", "codeGenerated": false, "availableMethods": ["totp"]})
}

/// The DDP error a login failure becomes, as Rocket.Chat's clients expect it; `None` for faults
/// that are not about the login itself.
pub fn login_error(err: &GatewayError) -> Option<Value> {
    let blocked = || Some(json!({"function": "Accounts.validateLoginAttempt"}));
    Some(match err {
        GatewayError::LoginFailed => meteor_error(json!(401), "Incorrect login or password", None),
        GatewayError::TotpRequired => meteor_error(
            json!("totp-required"),
            "TOTP Required",
            Some(totp_details()),
        ),
        GatewayError::TotpInvalid => {
            meteor_error(json!("totp-invalid"), "TOTP Invalid", Some(totp_details()))
        }
        GatewayError::LoginBlocked(BlockedBy::User) => meteor_error(
            json!("error-login-blocked-for-user"),
            "Login has been temporarily blocked For User",
            blocked(),
        ),
        GatewayError::LoginBlocked(BlockedBy::Ip) => meteor_error(
            json!("error-login-blocked-for-ip"),
            "Login has been temporarily blocked For IP",
            blocked(),
        ),
        _ => return None,
    })
}

/// Any failure as a DDP error: a login failure as Rocket.Chat words it, anything else as a
/// dependency that is unavailable (the details stay in the logs).
pub fn ddp_error(err: &GatewayError) -> Value {
    login_error(err).unwrap_or_else(unavailable)
}

/// A fault on authgate's side or behind it.
pub fn unavailable() -> Value {
    meteor_error(json!(503), "Service unavailable", None)
}

/// Meteor's answer to a resume with a token it does not know (or a socket login refused).
pub fn logged_out() -> Value {
    meteor_error(
        json!(403),
        "You've been logged out by the server. Please log in again.",
        None,
    )
}

/// Meteor's answer to a `login` method with parameters no login handler takes.
pub fn unrecognized_login() -> Value {
    meteor_error(json!(400), "Unrecognized options for login request", None)
}

/// A method that would create an account or credentials around authgate.
pub fn not_allowed() -> Value {
    meteor_error(json!("error-not-allowed"), "Not allowed", None)
}

/// Rocket.Chat's refusal of a method that needs a user, naming the method.
pub fn not_authorized(method: &str) -> Value {
    meteor_error(
        json!("not-authorized"),
        "Not Authorized",
        Some(json!({"method": method})),
    )
}

/// Meteor's own "not logged in", thrown bare (no reason) by its methods.
pub fn meteor_not_logged_in() -> Value {
    json!({"isClientSafe": true, "error": "You are not logged in.",
           "message": "[You are not logged in.]", "errorType": "Meteor.Error"})
}

/// Rocket.Chat's `API.v1.failure` for a `Meteor.Error`: HTTP 400, `error` is the message.
pub fn rest_failure(error: &str, reason: &str, details: Value) -> Response<Body> {
    let body = json!({
        "success": false,
        "error": format!("{reason} [{error}]"),
        "errorType": error,
        "details": details,
    });
    json_response(StatusCode::BAD_REQUEST, body.to_string())
}

/// A second-factor failure in `API.v1.failure` form, as Rocket.Chat's token endpoints answer
/// it; `None` for any other failure.
pub fn rest_second_factor_failure(err: &GatewayError) -> Option<Response<Body>> {
    match err {
        GatewayError::TotpRequired => Some(rest_failure(
            "totp-required",
            "TOTP Required",
            totp_details(),
        )),
        GatewayError::TotpInvalid => {
            Some(rest_failure("totp-invalid", "TOTP Invalid", totp_details()))
        }
        _ => None,
    }
}
