//! The request surface: every way around authgate's login (other API versions, DDP over REST,
//! token and password-reset endpoints, Bearer credentials, encoded credential parameters,
//! tunnelling methods, DDP frames that are not one object) is answered by authgate or refused,
//! and nothing of it reaches the chat backend.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::bridge::*;
use support::rocketchat::FakeRocketChat;
use support::ws;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const NOT_THROUGH_GATEWAY: &str = r#"{"success":false,"error":"error-not-through-gateway","status":"error","message":"Accounts and passwords are managed by the gateway's directory; this endpoint is not available."}"#;
const NOT_LOGGED_IN: &str = r#"{"success":false,"error":"You must be logged in to do this.","status":"error","message":"You must be logged in to do this."}"#;
const METHOD_NOT_ALLOWED: &str = r#"{"success":false,"error":"error-method-not-allowed","status":"error","message":"This method is not allowed on this endpoint."}"#;

/// Login, logout, token and password-reset surfaces outside `/api/v1/login` and friends.
const REFUSED_SURFACES: [&str; 17] = [
    "/api/login",
    "/API/LOGIN/",
    "/api/logout",
    "/api/v2/login",
    "/api/v2/logout",
    "/api/v12/Login/",
    "/api/method.callAnon/login",
    "/api/v2/method.call/login",
    "/api/v1/users.createToken",
    "/api/users.createToken",
    "/api/v2/users.register",
    "/api/v1/method.callAnon/forgotPassword",
    "/api/v1/method.call/forgotPassword",
    "/api/method.callAnon/forgotPassword",
    "/_oauth/google",
    "/_saml/validate/x",
    "/_cas/x",
];

/// A body that would work on any of the surfaces: a REST login and, for DDP over REST, a
/// frame calling the method the URL names.
fn hostile_body(path: &str) -> Value {
    let method = path.trim_end_matches('/').rsplit('/').next().unwrap();
    let frame = json!({"msg": "method", "id": "1", "method": method,
        "params": [{"user": {"username": "alice"}, "password": "alice-password-1", "email": "alice@example.org"}]});
    json!({"user": "alice", "password": "alice-password-1", "message": frame.to_string()})
}

async fn post_json(url: &str, body: &Value) -> (u16, String) {
    let r = client().post(url).json(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut rb = client().get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn login_surfaces_of_every_api_version_are_refused_in_trusted_headers_mode() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    for path in REFUSED_SURFACES {
        assert_eq!(
            post_json(&gw.url(path), &hostile_body(path)).await,
            (403, NOT_THROUGH_GATEWAY.to_string()),
            "{path}"
        );
        let (status, body) = get_with(&gw.url(path), &[]).await;
        assert_eq!(
            (status, body.as_str()),
            (403, NOT_THROUGH_GATEWAY),
            "{path}"
        );
    }
    assert_eq!(up.count(), 0, "{:?}", up.requests());
    // DDP over REST under any version is read like under `/api/v1/`: no other method's URL
    // carries a login.
    let (uid, token) = login(&gw.url(""), "bob", "bob-password-2").await;
    let frame = json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": "x"}]});
    for path in ["/api/method.call/ping", "/API/V2/method.callAnon/ping/"] {
        let r = client()
            .post(gw.url(path))
            .header("x-user-id", &uid)
            .header("x-auth-token", &token)
            .json(&json!({"message": frame.to_string()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            r#"{"success":false,"error":"error-bad-request","status":"error","message":"The method call does not match its URL."}"#
        );
    }
    assert_eq!(up.count(), 0, "{:?}", up.requests());
    // The one login authgate answers still works, in any spelling.
    let (status, body) = post_json(
        &gw.url("/API/V1/LOGIN/"),
        &json!({"user": "alice", "password": "alice-password-1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_surfaces_of_every_api_version_are_refused_in_rocketchat_mode() {
    let (rc, gw) = start().await;
    for path in REFUSED_SURFACES {
        assert_eq!(
            post_json(&gw.url(path), &hostile_body(path)).await,
            (403, NOT_THROUGH_GATEWAY.to_string()),
            "{path}"
        );
    }
    let seen: Vec<String> = rc.seen().iter().map(|s| s.target.clone()).collect();
    assert!(seen.is_empty(), "reached Rocket.Chat: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_and_access_token_credentials_are_refused_in_rocketchat_mode() {
    let (rc, gw) = start().await;
    let hostile: [(&str, &[(&str, &str)]); 7] = [
        ("/api/info", &[("authorization", "Bearer rc-minted-token")]),
        ("/api/v1/me", &[("authorization", "bearer rc-minted-token")]),
        // Rocket.Chat takes a value without the scheme as the token itself.
        ("/api/v1/me", &[("authorization", "rc-minted-token")]),
        (
            "/file-upload/a/b.png",
            &[("authorization", "Basic cmMtbWludGVkLXRva2Vu")],
        ),
        ("/api/v1/channels.list?access_token=rc-minted-token", &[]),
        ("/api/info?%61ccess_token=rc-minted-token", &[]),
        ("/avatar/alice?a=1&ACCESS%5FTOKEN=rc-minted-token", &[]),
    ];
    for (path, headers) in hostile {
        assert_eq!(
            get_with(&gw.url(path), headers).await,
            (401, NOT_LOGGED_IN.to_string()),
            "{path} {headers:?}"
        );
    }
    let r = client()
        .post(gw.url("/api/v1/chat.postMessage"))
        .header("authorization", "Bearer rc-minted-token")
        .json(&json!({"channel": "#general", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), NOT_LOGGED_IN);
    assert!(rc.seen().is_empty(), "{:?}", rc.seen());
    assert_never_reached_upstream(&rc, &["rc-minted-token"]);

    // An operator who wants them opts in.
    let config = bridge_config(&rc, None, "").replace(
        "[upstream]\n",
        "[upstream]\nallow_bearer_credentials = true\n",
    );
    let open = Gateway::start(&config, &bridge_users()).await;
    let (status, _) = get_with(
        &open.url("/api/info"),
        &[("authorization", "Bearer rc-minted-token")],
    )
    .await;
    assert_eq!(status, 200);
    let seen = rc.seen().pop().expect("forwarded with the opt-in");
    assert_eq!(seen.target, "/api/info");
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer rc-minted-token")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn encoded_credential_parameters_are_decoded_and_stripped() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    // Decoded before deciding: the encoded names are alice's credentials.
    let (status, _) = get_with(
        &gw.url(&format!(
            "/avatar/alice?%72c_uid={uid}&%72%63%5Ftoken={token}&size=3"
        )),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(seen.target, "/avatar/alice?size=3");
    assert_eq!(seen.header("x-user-id").as_deref(), Some(uid.as_str()));
    // Every spelling is stripped, whoever the request is from.
    let (status, _) = get_with(
        &gw.url(
            "/file-upload/abc/f.png?RC%5FUID=victim&rc_token%5B%5D=stolen&Rc_Token=stolen2&rc_uid[x]=v&w=1",
        ),
        &[("x-user-id", &uid), ("x-auth-token", &token)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(up.last().target, "/file-upload/abc/f.png?w=1");
    assert_eq!(up.count(), 2);

    // rocketchat mode, anonymous forwarding: forged encoded credentials never reach Rocket.Chat.
    let (rc, rc_gw) = start().await;
    let (status, _) = get_with(
        &rc_gw.url("/avatar/alice?%72c_uid=VictimRcId0000001&%72c_token=stolen-rc-token"),
        &[],
    )
    .await;
    assert_eq!(status, 403, "Rocket.Chat answers the anonymous request");
    assert_eq!(rc.seen().pop().unwrap().target, "/avatar/alice");
    assert_never_reached_upstream(&rc, &["VictimRcId0000001", "stolen-rc-token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn url_and_cookie_credentials_only_fetch() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let cookie = format!("rc_uid={uid}; rc_token={token}");
    let query = format!("rc_uid={uid}&rc_token={token}");
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = client()
            .request(method.clone(), gw.url("/file-upload/abc/f.png"))
            .header("cookie", &cookie)
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
        assert_eq!(r.text().await.unwrap(), NOT_LOGGED_IN);
        let r = client()
            .request(method.clone(), gw.url(&format!("/avatar/alice?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
        assert_eq!(r.text().await.unwrap(), NOT_LOGGED_IN);
    }
    assert_eq!(up.count(), 0, "{:?}", up.requests());
    // What browsers do with them still works.
    let r = client()
        .get(gw.url("/file-upload/abc/f.png"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .head(gw.url(&format!("/avatar/alice?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let methods: Vec<String> = up.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["GET", "HEAD"]);
    assert_eq!(up.last().header("x-user-id").as_deref(), Some(uid.as_str()));
}

/// Sends one request on its own connection and returns the whole answer.
async fn raw(gw: &Gateway, request_line: &str, extra: &str) -> String {
    raw_request(
        gw.addr,
        format!("{request_line}\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_and_trace_are_refused_everywhere() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let session = format!("X-User-Id: {uid}\r\nX-Auth-Token: {token}\r\n");
    for (line, extra) in [
        ("CONNECT /api/info HTTP/1.1", ""),
        ("TRACE /api/info HTTP/1.1", ""),
        ("TRACK /api/info HTTP/1.1", ""),
        ("CONNECT 127.0.0.1:3000 HTTP/1.1", ""),
        ("CONNECT /api/v1/me HTTP/1.1", session.as_str()),
        ("TRACE /api/v1/me HTTP/1.1", session.as_str()),
        ("TRACE /avatar/alice HTTP/1.1", ""),
        ("TRACE /api/v1/login HTTP/1.1", ""),
    ] {
        let answer = raw(&gw, line, extra).await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{line}: {answer}");
        assert!(answer.ends_with(METHOD_NOT_ALLOWED), "{line}: {answer}");
    }
    assert_eq!(up.count(), 0, "{:?}", up.requests());
}

fn ddp_in(rc: &FakeRocketChat) -> Vec<Value> {
    rc.state.lock().unwrap().ddp_in.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_frames_that_are_not_one_object_are_refused() {
    let (rc, gw) = start().await;
    let login = json!({"msg": "method", "id": "1", "method": "login",
        "params": [{"user": {"username": "alice"}, "password": "wrong"}]})
    .to_string();
    let hostile = [
        (
            "/websocket",
            json!([serde_json::from_str::<Value>(&login).unwrap()]).to_string(),
        ),
        ("/websocket", json!(login).to_string()),
        ("/websocket", "null".to_string()),
        ("/websocket", "42".to_string()),
        (
            "/sockjs/123/abcdef/websocket",
            json!([format!("[{login}]")]).to_string(),
        ),
        (
            "/sockjs/123/abcdef/websocket",
            json!(json!([login]).to_string()).to_string(),
        ),
        (
            "/sockjs/123/abcdef/websocket",
            json!([json!(login).to_string()]).to_string(),
        ),
    ];
    for (path, frame) in hostile {
        let mut ws = ws::connect(gw.addr, path).await;
        ws.send(Message::text(frame.clone())).await.unwrap();
        assert!(
            ws::closes_within(&mut ws, Duration::from_secs(3)).await,
            "{path} {frame} left the socket open"
        );
    }
    assert!(ddp_in(&rc).is_empty(), "{:?}", ddp_in(&rc));
}

#[tokio::test(flavor = "multi_thread")]
async fn forgot_password_is_refused_on_a_socket() {
    let (rc, gw) = start().await;
    // Meteor's password reset mail is refused like Rocket.Chat's `sendForgotPasswordEmail`.
    let mut ws = ws::connect(gw.addr, "/websocket").await;
    ws.send(Message::text(
        json!({"msg": "method", "id": "9", "method": "forgotPassword", "params": [{"email": "alice@example.org"}]})
            .to_string(),
    ))
    .await
    .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an answer")
        .unwrap()
        .unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    assert_eq!(
        answer,
        json!({"msg": "result", "id": "9", "error": {"isClientSafe": true, "error": "error-not-allowed", "reason": "Not allowed", "message": "Not allowed [error-not-allowed]", "errorType": "Meteor.Error"}})
    );
    assert!(ddp_in(&rc).is_empty(), "{:?}", ddp_in(&rc));
}

#[tokio::test(flavor = "multi_thread")]
async fn avatar_url_ignores_the_host_header() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    let r = client()
        .post(gw.url("/api/v1/login"))
        .header("host", "evil.example")
        .json(&json!({"user": "alice", "password": "alice-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["data"]["me"]["avatarUrl"],
        format!("http://{}/avatar/alice", gw.addr)
    );

    // With a public URL configured, that is the base.
    let up2 = RecordingUpstream::start().await;
    let config = config_text(up2.addr, None, "").replace(
        "[server]\n",
        "[server]\npublic_url = \"https://chat.example.org\"\n",
    );
    let gw2 = Gateway::start(&config, &users_toml(&standard_users())).await;
    let r = client()
        .post(gw2.url("/api/v1/login"))
        .header("host", "evil.example")
        .json(&json!({"user": "alice", "password": "alice-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["data"]["me"]["avatarUrl"],
        "https://chat.example.org/avatar/alice"
    );
    assert_eq!(up.count() + up2.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_factor_headers_never_reach_the_upstream() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let (uid, token) = (uid.as_str(), token.as_str());
    let (status, _) = get_with(
        &gw.url("/api/v1/me"),
        &[
            ("x-user-id", uid),
            ("x-auth-token", token),
            ("x-2fa-method", "email"),
            ("X-2FA-Code", "123456"),
            ("x_2fa_method", "totp"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = up.last();
    for name in ["x-2fa-method", "x-2fa-code", "x_2fa_method"] {
        assert!(
            seen.header_all(name).is_empty(),
            "{name} reached the upstream"
        );
    }
}
