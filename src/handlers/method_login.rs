//! `POST /api/v1/method.callAnon/login` and `method.call/login`: the DDP login over REST that
//! the web and desktop clients use, answered by authgate and never forwarded.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::Handled;
use crate::access::RequestFacts;
use crate::ddp;
use crate::error::{json_response, meteor, Body};
use crate::login;
use crate::login_flow::LoginFlow;

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
    flow: &LoginFlow,
    req: Request<Incoming>,
    facts: &RequestFacts,
    anonymous: bool,
) -> Handled {
    let ip = facts.client_ip;
    let (headers, body, kind) = match flow.body.read_login(req).await {
        Ok(read) => read,
        Err(e) => return e.into(),
    };
    let is_json = kind == login::BodyKind::Json;
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
    let opened = match flow
        .log_in(
            request,
            ip,
            crate::session::user_agent(&headers),
            &facts.request_id,
        )
        .await
    {
        Ok(o) => o,
        Err(e) => {
            return Handled::plain(
                meteor::login_error(&e)
                    .map(|err| rest_envelope(&ddp::error_frame(&id, err)))
                    .ok_or(e),
            )
        }
    };
    let user_id = opened.session.client_user_id().to_string();
    let frame = flow
        .sessions
        .identity
        .login_result_frame(flow.sessions.store.as_ref(), opened, &id, anonymous, ip)
        .await;
    Handled::as_user(Some(user_id), frame.map(|frame| rest_envelope(&frame)))
}
