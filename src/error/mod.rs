//! The one place where failures become responses. Every body follows the Rocket.Chat contract
//! (`success`, `error`, `status`, [`details`], `message`), and none ever echoes a token. The
//! same failures as DDP errors (`Meteor.Error`) are in `meteor.rs`.

pub mod meteor;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Which dependency failed, for 503 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    SessionStore,
    Directory,
    PasswordHashing,
    /// The TOTP enrollment store (`totp.secrets_file`) cannot be read.
    TotpEnrollments,
}

impl Dependency {
    /// As logs name it, in the spelling `/readyz` uses.
    pub fn name(self) -> &'static str {
        match self {
            Dependency::SessionStore => "session_store",
            Dependency::Directory => "directory",
            Dependency::PasswordHashing => "password_hashing",
            Dependency::TotpEnrollments => "totp_enrollments",
        }
    }
}

pub use crate::regulation::gate::BlockedBy;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Every credential failure and every unusable login body: one identical answer.
    #[error("login failed")]
    LoginFailed,
    #[error("totp required")]
    TotpRequired,
    #[error("totp invalid")]
    TotpInvalid,
    #[error("login blocked")]
    LoginBlocked(BlockedBy),
    /// No live session for the presented `X-Auth-Token` / `X-User-Id`.
    #[error("not logged in")]
    NotLoggedIn,
    #[error("login body too large")]
    LoginBodyTooLarge,
    #[error("login body not received in time")]
    LoginBodyTimeout,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("credential endpoint refused")]
    NotThroughGateway,
    #[error("realtime api unavailable")]
    RealtimeUnavailable,
    #[error("{0:?} unavailable: {1}")]
    Unavailable(Dependency, String),
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

// The domain's own errors become the gateway's here, once: what a client is answered depends
// only on these mappings and `into_response`.

impl From<crate::password::VerifyError> for GatewayError {
    fn from(e: crate::password::VerifyError) -> Self {
        use crate::password::VerifyError;
        match e {
            VerifyError::Busy(why) => GatewayError::Unavailable(Dependency::PasswordHashing, why),
            VerifyError::Broken(why) => GatewayError::Internal(why),
        }
    }
}

impl From<crate::regulation::gate::RegulationError> for GatewayError {
    fn from(e: crate::regulation::gate::RegulationError) -> Self {
        use crate::regulation::gate::RegulationError;
        match e {
            RegulationError::Blocked(by) => GatewayError::LoginBlocked(by),
            RegulationError::Store(why) => GatewayError::Unavailable(Dependency::SessionStore, why),
        }
    }
}

impl From<crate::directory::DirectoryError> for GatewayError {
    fn from(e: crate::directory::DirectoryError) -> Self {
        use crate::directory::DirectoryError;
        match e {
            DirectoryError::Unavailable(why) => {
                GatewayError::Unavailable(Dependency::Directory, why)
            }
            DirectoryError::Password(e) => e.into(),
            DirectoryError::Refused(e) => e.into(),
        }
    }
}

impl From<crate::session::StoreError> for GatewayError {
    fn from(e: crate::session::StoreError) -> Self {
        GatewayError::Unavailable(Dependency::SessionStore, e.to_string())
    }
}

impl From<crate::totp::TotpError> for GatewayError {
    fn from(e: crate::totp::TotpError) -> Self {
        use crate::totp::TotpError;
        match e {
            TotpError::Required => GatewayError::TotpRequired,
            TotpError::Invalid => GatewayError::TotpInvalid,
            TotpError::Enrollments(why) => {
                GatewayError::Unavailable(Dependency::TotpEnrollments, why)
            }
            TotpError::Steps(why) => GatewayError::Unavailable(Dependency::SessionStore, why),
        }
    }
}

pub const LOGIN_FAILED_BODY: &str =
    r#"{"success":false,"error":"Unauthorized","status":"error","message":"Unauthorized"}"#;
pub const NOT_LOGGED_IN_BODY: &str = r#"{"success":false,"error":"You must be logged in to do this.","status":"error","message":"You must be logged in to do this."}"#;
pub const LOGGED_OUT_BODY: &str =
    r#"{"status":"success","data":{"message":"You've been logged out!"}}"#;
pub const TOTP_REQUIRED_BODY: &str = r#"{"success":false,"error":"totp-required","status":"error","details":{"method":"totp","codeGenerated":false,"availableMethods":["totp"]},"message":"TOTP Required"}"#;
pub const TOTP_INVALID_BODY: &str = r#"{"success":false,"error":"totp-invalid","status":"error","details":{"method":"totp","codeGenerated":false,"availableMethods":["totp"]},"message":"TOTP Invalid"}"#;
pub const BLOCKED_FOR_IP_BODY: &str = r#"{"success":false,"error":"error-login-blocked-for-ip","status":"error","details":{"function":"Accounts.validateLoginAttempt"},"message":"Login has been temporarily blocked For IP"}"#;
pub const BLOCKED_FOR_USER_BODY: &str = r#"{"success":false,"error":"error-login-blocked-for-user","status":"error","details":{"function":"Accounts.validateLoginAttempt"},"message":"Login has been temporarily blocked For User"}"#;
/// `users.generatePersonalAccessToken` and friends without a `tokenName`.
pub const TOKEN_NAME_REQUIRED_BODY: &str =
    r#"{"success":false,"error":"The 'tokenName' param is required"}"#;
pub const INTERNAL_ERROR_BODY: &str = r#"{"success":false,"error":"Internal server error"}"#;

fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"success": false, "error": code, "status": "error", "message": message})
        .to_string()
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            LoginFailed | TotpRequired | TotpInvalid | LoginBlocked(_) | NotLoggedIn => {
                StatusCode::UNAUTHORIZED
            }
            LoginBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            LoginBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            BadRequest(_) => StatusCode::BAD_REQUEST,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotThroughGateway => StatusCode::FORBIDDEN,
            RealtimeUnavailable => StatusCode::NOT_FOUND,
            Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(&self) -> String {
        use GatewayError::*;
        match self {
            LoginFailed => LOGIN_FAILED_BODY.into(),
            TotpRequired => TOTP_REQUIRED_BODY.into(),
            TotpInvalid => TOTP_INVALID_BODY.into(),
            LoginBlocked(BlockedBy::Ip) => BLOCKED_FOR_IP_BODY.into(),
            LoginBlocked(BlockedBy::User) => BLOCKED_FOR_USER_BODY.into(),
            NotLoggedIn => NOT_LOGGED_IN_BODY.into(),
            LoginBodyTooLarge => error_body("error-request-too-large", "The login request body is too large."),
            LoginBodyTimeout => error_body("error-request-timeout", "The login request body did not arrive in time."),
            BadRequest(why) => error_body("error-bad-request", why),
            MethodNotAllowed => error_body("error-method-not-allowed", "This method is not allowed on this endpoint."),
            NotThroughGateway => error_body(
                "error-not-through-gateway",
                "Accounts and passwords are managed by the gateway's directory; this endpoint is not available.",
            ),
            RealtimeUnavailable => error_body("error-realtime-unavailable", "The realtime API is not available through this gateway."),
            Unavailable(dep, _) => {
                let what = match dep {
                    Dependency::SessionStore => "The session store is unavailable",
                    Dependency::Directory => "The user directory is unavailable",
                    Dependency::PasswordHashing => "Too many logins are in progress",
                    Dependency::TotpEnrollments => "The two-factor enrollment store is unavailable",
                };
                error_body("error-service-unavailable", &format!("{what}; try again shortly."))
            }
            UpstreamUnreachable(_) => error_body("error-upstream-unavailable", "The chat backend could not be reached."),
            UpstreamTimeout => error_body("error-upstream-timeout", "The chat backend did not answer in time."),
            Internal(_) => INTERNAL_ERROR_BODY.into(),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut resp = json_response(self.status(), self.body());
        if matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::Internal(_)
                | GatewayError::LoginBodyTooLarge
                | GatewayError::LoginBodyTimeout
        ) {
            // The rest of the connection's bytes cannot be trusted to be framed as the client meant.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON answer of the gateway's own, with the contract's headers.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
