//! `POST /api/v1/login` and `/api/v1/logout`, answered by authgate and never forwarded.

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::RequestFacts;
use crate::credentials::Credentials;
use crate::error::{json_response, Body, GatewayError, LOGGED_OUT_BODY};
use crate::gateway::Gateway;
use crate::login;
use crate::login_flow;

pub(crate) async fn login(
    gw: &Gateway,
    req: Request<Incoming>,
    facts: &mut RequestFacts,
) -> Result<Response<Body>, GatewayError> {
    if req.method() != Method::POST {
        return Err(GatewayError::MethodNotAllowed);
    }
    let ip = facts.client_ip;
    let (headers, body) = gw.read_login_body(req).await?;
    let kind = login::body_kind(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let header_code = headers.get("x-2fa-code").and_then(|v| v.to_str().ok());
    let opened = login_flow::log_in(
        gw,
        login::parse(kind, &body, header_code),
        ip,
        crate::session::user_agent(&headers),
        &facts.request_id,
    )
    .await?;
    facts.user_id = Some(opened.session.client_user_id().to_string());
    let answer = gw
        .identity
        .rest_login_answer(gw.store.as_ref(), opened, &gw.avatar_base(), ip)
        .await?;
    Ok(json_response(StatusCode::OK, answer))
}

pub(crate) async fn logout(
    gw: &Gateway,
    method: &Method,
    creds: Option<Credentials>,
    facts: &mut RequestFacts,
) -> Result<Response<Body>, GatewayError> {
    if method != Method::POST && method != Method::GET {
        return Err(GatewayError::MethodNotAllowed);
    }
    let (creds, session) = gw.require_session(creds, facts).await?;
    if gw
        .store
        .revoke(&session.user.id, &creds.token.hash())
        .await?
    {
        gw.metrics.sessions_revoked(1);
    }
    Ok(json_response(StatusCode::OK, LOGGED_OUT_BODY))
}
