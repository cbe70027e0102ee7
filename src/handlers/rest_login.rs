//! `POST /api/v1/login` and `/api/v1/logout`, answered by authgate and never forwarded.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::Handled;
use crate::access::RequestFacts;
use crate::credentials::Credentials;
use crate::error::{json_response, GatewayError, LOGGED_OUT_BODY};
use crate::login;
use crate::login_flow::LoginFlow;

/// `POST /api/v1/login`: the body parsed in any login shape, then the one way in.
pub(crate) async fn login(
    flow: &LoginFlow,
    req: Request<Incoming>,
    facts: &RequestFacts,
) -> Handled {
    let ip = facts.client_ip;
    let (headers, body, kind) = match flow.body.read_login(req).await {
        Ok(read) => read,
        Err(e) => return e.into(),
    };
    let header_code = headers.get("x-2fa-code").and_then(|v| v.to_str().ok());
    let opened = match flow
        .log_in(
            login::parse(kind, &body, header_code),
            ip,
            crate::session::user_agent(&headers),
            &facts.request_id,
        )
        .await
    {
        Ok(opened) => opened,
        Err(e) => return e.into(),
    };
    let user_id = opened.session.client_user_id().to_string();
    let answer = flow
        .sessions
        .identity
        .rest_login_answer(flow.sessions.store.as_ref(), opened, &flow.avatar_base, ip)
        .await
        .map(|answer| json_response(StatusCode::OK, answer));
    Handled::as_user(Some(user_id), answer)
}

/// `/api/v1/logout` (POST or GET): ends the caller's session.
pub(crate) async fn logout(
    flow: &LoginFlow,
    method: &Method,
    creds: Option<Credentials>,
) -> Handled {
    if method != Method::POST && method != Method::GET {
        return GatewayError::MethodNotAllowed.into();
    }
    let (creds, session) = match flow.sessions.require(creds).await {
        Ok(found) => found,
        Err(e) => return e.into(),
    };
    let answer = match flow
        .sessions
        .store
        .revoke(&session.user.id, &creds.token.hash())
        .await
    {
        Ok(revoked) => {
            if revoked {
                flow.metrics.sessions_revoked(1);
            }
            Ok(json_response(StatusCode::OK, LOGGED_OUT_BODY))
        }
        Err(e) => Err(e.into()),
    };
    Handled::as_user(Some(creds.user_id), answer)
}
