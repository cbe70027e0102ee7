//! `POST /api/v1/method.callAnon/login` and `method.call/login`: the DDP login over REST that
//! the web and desktop clients use, answered by authgate and never forwarded.

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::access::RequestFacts;
use crate::ddp;
use crate::error::{json_response, meteor, Body, GatewayError};
use crate::gateway::Gateway;
use crate::login;
use crate::login_flow;

/// `{"message": "<frame>", "success": true}`: how `method.call*` answers over REST.
fn rest_envelope(frame: &Value) -> Response<Body> {
    json_response(
        StatusCode::OK,
        json!({"message": frame.to_string(), "success": true}).to_string(),
    )
}

/// `POST /api/v1/method.callAnon/login` and `method.call/login`: the web and desktop clients'
/// password login. Answered like Rocket.Chat: HTTP 200 with the result or error frame.
pub async fn login_method(
    gw: &Gateway,
    req: Request<Incoming>,
    facts: &mut RequestFacts,
    anonymous: bool,
) -> Result<Response<Body>, GatewayError> {
    if req.method() != Method::POST {
        return Err(GatewayError::MethodNotAllowed);
    }
    let ip = facts.client_ip;
    let (headers, body) = gw.read_login_body(req).await?;
    let is_json = login::body_kind(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    ) == login::BodyKind::Json;
    let frame: Option<Value> = is_json
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
        .and_then(|b| {
            b.get("message")
                .and_then(Value::as_str)
                .and_then(|m| serde_json::from_str(m).ok())
        });
    let call = frame
        .as_ref()
        .and_then(ddp::parse_method)
        .filter(|c| c.method == "login");
    let id = call.as_ref().map(|c| c.id.clone()).unwrap_or(Value::Null);
    let request = call.as_ref().and_then(ddp::login_request);
    let opened = match login_flow::log_in(
        gw,
        request,
        ip,
        crate::session::user_agent(&headers),
        &facts.request_id,
    )
    .await
    {
        Ok(o) => o,
        Err(e) => {
            return meteor::login_error(&e)
                .map(|err| rest_envelope(&ddp::error_frame(&id, err)))
                .ok_or(e)
        }
    };
    facts.user_id = Some(opened.session.client_user_id().to_string());
    let frame = gw
        .identity
        .login_result_frame(gw.store.as_ref(), opened, &id, anonymous, ip)
        .await?;
    Ok(rest_envelope(&frame))
}
