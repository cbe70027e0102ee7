//! Users made by the real `authgate hash-password` log in with the plain password and with
//! Meteor's `{digest, algorithm: "sha-256"}` form, over REST, DDP over REST and the socket, in
//! both upstream modes; entries hashed over the plain password keep taking plain logins.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::bridge::*;
use support::rocketchat::FakeRocketChat;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "Zoe's long passphrase 7";

/// The users file: zoe as `hash-password` prints her, yann as older versions did (argon2id
/// over the plain password, no `password_prehash`).
fn users() -> String {
    let out = std::process::Command::new(authgate_bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(PASSWORD.as_bytes())?;
            child.wait_with_output()
        })
        .expect("authgate hash-password");
    assert!(out.status.success());
    let entry = String::from_utf8(out.stdout).unwrap();
    format!(
        "[[users]]\nusername = \"zoe\"\nemail = \"zoe@example.org\"\n{}\n\n[[users]]\nusername = \"yann\"\npassword_hash = \"{}\"\n",
        entry.trim(),
        cheap_hash("yann-password")
    )
}

fn digest(password: &str) -> Value {
    json!({"digest": authgate::password::sha256_hex(password), "algorithm": "sha-256"})
}

async fn socket_login(gw: &Gateway, params: Value) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/websocket", gw.addr))
        .await
        .expect("websocket through authgate");
    let frame = json!({"msg": "method", "id": "9", "method": "login", "params": [params]});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no answer in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// zoe logs in with either form at every door; the answers carry a live authgate session.
async fn every_door_takes_both_forms(gw: &Gateway) {
    let base = gw.url("");
    for password in [json!(PASSWORD), digest(PASSWORD)] {
        let (status, body) = login_json(&base, json!({"user": "zoe", "password": password})).await;
        assert_eq!(status, 200, "{password}: {body}");
        assert_eq!(body["status"], "success", "{body}");
        let (id, token) = (
            body["data"]["userId"].as_str().unwrap(),
            body["data"]["authToken"].as_str().unwrap(),
        );
        assert_eq!(token.len(), 43, "{body}");
        assert_eq!(protected_status(gw, id, token).await, 200);

        let frame = call_anon(
            &base,
            json!({"user": {"username": "zoe"}, "password": password}),
        )
        .await;
        assert_eq!(frame["id"], "7", "{frame}");
        assert_eq!(frame["result"]["id"], id, "{frame}");
        assert_eq!(
            frame["result"]["token"].as_str().unwrap().len(),
            43,
            "{frame}"
        );

        let frame = socket_login(
            gw,
            json!({"user": {"email": "zoe@example.org"}, "password": password}),
        )
        .await;
        assert_eq!(frame["msg"], "result", "{frame}");
        assert_eq!(frame["id"], "9", "{frame}");
        assert_eq!(frame["result"]["id"], id, "{frame}");
        assert_eq!(frame["result"]["type"], "password", "{frame}");
        let token = frame["result"]["token"].as_str().unwrap();
        assert_eq!(token.len(), 43, "{frame}");
        assert_eq!(protected_status(gw, id, token).await, 200);
    }
    // A wrong password is refused in both forms.
    for password in [json!("not it"), digest("not it")] {
        let (status, body) = login_json(&base, json!({"user": "zoe", "password": password})).await;
        assert_eq!(status, 401, "{body}");
        let frame = socket_login(
            gw,
            json!({"user": {"username": "zoe"}, "password": password}),
        )
        .await;
        assert_eq!(frame["error"]["error"], 401, "{frame}");
    }
    // An entry hashed over the plain password takes plain logins, and cannot check a digest.
    let (status, body) =
        login_json(&base, json!({"user": "yann", "password": "yann-password"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = login_json(
        &base,
        json!({"user": "yann", "password": digest("yann-password")}),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_password_users_log_in_with_plain_and_digest_in_trusted_headers_mode() {
    let rc = FakeRocketChat::start().await;
    rc.trust_gateway();
    let gw = Gateway::start(&config_text(rc.addr, None, ""), &users()).await;
    every_door_takes_both_forms(&gw).await;
    let digest_hex = authgate::password::sha256_hex(PASSWORD);
    assert_never_reached_upstream(&rc, &[PASSWORD, &digest_hex]);
    assert!(rc
        .socket_logins()
        .iter()
        .all(|f| f["params"][0].as_object().unwrap().len() == 2
            && f["params"][0]["resume"].is_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_password_users_log_in_with_plain_and_digest_in_rocketchat_mode() {
    let rc = FakeRocketChat::start().await;
    let gw = Gateway::start(&bridge_config(&rc, None, ""), &users()).await;
    every_door_takes_both_forms(&gw).await;
    let digest_hex = authgate::password::sha256_hex(PASSWORD);
    assert_never_reached_upstream(&rc, &[PASSWORD, &digest_hex]);
}
