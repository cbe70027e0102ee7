//! The realtime API through authgate: DDP logins on raw and SockJS WebSockets, token swap,
//! settings, logout, and live revocation across instances.

mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::bridge::*;
use support::rocketchat::FakeRocketChat;
use support::ws::{self, Socket};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Logs the socket in with a DDP resume and checks authgate's token comes back.
async fn resume_on_socket(ws: &mut Socket, token: &str) {
    let frame =
        json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": token}]});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let result: Value = serde_json::from_str(&ws::next_text(ws).await).unwrap();
    assert_eq!(result["result"]["token"], token, "{result}");
}

/// Sends one DDP frame and returns the next frame the client receives.
async fn call(ws: &mut Socket, frame: Value) -> Value {
    ws.send(Message::text(frame.to_string())).await.unwrap();
    serde_json::from_str(&ws::next_text(ws).await).unwrap()
}

fn resume_frame(id: &str, token: &str) -> Value {
    json!({"msg": "method", "id": id, "method": "login", "params": [{"resume": token}]})
}

/// A successful DDP login result, as Rocket.Chat's clients read it: the method id, the user id,
/// authgate's token and an expiry still ahead.
fn assert_login_result(frame: &Value, id: &str, user_id: &str, token: &str, kind: &str) {
    assert_eq!(frame["msg"], "result", "{frame}");
    assert_eq!(frame["id"], id, "{frame}");
    assert!(frame.get("error").is_none(), "{frame}");
    assert_eq!(frame["result"]["id"], user_id, "{frame}");
    assert_eq!(frame["result"]["token"], token, "{frame}");
    assert_eq!(frame["result"]["type"], kind, "{frame}");
    let expires = frame["result"]["tokenExpires"]["$date"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tokenExpires: {frame}"));
    assert!(
        expires > authgate::session::now_unix_ms(),
        "tokenExpires is past: {frame}"
    );
}

fn assert_logged_out_error(frame: &Value, id: &str) {
    assert_eq!(frame["msg"], "result", "{frame}");
    assert_eq!(frame["id"], id, "{frame}");
    assert_eq!(frame["error"]["error"], 403, "{frame}");
    assert_eq!(
        frame["error"]["reason"], "You've been logged out by the server. Please log in again.",
        "{frame}"
    );
    assert!(frame.get("result").is_none(), "{frame}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_logins_are_checked_and_swapped() {
    let (rc, gw) = start().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws::connect(gw.addr, "/websocket").await;
    ws.send(Message::text(
        json!({"msg": "connect", "version": "1", "support": ["1"]}).to_string(),
    ))
    .await
    .unwrap();
    assert!(ws::next_text(&mut ws).await.contains("connected"));
    let result = call(&mut ws, resume_frame("1", &token)).await;
    assert_login_result(&result, "1", &uid, &token, "resume");
    // Rocket.Chat saw a resume with its own token.
    let resumed = rc
        .state
        .lock()
        .unwrap()
        .ddp_in
        .iter()
        .find(|f| f["method"] == "login")
        .cloned()
        .unwrap();
    let rc_token = resumed["params"][0]["resume"].as_str().unwrap().to_string();
    assert!(rc.state.lock().unwrap().tokens.contains_key(&rc_token));
    // A password login over the socket, and a forged resume.
    ws.send(Message::text(json!({"msg": "method", "id": "2", "method": "login", "params": [{"ldap": true, "username": "bob", "ldapPass": "bob-password-2", "ldapOptions": {}}]}).to_string())).await.unwrap();
    let result: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert_eq!(
        result["result"]["token"].as_str().unwrap().len(),
        43,
        "{result}"
    );
    ws.send(Message::text(
        json!({"msg": "method", "id": "3", "method": "login", "params": [{"resume": rc_token}]})
            .to_string(),
    ))
    .await
    .unwrap();
    let result: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert_eq!(
        result["error"]["error"], 403,
        "a Rocket.Chat token is not an authgate session: {result}"
    );
    ws.send(Message::text(json!({"msg": "method", "id": "4", "method": "login", "params": [{"user": {"username": "bob"}, "password": "wrong"}]}).to_string())).await.unwrap();
    let result: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert_eq!(result["error"]["error"], 401);
    // Settings over DDP are rewritten too.
    ws.send(Message::text(
        json!({"msg": "method", "id": "5", "method": "public-settings/get", "params": []})
            .to_string(),
    ))
    .await
    .unwrap();
    let result: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert!(
        result["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["_id"] == "LDAP_Enable" && s["value"] == true),
        "{result}"
    );
    let logins: Vec<Value> = rc
        .state
        .lock()
        .unwrap()
        .ddp_in
        .iter()
        .filter(|f| f["method"] == "login")
        .cloned()
        .collect();
    assert_eq!(
        logins.len(),
        2,
        "only the two authenticated logins reached Rocket.Chat: {logins:?}"
    );
    assert_never_reached_upstream(&rc, &["alice-password-1", "bob-password-2", &token]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sockjs_framing_is_read_too() {
    let (_rc, gw) = start().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws::connect(gw.addr, "/sockjs/123/abcdef/websocket").await;
    assert_eq!(ws::next_text(&mut ws).await, "o");
    let frame =
        json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": token}]})
            .to_string();
    ws.send(Message::text(json!([frame]).to_string()))
        .await
        .unwrap();
    let text = ws::next_text(&mut ws).await;
    let inner: Vec<String> = serde_json::from_str(text.strip_prefix('a').unwrap()).unwrap();
    assert_eq!(inner.len(), 1, "{text}");
    let result: Value = serde_json::from_str(&inner[0]).unwrap();
    assert_login_result(&result, "1", &uid, &token, "resume");
    // SockJS's HTTP transports would carry frames authgate does not read: refused.
    let r = client()
        .post(gw.url("/sockjs/123/abcdef/xhr_send"))
        .body("[\"x\"]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_on_one_instance_closes_sockets_on_another_within_a_second() {
    let redis = Redis::start();
    let rc = FakeRocketChat::start().await;
    let a = Gateway::start(&bridge_config(&rc, Some(&redis.url()), ""), &bridge_users()).await;
    let b = Gateway::start(&bridge_config(&rc, Some(&redis.url()), ""), &bridge_users()).await;
    let (uid, token) = login(&a.url(""), "alice", "alice-password-1").await;
    let mut ws = ws::connect(b.addr, "/websocket").await;
    resume_on_socket(&mut ws, &token).await;
    assert_eq!(logout_status(&a, &uid, &token).await, 200);
    let revoked = Instant::now();
    let closed = ws::closes_within(&mut ws, Duration::from_secs(3)).await;
    assert!(closed, "the socket stayed open");
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        revoked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn realtime_in_trusted_headers_mode_and_logout_over_the_socket() {
    let (rc, gw) = trusted_headers().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws::connect(gw.addr, "/websocket").await;
    // A password login is checked here and reaches the backend as a resume of the new session.
    let result = call(&mut ws, json!({"msg": "method", "id": "1", "method": "login", "params": [{"user": {"username": "bob"}, "password": "bob-password-2"}]})).await;
    let bob_token = result["result"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(bob_token.len(), 43, "{result}");
    assert_ne!(bob_token, token);
    let bob_id = result["result"]["id"].as_str().unwrap().to_string();
    assert_login_result(&result, "1", &bob_id, &bob_token, "password");
    // A forged resume never reaches the backend.
    let result = call(&mut ws, resume_frame("2", "forged-token")).await;
    assert_logged_out_error(&result, "2");
    // A checked resume: the backend's login result reaches the client with authgate's token.
    let result = call(&mut ws, resume_frame("3", &token)).await;
    assert_login_result(&result, "3", &uid, &token, "resume");
    assert_eq!(
        rc.socket_logins(),
        vec![
            json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": bob_token, "userId": bob_id}]}),
            json!({"msg": "method", "id": "3", "method": "login", "params": [{"resume": token, "userId": uid}]}),
        ]
    );
    // logout over the socket revokes the session everywhere.
    let result = call(
        &mut ws,
        json!({"msg": "method", "id": "4", "method": "logout", "params": []}),
    )
    .await;
    assert_eq!(
        result,
        json!({"msg": "result", "id": "4", "result": "logout ok"})
    );
    assert_eq!(protected_status(&gw, &uid, &token).await, 401);
    assert_eq!(protected_status(&gw, &bob_id, &bob_token).await, 200);
    assert_never_reached_upstream(&rc, &["bob-password-2", "alice-password-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabling_a_user_in_the_users_file_closes_their_sockets() {
    let rc = FakeRocketChat::start().await;
    let users = bridge_users();
    let gw = Gateway::start(&bridge_config(&rc, None, ""), &users).await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws::connect(gw.addr, "/websocket").await;
    resume_on_socket(&mut ws, &token).await;
    // The operator disables alice and reloads (SIGHUP does the same).
    let disabled = users.replacen(
        "username = \"alice\"",
        "username = \"alice\"\nactive = false",
        1,
    );
    gw.reload_users(&disabled).await;
    let reloaded = Instant::now();
    let closed = ws::closes_within(&mut ws, Duration::from_secs(3)).await;
    assert!(
        closed && reloaded.elapsed() < Duration::from_secs(1),
        "socket of a disabled user stayed open"
    );
    assert_eq!(protected_status(&gw, &uid, &token).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_resume_after_rocket_chat_dropped_the_token_gets_a_fresh_one() {
    let (rc, gw) = start().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    // "Log out other sessions" (or an expiry, a password change) on the Rocket.Chat side.
    rc.drop_user_tokens(&uid);
    let grants = rc.state.lock().unwrap().token_grants;
    for path in ["/websocket", "/sockjs/123/abcdef/websocket"] {
        let mut ws = ws::connect(gw.addr, path).await;
        let sockjs = path.starts_with("/sockjs");
        if sockjs {
            assert_eq!(ws::next_text(&mut ws).await, "o");
        }
        let frame = resume_frame("1", &token);
        let text = if sockjs {
            json!([frame.to_string()]).to_string()
        } else {
            frame.to_string()
        };
        ws.send(Message::text(text)).await.unwrap();
        // The first thing the client hears is the successful login: no intermediate error.
        let text = ws::next_text(&mut ws).await;
        let result: Value = if sockjs {
            let inner: Vec<String> =
                serde_json::from_str(text.strip_prefix('a').expect(&text)).unwrap();
            assert_eq!(inner.len(), 1, "{text}");
            serde_json::from_str(&inner[0]).unwrap()
        } else {
            serde_json::from_str(&text).unwrap()
        };
        assert_login_result(&result, "1", &uid, &token, "resume");
        if !sockjs {
            // Nothing else was queued for the client: the next frame answers the next call.
            let next = call(
                &mut ws,
                json!({"msg": "method", "id": "2", "method": "rooms/get", "params": []}),
            )
            .await;
            assert_eq!(
                next,
                json!({"msg": "result", "id": "2", "result": "rooms/get ok"})
            );
        }
    }
    let logins = rc.socket_logins();
    let resumed: Vec<&str> = logins
        .iter()
        .map(|f| f["params"][0]["resume"].as_str().unwrap())
        .collect();
    let st = rc.state.lock().unwrap();
    // The first socket: the dropped token, refused, then one fresh token, accepted; the second
    // socket uses that fresh token straight away.
    assert_eq!(resumed.len(), 3, "{logins:?}");
    assert!(!st.tokens.contains_key(resumed[0]), "{logins:?}");
    assert_eq!(st.tokens.get(resumed[1]), Some(&uid), "{logins:?}");
    assert_eq!(resumed[2], resumed[1], "{logins:?}");
    assert_eq!(st.token_grants, grants + 1, "one token minted");
    drop(st);
    assert_never_reached_upstream(&rc, &["alice-password-1", &token]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_resume_on_instance_b_uses_the_token_renewed_on_instance_a() {
    let redis = Redis::start();
    let rc = FakeRocketChat::start().await;
    let a = Gateway::start(&bridge_config(&rc, Some(&redis.url()), ""), &bridge_users()).await;
    let b = Gateway::start(&bridge_config(&rc, Some(&redis.url()), ""), &bridge_users()).await;
    let (uid, token) = login(&a.url(""), "alice", "alice-password-1").await;
    // B and A both hold the session, with its first Rocket.Chat token, in their caches.
    for _ in 0..3 {
        assert_eq!(protected_status(&b, &uid, &token).await, 200);
        assert_eq!(protected_status(&a, &uid, &token).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Rocket.Chat drops the token; a REST request on A renews it transparently.
    rc.drop_user_tokens(&uid);
    assert_eq!(protected_status(&a, &uid, &token).await, 200);
    let (renewed, grants) = {
        let st = rc.state.lock().unwrap();
        let mine: Vec<String> = st
            .tokens
            .iter()
            .filter(|(_, u)| **u == uid)
            .map(|(t, _)| t.clone())
            .collect();
        assert_eq!(mine.len(), 1, "A renewed once: {mine:?}");
        (mine[0].clone(), st.token_grants)
    };
    // A socket resume on B goes up with A's renewed token, read past B's cache.
    let mut ws = ws::connect(b.addr, "/websocket").await;
    let result = call(&mut ws, resume_frame("1", &token)).await;
    assert_login_result(&result, "1", &uid, &token, "resume");
    assert_eq!(
        rc.socket_logins(),
        vec![
            json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": renewed}]})
        ]
    );
    assert_eq!(
        rc.state.lock().unwrap().token_grants,
        grants,
        "no token minted on B"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_headers_backend_sees_who_opened_the_socket() {
    let (rc, gw) = trusted_headers().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let (bob_id, _) = login(&gw.url(""), "bob", "bob-password-2").await;
    let cookie = format!("theme=dark; rc_uid={uid}; rc_token={token}");
    let forged = format!("rc_uid={uid}; rc_token=forged-token");
    type UpgradeCase<'a> = (Vec<(&'a str, &'a str)>, Option<(&'a str, &'a str)>);
    let cases: Vec<UpgradeCase> = vec![
        // A REST login, then the socket: the session's identity goes up on the upgrade.
        (
            vec![("X-User-Id", &uid), ("X-Auth-Token", &token)],
            Some((&uid, &token)),
        ),
        (vec![("Cookie", &cookie)], Some((&uid, &token))),
        // Credentials that name no live session are stripped, never forwarded.
        (
            vec![("X-User-Id", &uid), ("X-Auth-Token", "forged-token")],
            None,
        ),
        (vec![("X-User-Id", &bob_id), ("X-Auth-Token", &token)], None),
        (vec![("Cookie", &forged)], None),
        (vec![("X-Auth-Token", &token)], None),
    ];
    for (headers, expected) in &cases {
        let before = rc.upgrades().len();
        let mut ws = ws::connect_with(gw.addr, "/websocket", headers).await;
        let reply = call(
            &mut ws,
            json!({"msg": "connect", "version": "1", "support": ["1"]}),
        )
        .await;
        assert_eq!(reply["msg"], "connected");
        let upgrades = rc.upgrades();
        assert_eq!(upgrades.len(), before + 1);
        let seen = &upgrades[before];
        let identity = seen.header("x-user-id").zip(seen.header("x-auth-token"));
        assert_eq!(
            identity,
            expected.map(|(u, t)| (u.to_string(), t.to_string())),
            "{headers:?}"
        );
        if expected.is_none() {
            assert_eq!(seen.header("x-user-id"), None, "{headers:?}");
            assert_eq!(seen.header("x-auth-token"), None, "{headers:?}");
        }
        let cookies = seen.header("cookie").unwrap_or_default();
        assert!(
            !cookies.contains("rc_uid") && !cookies.contains("rc_token"),
            "{cookies}"
        );
    }
    // The socket belongs to that session: a logout anywhere closes it.
    let mut ws = ws::connect_with(
        gw.addr,
        "/websocket",
        &[("X-User-Id", &uid), ("X-Auth-Token", &token)],
    )
    .await;
    assert_eq!(logout_status(&gw, &uid, &token).await, 200);
    assert!(ws::closes_within(&mut ws, Duration::from_secs(3)).await);
    assert!(rc.socket_logins().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_on_an_open_socket_reaches_a_trusted_headers_backend_as_a_checked_resume() {
    let (rc, gw) = trusted_headers().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws::connect(gw.addr, "/websocket").await;
    // A resume naming another user: the backend hears the session's own user id.
    let (bob_id, _) = login(&gw.url(""), "bob", "bob-password-2").await;
    let result = call(
        &mut ws,
        json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": token, "userId": bob_id}]}),
    )
    .await;
    assert_login_result(&result, "1", &uid, &token, "resume");
    // A password login over the socket: the backend gets the new session, never the password.
    let result = call(&mut ws, json!({"msg": "method", "id": "2", "method": "login", "params": [{"user": {"username": "bob"}, "password": "bob-password-2"}]})).await;
    let bob_token = result["result"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_login_result(&result, "2", &bob_id, &bob_token, "password");
    assert_eq!(protected_status(&gw, &bob_id, &bob_token).await, 200);
    // Failed logins stay here.
    let result = call(&mut ws, json!({"msg": "method", "id": "3", "method": "login", "params": [{"user": {"username": "bob"}, "password": "wrong"}]})).await;
    assert_eq!(result["error"]["error"], 401, "{result}");
    let result = call(&mut ws, resume_frame("4", "forged-token")).await;
    assert_logged_out_error(&result, "4");
    assert_eq!(
        rc.socket_logins(),
        vec![
            json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": token, "userId": uid}]}),
            json!({"msg": "method", "id": "2", "method": "login", "params": [{"resume": bob_token, "userId": bob_id}]}),
        ]
    );
    // Method calls after it reach the backend on the same socket.
    let result = call(
        &mut ws,
        json!({"msg": "method", "id": "5", "method": "rooms/get", "params": []}),
    )
    .await;
    assert_eq!(
        result,
        json!({"msg": "result", "id": "5", "result": "rooms/get ok"})
    );
    assert_never_reached_upstream(&rc, &["bob-password-2", "alice-password-1", "wrong"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_login_the_backend_refuses_leaves_the_socket_to_its_session() {
    // A backend that does not take authgate's resumes answers them with its own error.
    let rc = FakeRocketChat::start().await;
    let gw = Gateway::start(&config_text(rc.addr, None, ""), &bridge_users()).await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws::connect_with(
        gw.addr,
        "/websocket",
        &[("X-User-Id", &uid), ("X-Auth-Token", &token)],
    )
    .await;
    let result = call(&mut ws, json!({"msg": "method", "id": "1", "method": "login", "params": [{"user": {"username": "bob"}, "password": "bob-password-2"}]})).await;
    assert_eq!(
        result,
        json!({"msg": "result", "id": "1", "error": {"error": 403, "reason": "You've been logged out by the server. Please log in again.", "errorType": "Meteor.Error"}})
    );
    assert_eq!(rc.socket_logins().len(), 1);
    // Still alice's socket, as the backend sees it: her logout closes it.
    assert_eq!(logout_status(&gw, &uid, &token).await, 200);
    assert!(ws::closes_within(&mut ws, Duration::from_secs(3)).await);
    assert_never_reached_upstream(&rc, &["bob-password-2"]);
}
