//! Token management answered by authgate in both upstream modes: "log out other clients",
//! "remove other tokens", a new token for the caller, and personal access tokens, over REST,
//! REST `method.call` and the WebSocket, with Rocket.Chat's bodies; none of it reaches the
//! upstream.

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::bridge::*;
use support::rocketchat::FakeRocketChat;
use support::upstream::RecordingUpstream;
use support::ws::{self, Socket};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Sends one method frame and returns the answer.
async fn call(ws: &mut Socket, id: &str, method: &str, params: Value) -> Value {
    let frame = json!({"msg": "method", "id": id, "method": method, "params": params});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    ws::next_json(ws).await
}

/// A request with a session's headers; the status and the exact body.
async fn send(
    method: reqwest::Method,
    url: String,
    uid: &str,
    token: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut rb = client()
        .request(method, url)
        .header("X-User-Id", uid)
        .header("X-Auth-Token", token);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn post(gw: &Gateway, path: &str, uid: &str, token: &str, body: Value) -> (u16, String) {
    send(
        reqwest::Method::POST,
        gw.url(path),
        uid,
        token,
        Some(body),
        &[],
    )
    .await
}

async fn get(gw: &Gateway, path: &str, uid: &str, token: &str) -> (u16, String) {
    send(reqwest::Method::GET, gw.url(path), uid, token, None, &[]).await
}

/// A DDP call over REST `method.call/<method>`: the HTTP status and the inner frame.
async fn method_call(gw: &Gateway, uid: &str, token: &str, method: &str, params: Value) -> Value {
    let frame = json!({"msg": "method", "id": "42", "method": method, "params": params});
    let (status, body) = post(
        gw,
        &format!("/api/v1/method.call/{method}"),
        uid,
        token,
        json!({"message": frame.to_string()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let envelope: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(envelope["success"], true, "{body}");
    serde_json::from_str(envelope["message"].as_str().unwrap()).unwrap()
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && humantime::parse_rfc3339(s).is_ok()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

const TOKEN_PATHS: [&str; 6] = [
    "logoutOtherClients",
    "removeOtherTokens",
    "PersonalAccessToken",
    "personalAccessTokens",
    "getNewToken",
    "getPersonalAccessTokens",
];

fn assert_no_token_request_upstream(rc: &FakeRocketChat) {
    for seen in rc.seen() {
        for p in TOKEN_PATHS {
            assert!(
                !seen.target.contains(p) && !seen.body.contains(p),
                "{p} reached Rocket.Chat: {} {}",
                seen.method,
                seen.target
            );
        }
    }
    for frame in &rc.state.lock().unwrap().ddp_in {
        let m = frame["method"].as_str().unwrap_or("");
        assert!(
            !TOKEN_PATHS.iter().any(|p| m.contains(p)),
            "{m} reached Rocket.Chat's socket"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_other_clients_ends_the_other_sessions_on_every_instance_and_their_sockets() {
    let redis = Redis::start();
    let rc = FakeRocketChat::start().await;
    let a = Gateway::start(&bridge_config(&rc, Some(&redis.url()), ""), &bridge_users()).await;
    let b = Gateway::start(&bridge_config(&rc, Some(&redis.url()), ""), &bridge_users()).await;
    let (uid, mine) = login(&a.url(""), "alice", "alice-password-1").await;
    let (_, other_on_b) = login(&b.url(""), "alice", "alice-password-1").await;
    let (_, other_on_a) = login(&a.url(""), "alice", "alice-password-1").await;
    let (bob_id, bobs) = login(&a.url(""), "bob", "bob-password-2").await;
    // A bot's personal access token survives "log out other clients", as in Rocket.Chat.
    let (status, body) = post(
        &a,
        "/api/v1/users.generatePersonalAccessToken",
        &uid,
        &mine,
        json!({"tokenName": "bot"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let pat: Value = serde_json::from_str(&body).unwrap();
    let pat = pat["token"].as_str().unwrap().to_string();

    let mut other_socket = ws::connect(b.addr, "/websocket").await;
    let resumed = call(
        &mut other_socket,
        "1",
        "login",
        json!([{"resume": other_on_b}]),
    )
    .await;
    assert_eq!(resumed["result"]["token"], other_on_b.as_str(), "{resumed}");
    let mut my_socket = ws::connect(a.addr, "/websocket").await;
    let resumed = call(&mut my_socket, "1", "login", json!([{"resume": mine}])).await;
    assert_eq!(resumed["result"]["token"], mine.as_str(), "{resumed}");

    let (status, body) = post(
        &a,
        "/api/v1/users.logoutOtherClients",
        &uid,
        &mine,
        json!({}),
    )
    .await;
    let ended = Instant::now();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        keys(&answer),
        ["token", "tokenExpires", "success"],
        "{body}"
    );
    assert_eq!(answer["success"], true);
    let fresh = answer["token"].as_str().unwrap().to_string();
    assert_eq!(fresh.len(), 43);
    assert_ne!(fresh, mine);
    assert!(
        is_iso_date(answer["tokenExpires"].as_str().unwrap()),
        "{body}"
    );
    assert!(
        !rc.state.lock().unwrap().tokens.contains_key(&fresh),
        "the client got a Rocket.Chat token"
    );

    // The other socket, on the other instance, closes; the caller's stays.
    assert!(ws::closes_within(&mut other_socket, Duration::from_secs(3)).await);
    assert!(
        ended.elapsed() < Duration::from_secs(2),
        "{:?}",
        ended.elapsed()
    );
    for (gw, token) in [(&b, &other_on_b), (&a, &other_on_a), (&b, &other_on_a)] {
        assert_eq!(protected_status(gw, &uid, token).await, 401);
    }
    for token in [&mine, &fresh, &pat] {
        assert_eq!(protected_status(&b, &uid, token).await, 200);
    }
    assert_eq!(
        protected_status(&b, &bob_id, &bobs).await,
        200,
        "bob is not alice"
    );

    // removeOtherTokens over the caller's socket: Meteor's empty result; only the socket's
    // session (and the bot's token) stay.
    let removed = call(&mut my_socket, "9", "removeOtherTokens", json!([])).await;
    assert_eq!(removed, json!({"msg": "result", "id": "9"}));
    // B hears of the revocation through Redis: within the 100 ms every instance promises.
    refused_within_100ms(&b.url("/api/v1/me"), &uid, &fresh).await;
    assert_eq!(protected_status(&b, &uid, &mine).await, 200);
    assert_eq!(protected_status(&a, &uid, &pat).await, 200);

    // Over REST it answers `{"success":true}`.
    let (_, again) = login(&b.url(""), "alice", "alice-password-1").await;
    let (status, body) = post(
        &a,
        "/api/v1/users.removeOtherTokens",
        &uid,
        &mine,
        json!({}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"success":true}"#));
    assert_eq!(protected_status(&a, &uid, &again).await, 401);
    assert_eq!(protected_status(&a, &uid, &mine).await, 200);

    assert_no_token_request_upstream(&rc);
    assert_never_reached_upstream(&rc, &[&mine, &fresh, &pat, &other_on_a, &other_on_b]);
}

#[tokio::test(flavor = "multi_thread")]
async fn personal_access_tokens_over_rest_in_rocketchat_mode() {
    let redis = Redis::start();
    let rc = FakeRocketChat::start().await;
    let gw = Gateway::start(&bridge_config(&rc, Some(&redis.url()), ""), &bridge_users()).await;
    let (uid, session) = login(&gw.url(""), "alice", "alice-password-1").await;
    let generate = "/api/v1/users.generatePersonalAccessToken";

    let (status, body) = post(
        &gw,
        generate,
        &uid,
        &session,
        json!({"tokenName": "ci-bot"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let pat = serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body, format!(r#"{{"token":"{pat}","success":true}}"#));
    assert_eq!(pat.len(), 43);
    // Stored hashed and without expiry, and so is the user's index, even after a later login.
    let _ = login(&gw.url(""), "alice", "alice-password-1").await;
    let hash = authgate::session::Token::from_client(&pat).hash().0;
    let all_keys = redis.keys();
    assert!(!all_keys.contains(&pat));
    let session_key = all_keys
        .lines()
        .find(|l| l.ends_with(&format!(":session:{hash}")))
        .unwrap_or_else(|| panic!("no session key in {all_keys}"))
        .to_string();
    let index_key = format!(
        "{}:sessions",
        session_key.split(":session:").next().unwrap()
    );
    for key in [session_key, index_key, format!("authgate:token:{hash}")] {
        let ttl = redis.command(&format!("PTTL {key}")).unwrap();
        assert_eq!(ttl.trim(), ":-1", "{key} expires");
    }

    // The bot uses it like a session; Rocket.Chat sees the user with a token of its own.
    let (status, body) = get(&gw, "/api/v1/channels.list", &uid, &pat).await;
    assert_eq!(status, 200, "{body}");
    let seen = rc.seen().into_iter().last().unwrap();
    assert_eq!(seen.target, "/api/v1/channels.list");
    assert_eq!(seen.header("x-user-id").as_deref(), Some(uid.as_str()));
    let upstream_token = seen.header("x-auth-token").unwrap();
    assert_ne!(upstream_token, pat);
    assert!(rc
        .state
        .lock()
        .unwrap()
        .tokens
        .contains_key(&upstream_token));
    assert_eq!(
        body,
        json!({"path": "/api/v1/channels.list", "userId": uid, "success": true}).to_string()
    );
    assert_eq!(
        get(&gw, "/api/v1/channels.list", "someone-else", &pat)
            .await
            .0,
        401
    );

    let (status, body) = post(
        &gw,
        generate,
        &uid,
        &session,
        json!({"tokenName": "ci-bot"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"success":false,"error":"A token with this name already exists [error-token-already-exists]","errorType":"error-token-already-exists","details":{"method":"personalAccessTokens:generateToken"}}"#
    );
    let (status, body) = post(&gw, generate, &uid, &session, json!({})).await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            r#"{"success":false,"error":"The 'tokenName' param is required"}"#
        )
    );

    let (status, body) = get(&gw, "/api/v1/users.getPersonalAccessTokens", &uid, &session).await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keys(&listed), ["tokens", "success"]);
    let entry = &listed["tokens"][0];
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        keys(entry),
        ["name", "createdAt", "lastTokenPart", "bypassTwoFactor"]
    );
    assert_eq!(entry["name"], "ci-bot");
    assert_eq!(entry["lastTokenPart"], &pat[37..]);
    assert_eq!(entry["bypassTwoFactor"], false);
    assert!(is_iso_date(entry["createdAt"].as_str().unwrap()), "{body}");
    assert!(!body.contains(&pat));

    // The operator sees it, named, without its secret.
    let (code, out, err) =
        support::totp::run_cli(&["sessions", "list", "alice"], &gw.files.config_path);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("personal access token \"ci-bot\""), "{out}");
    assert!(out.contains("never"), "{out}");
    assert!(!out.contains(&pat));

    let (status, body) = post(
        &gw,
        "/api/v1/users.regeneratePersonalAccessToken",
        &uid,
        &session,
        json!({"tokenName": "ci-bot"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let renewed = serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body, format!(r#"{{"token":"{renewed}","success":true}}"#));
    assert_eq!(protected_status(&gw, &uid, &pat).await, 401);
    assert_eq!(protected_status(&gw, &uid, &renewed).await, 200);

    let remove = "/api/v1/users.removePersonalAccessToken";
    let (status, body) = post(&gw, remove, &uid, &session, json!({"tokenName": "ci-bot"})).await;
    assert_eq!((status, body.as_str()), (200, r#"{"success":true}"#));
    assert_eq!(protected_status(&gw, &uid, &renewed).await, 401);
    let (status, body) = post(&gw, remove, &uid, &session, json!({"tokenName": "ci-bot"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"success":false,"error":"Token does not exist [error-token-does-not-exists]","errorType":"error-token-does-not-exists","details":{"method":"personalAccessTokens:removeToken"}}"#
    );
    let (status, body) = get(&gw, "/api/v1/users.getPersonalAccessTokens", &uid, &session).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"tokens":[],"success":true}"#)
    );

    // Without a session: Rocket.Chat's 401, and nothing forwarded.
    let (status, body) = post(
        &gw,
        generate,
        &uid,
        "not-a-token",
        json!({"tokenName": "x"}),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("You must be logged in to do this."), "{body}");
    assert_no_token_request_upstream(&rc);
    assert_never_reached_upstream(&rc, &[&pat, &renewed, &session]);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_methods_over_the_socket_in_rocketchat_mode() {
    let rc = FakeRocketChat::start().await;
    let gw = Gateway::start(&bridge_config(&rc, None, ""), &bridge_users()).await;
    let (uid, session) = login(&gw.url(""), "alice", "alice-password-1").await;
    let (_, other) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws::connect(gw.addr, "/websocket").await;
    let resumed = call(&mut ws, "1", "login", json!([{"resume": session}])).await;
    assert_eq!(resumed["result"]["token"], session.as_str(), "{resumed}");

    let made = call(
        &mut ws,
        "2",
        "personalAccessTokens:generateToken",
        json!([{"tokenName": "deploy", "bypassTwoFactor": false}]),
    )
    .await;
    let pat = made["result"].as_str().expect("a token string").to_string();
    assert_eq!(made, json!({"msg": "result", "id": "2", "result": pat}));
    assert_eq!(protected_status(&gw, &uid, &pat).await, 200);
    let twice = call(
        &mut ws,
        "3",
        "personalAccessTokens:generateToken",
        json!([{"tokenName": "deploy"}]),
    )
    .await;
    assert_eq!(
        twice,
        json!({"msg": "result", "id": "3", "error": {"isClientSafe": true, "error": "error-token-already-exists", "reason": "A token with this name already exists", "details": {"method": "personalAccessTokens:generateToken"}, "message": "A token with this name already exists [error-token-already-exists]", "errorType": "Meteor.Error"}})
    );
    let renewed = call(
        &mut ws,
        "4",
        "personalAccessTokens:regenerateToken",
        json!([{"tokenName": "deploy"}]),
    )
    .await;
    let renewed = renewed["result"].as_str().unwrap().to_string();
    assert_eq!(protected_status(&gw, &uid, &pat).await, 401);
    assert_eq!(protected_status(&gw, &uid, &renewed).await, 200);
    let removed = call(
        &mut ws,
        "5",
        "personalAccessTokens:removeToken",
        json!([{"tokenName": "deploy"}]),
    )
    .await;
    assert_eq!(removed, json!({"msg": "result", "id": "5"}));
    assert_eq!(protected_status(&gw, &uid, &renewed).await, 401);

    // Meteor's getNewToken: a new token for this connection, the old one still valid.
    let new_token = call(&mut ws, "6", "getNewToken", json!([])).await;
    assert_eq!(
        keys(&new_token["result"]),
        ["id", "token", "tokenExpires"],
        "{new_token}"
    );
    assert_eq!(new_token["result"]["id"], uid.as_str());
    let moved = new_token["result"]["token"].as_str().unwrap().to_string();
    assert!(new_token["result"]["tokenExpires"]["$date"]
        .as_u64()
        .is_some());
    assert_eq!(protected_status(&gw, &uid, &moved).await, 200);

    // logoutOtherClients: `{token, tokenExpires}`; the connection's own token stays.
    let out = call(&mut ws, "7", "logoutOtherClients", json!([])).await;
    assert_eq!(keys(&out["result"]), ["token", "tokenExpires"], "{out}");
    let fresh = out["result"]["token"].as_str().unwrap().to_string();
    assert!(out["result"]["tokenExpires"]["$date"].as_u64().unwrap() > 0);
    for token in [&session, &other] {
        assert_eq!(protected_status(&gw, &uid, token).await, 401);
    }
    for token in [&moved, &fresh] {
        assert_eq!(protected_status(&gw, &uid, token).await, 200);
    }
    for token in [&pat, &renewed, &moved, &fresh] {
        assert!(!rc.state.lock().unwrap().tokens.contains_key(token.as_str()));
    }

    // A socket without a session gets the methods' own errors.
    let mut anonymous = ws::connect(gw.addr, "/websocket").await;
    let refused = call(&mut anonymous, "1", "removeOtherTokens", json!([])).await;
    assert_eq!(
        refused,
        json!({"msg": "result", "id": "1", "error": {"isClientSafe": true, "error": "You are not logged in.", "message": "[You are not logged in.]", "errorType": "Meteor.Error"}})
    );
    let refused = call(
        &mut anonymous,
        "2",
        "personalAccessTokens:generateToken",
        json!([{"tokenName": "x"}]),
    )
    .await;
    assert_eq!(refused["error"]["error"], "not-authorized", "{refused}");
    assert_no_token_request_upstream(&rc);
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_headers_mode_method_calls_and_an_operator_turning_tokens_off() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(&config_text(up.addr, None, ""), &bridge_users()).await;
    let (uid, session) = login(&gw.url(""), "bob", "bob-password-2").await;
    let (_, other) = login(&gw.url(""), "bob", "bob-password-2").await;

    let made = method_call(
        &gw,
        &uid,
        &session,
        "personalAccessTokens:generateToken",
        json!([{"tokenName": "ci", "bypassTwoFactor": true}]),
    )
    .await;
    let pat = made["result"].as_str().unwrap().to_string();
    assert_eq!(made, json!({"msg": "result", "id": "42", "result": pat}));

    // A bot with the token: the backend sees the checked identity.
    let (status, _) = get(&gw, "/api/v1/channels.list", &uid, &pat).await;
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(seen.target, "/api/v1/channels.list");
    assert_eq!(seen.header("x-user-id").as_deref(), Some(uid.as_str()));
    assert_eq!(seen.header("x-auth-token").as_deref(), Some(pat.as_str()));
    let (status, body) = get(&gw, "/api/v1/users.getPersonalAccessTokens", &uid, &pat).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""name":"ci""#) && body.contains(r#""bypassTwoFactor":true"#));

    let out = method_call(&gw, &uid, &session, "logoutOtherClients", json!([])).await;
    assert_eq!(out["id"], "42");
    assert_eq!(keys(&out["result"]), ["token", "tokenExpires"], "{out}");
    let fresh = out["result"]["token"].as_str().unwrap().to_string();
    assert_eq!(protected_status(&gw, &uid, &other).await, 401);
    assert_eq!(protected_status(&gw, &uid, &fresh).await, 200);
    let removed = method_call(&gw, &uid, &session, "removeOtherTokens", json!([])).await;
    assert_eq!(removed, json!({"msg": "result", "id": "42"}));
    assert_eq!(protected_status(&gw, &uid, &fresh).await, 401);
    assert_eq!(protected_status(&gw, &uid, &session).await, 200);
    assert_eq!(protected_status(&gw, &uid, &pat).await, 200);

    // A method.call whose frame names another method than its URL is refused.
    let frame = json!({"msg": "method", "id": "1", "method": "sendMessage", "params": []});
    let (status, _) = post(
        &gw,
        "/api/v1/method.call/removeOtherTokens",
        &uid,
        &session,
        json!({"message": frame.to_string()}),
    )
    .await;
    assert_eq!(status, 400);

    let before = up.count();
    // The operator turns personal access tokens off: existing ones stop working everywhere.
    let config = std::fs::read_to_string(&gw.files.config_path)
        .unwrap()
        .replace("[session]\n", "[session]\npersonal_access_tokens = false\n");
    std::fs::write(&gw.files.config_path, config).unwrap();
    gw.reload().await.unwrap();
    let (status, body) = get(&gw, "/api/v1/channels.list", &uid, &pat).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(
        &gw,
        "/api/v1/users.generatePersonalAccessToken",
        &uid,
        &session,
        json!({"tokenName": "another"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"success":false,"error":"Personal Access Tokens are currently disabled [error-personal-access-tokens-are-current-disabled]","errorType":"error-personal-access-tokens-are-current-disabled","details":{"method":"personalAccessTokens:generateToken"}}"#
    );
    assert_eq!(protected_status(&gw, &uid, &session).await, 200);
    // Only the last protected_status reached the backend; no token request ever did.
    assert_eq!(up.count(), before + 1);
    for r in up.requests() {
        assert!(
            !TOKEN_PATHS.iter().any(|p| r.target.contains(p)),
            "{} reached the backend",
            r.target
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_a_token_needs_the_second_factor_of_a_totp_user() {
    use support::totp::{code, now_step};
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), ""),
        &bridge_users(),
    )
    .await;
    let step = now_step();
    let (status, body) = support::totp::post_login(
        &gw,
        &json!({"user": "tina", "password": "tina-password-5"}),
        Some(&code(TOTP_SECRET, step)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (uid, session) = support::totp::session_of(&body);
    let generate = gw.url("/api/v1/users.generatePersonalAccessToken");
    let body = json!({"tokenName": "tina-bot", "bypassTwoFactor": true});

    let (status, answer) = send(
        reqwest::Method::POST,
        generate.clone(),
        &uid,
        &session,
        Some(body.clone()),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer,
        r#"{"success":false,"error":"TOTP Required [totp-required]","errorType":"totp-required","details":{"method":"totp","codeGenerated":false,"availableMethods":["totp"]}}"#
    );
    let (status, answer) = send(
        reqwest::Method::POST,
        generate.clone(),
        &uid,
        &session,
        Some(body.clone()),
        &[("X-2fa-Code", "000000"), ("X-2fa-Method", "totp")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer,
        r#"{"success":false,"error":"TOTP Invalid [totp-invalid]","errorType":"totp-invalid","details":{"method":"totp","codeGenerated":false,"availableMethods":["totp"]}}"#
    );
    // The code of the login's own step is used up; the next one is accepted.
    let next = code(TOTP_SECRET, step + 1);
    let (status, answer) = send(
        reqwest::Method::POST,
        generate.clone(),
        &uid,
        &session,
        Some(body.clone()),
        &[("X-2fa-Code", &next), ("X-2fa-Method", "totp")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let pat = serde_json::from_str::<Value>(&answer).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // A token made with bypassTwoFactor manages tokens without a code.
    let (status, answer) = send(
        reqwest::Method::POST,
        generate.clone(),
        &uid,
        &pat,
        Some(json!({"tokenName": "second"})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let second = serde_json::from_str::<Value>(&answer).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // ... and one made without it does not.
    let (status, answer) = send(
        reqwest::Method::POST,
        gw.url("/api/v1/users.removePersonalAccessToken"),
        &uid,
        &second,
        Some(json!({"tokenName": "tina-bot"})),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        answer.contains(r#""errorType":"totp-required""#),
        "{answer}"
    );

    // Over DDP the method answers Rocket.Chat's totp-required error frame.
    let frame = method_call(
        &gw,
        &uid,
        &session,
        "personalAccessTokens:removeToken",
        json!([{"tokenName": "tina-bot"}]),
    )
    .await;
    assert_eq!(
        frame,
        json!({"msg": "result", "id": "42", "error": {"isClientSafe": true, "error": "totp-required", "reason": "TOTP Required", "details": {"method": "totp", "codeGenerated": false, "availableMethods": ["totp"]}, "message": "TOTP Required [totp-required]", "errorType": "Meteor.Error"}})
    );
    assert_eq!(protected_status(&gw, &uid, &pat).await, 200);
    for r in up.requests() {
        assert!(
            !TOKEN_PATHS.iter().any(|p| r.target.contains(p)),
            "{} reached the backend",
            r.target
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ldap_users_second_factor_is_asked_for_from_the_directory() {
    use support::slapd::Slapd;
    use support::totp::{code, now_step};
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let toml = s.directory_toml("preset = \"openldap\"")
        + "\n[directory.ldap.attributes]\nid = \"uid\"\ntotp_secret = \"description\"\n";
    let gw = Gateway::start(
        &config_text(up.addr, None, &toml),
        &users_toml(&standard_users()),
    )
    .await;
    let step = now_step();
    let (status, body) = support::totp::post_login(
        &gw,
        &json!({"user": "tina", "password": "tina-ldap-pw"}),
        Some(&code(support::slapd::TOTP_SECRET, step)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (tina, tinas) = support::totp::session_of(&body);
    let generate = "/api/v1/users.generatePersonalAccessToken";
    let (status, body) = post(&gw, generate, &tina, &tinas, json!({"tokenName": "t"})).await;
    assert_eq!(status, 400);
    assert!(body.contains(r#""errorType":"totp-required""#), "{body}");
    let next = code(support::slapd::TOTP_SECRET, step + 1);
    let (status, body) = send(
        reqwest::Method::POST,
        gw.url(generate),
        &tina,
        &tinas,
        Some(json!({"tokenName": "t"})),
        &[("X-2fa-Code", &next), ("X-2fa-Method", "totp")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // An LDAP user without a secret needs no code.
    let (status, body) = support::totp::post_login(
        &gw,
        &json!({"user": "erin", "password": "erin-ldap-pw"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (erin, erins) = support::totp::session_of(&body);
    let (status, body) = post(&gw, generate, &erin, &erins, json!({"tokenName": "e"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(up
        .requests()
        .iter()
        .all(|r| !r.target.contains("PersonalAccessToken")));
}

/// `users.logout` ends every token of the caller, its own included, and is never forwarded;
/// another user's id is refused as Rocket.Chat refuses a caller without the permission.
#[tokio::test(flavor = "multi_thread")]
async fn users_logout_ends_every_session_of_the_caller_and_nothing_else() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(&config_text(up.addr, None, ""), &bridge_users()).await;
    let (uid, first) = login(&gw.url(""), "bob", "bob-password-2").await;
    let (_, second) = login(&gw.url(""), "bob", "bob-password-2").await;
    let (alice, alice_token) = login(&gw.url(""), "alice", "alice-password-1").await;

    let (status, body) = post(
        &gw,
        "/api/v1/users.logout",
        &uid,
        &first,
        json!({"userId": alice}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"success":false,"error":"Not allowed [error-not-allowed]","errorType":"error-not-allowed","details":{"method":"users.logout"}}"#
    );
    assert_eq!(protected_status(&gw, &alice, &alice_token).await, 200);

    let (status, body) = post(&gw, "/api/v1/users.logout", &uid, &first, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(r#"{{"message":"User {uid} has been logged out!","success":true}}"#)
    );
    assert_eq!(protected_status(&gw, &uid, &first).await, 401);
    assert_eq!(protected_status(&gw, &uid, &second).await, 401);
    assert_eq!(protected_status(&gw, &alice, &alice_token).await, 200);
    assert!(
        up.requests()
            .iter()
            .all(|r| !r.target.contains("users.logout")),
        "users.logout reached the backend"
    );
}

/// A public route an operator wrote over a token endpoint does not forward it: token
/// management is always answered by authgate.
#[tokio::test(flavor = "multi_thread")]
async fn a_public_route_cannot_expose_token_management() {
    let up = RecordingUpstream::start().await;
    let config = config_text(
        up.addr,
        None,
        "[routes]\npublic = [\"/api/v1/users.logoutOtherClients\", \"/api/v1/users.logout\"]\n",
    );
    let gw = Gateway::start(&config, &bridge_users()).await;
    for path in ["/api/v1/users.logoutOtherClients", "/api/v1/users.logout"] {
        let r = client()
            .post(gw.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        assert_eq!(
            r.text().await.unwrap(),
            r#"{"success":false,"error":"You must be logged in to do this.","status":"error","message":"You must be logged in to do this."}"#
        );
    }
    assert_eq!(up.count(), 0, "a token request reached the backend");
}
