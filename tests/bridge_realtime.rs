//! The realtime API through authgate: DDP logins on raw and SockJS WebSockets, token swap,
//! settings, logout, and live revocation across instances.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::bridge::*;
use support::rocketchat::FakeRocketChat;
use support::*;
use tokio_tungstenite::tungstenite::Message;

async fn ws_connect(
    gw: &Gateway,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}{path}", gw.addr))
        .await
        .expect("websocket through authgate");
    assert_eq!(resp.status(), 101);
    ws
}

async fn next_text<
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
>(
    ws: &mut S,
) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no frame in time")
        {
            Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Logs the socket in with a DDP resume and checks authgate's token comes back.
async fn resume_on_socket(ws: &mut Socket, token: &str) {
    let frame =
        json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": token}]});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let result: Value = serde_json::from_str(&next_text(ws).await).unwrap();
    assert_eq!(result["result"]["token"], token, "{result}");
}

/// Ok when the socket closes (or dies) within `limit`.
async fn socket_closes(
    ws: &mut Socket,
    limit: Duration,
) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_logins_are_checked_and_swapped() {
    let (rc, gw) = start().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws_connect(&gw, "/websocket").await;
    ws.send(Message::text(
        json!({"msg": "connect", "version": "1", "support": ["1"]}).to_string(),
    ))
    .await
    .unwrap();
    assert!(next_text(&mut ws).await.contains("connected"));
    ws.send(Message::text(
        json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": token}]})
            .to_string(),
    ))
    .await
    .unwrap();
    let result: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(result["result"]["token"], token, "{result}");
    assert_eq!(result["result"]["id"], uid);
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
    let result: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
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
    let result: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(
        result["error"]["error"], 403,
        "a Rocket.Chat token is not an authgate session: {result}"
    );
    ws.send(Message::text(json!({"msg": "method", "id": "4", "method": "login", "params": [{"user": {"username": "bob"}, "password": "wrong"}]}).to_string())).await.unwrap();
    let result: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(result["error"]["error"], 401);
    // Settings over DDP are rewritten too.
    ws.send(Message::text(
        json!({"msg": "method", "id": "5", "method": "public-settings/get", "params": []})
            .to_string(),
    ))
    .await
    .unwrap();
    let result: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
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
    let mut ws = ws_connect(&gw, "/sockjs/123/abcdef/websocket").await;
    assert_eq!(next_text(&mut ws).await, "o");
    let frame =
        json!({"msg": "method", "id": "1", "method": "login", "params": [{"resume": token}]})
            .to_string();
    ws.send(Message::text(json!([frame]).to_string()))
        .await
        .unwrap();
    let text = next_text(&mut ws).await;
    let inner: Vec<String> = serde_json::from_str(text.strip_prefix('a').unwrap()).unwrap();
    let result: Value = serde_json::from_str(&inner[0]).unwrap();
    assert_eq!(result["result"]["token"], token);
    assert_eq!(result["result"]["id"], uid);
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
    let mut ws = ws_connect(&b, "/websocket").await;
    resume_on_socket(&mut ws, &token).await;
    assert_eq!(logout_status(&a, &uid, &token).await, 200);
    let revoked = Instant::now();
    let closed = socket_closes(&mut ws, Duration::from_secs(3)).await;
    assert!(closed.is_ok(), "the socket stayed open");
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        revoked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn realtime_in_trusted_headers_mode_and_logout_over_the_socket() {
    let rc = FakeRocketChat::start().await;
    let gw = Gateway::start(&config_text(rc.addr, None, ""), &bridge_users()).await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws_connect(&gw, "/websocket").await;
    // A password login is answered by authgate itself with a session of its own.
    ws.send(Message::text(json!({"msg": "method", "id": "1", "method": "login", "params": [{"user": {"username": "bob"}, "password": "bob-password-2"}]}).to_string())).await.unwrap();
    let result: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(result["result"]["type"], "password", "{result}");
    assert_eq!(result["result"]["token"].as_str().unwrap().len(), 43);
    // A checked resume passes on unchanged; a forged one never reaches the backend.
    ws.send(Message::text(json!({"msg": "method", "id": "2", "method": "login", "params": [{"resume": "forged-token"}]}).to_string())).await.unwrap();
    let result: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(result["error"]["error"], 403);
    ws.send(Message::text(
        json!({"msg": "method", "id": "3", "method": "login", "params": [{"resume": token}]})
            .to_string(),
    ))
    .await
    .unwrap();
    let _ = next_text(&mut ws).await;
    let logins: Vec<Value> = rc
        .state
        .lock()
        .unwrap()
        .ddp_in
        .iter()
        .filter(|f| f["method"] == "login")
        .cloned()
        .collect();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0]["params"][0]["resume"], token);
    // logout over the socket revokes the session everywhere.
    ws.send(Message::text(
        json!({"msg": "method", "id": "4", "method": "logout", "params": []}).to_string(),
    ))
    .await
    .unwrap();
    let _ = next_text(&mut ws).await;
    assert_eq!(protected_status(&gw, &uid, &token).await, 401);
    assert_never_reached_upstream(&rc, &["bob-password-2", "alice-password-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabling_a_user_in_the_users_file_closes_their_sockets() {
    let rc = FakeRocketChat::start().await;
    let users = bridge_users();
    let gw = Gateway::start(&bridge_config(&rc, None, ""), &users).await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = ws_connect(&gw, "/websocket").await;
    resume_on_socket(&mut ws, &token).await;
    // The operator disables alice and reloads (SIGHUP does the same).
    let disabled = users.replacen(
        "username = \"alice\"",
        "username = \"alice\"\nactive = false",
        1,
    );
    gw.reload_users(&disabled).await;
    let reloaded = Instant::now();
    let closed = socket_closes(&mut ws, Duration::from_secs(3)).await;
    assert!(
        closed.is_ok() && reloaded.elapsed() < Duration::from_secs(1),
        "socket of a disabled user stayed open"
    );
    assert_eq!(protected_status(&gw, &uid, &token).await, 401);
}
