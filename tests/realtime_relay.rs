//! What the realtime relay passes unparsed and what it still reads: upstream frames that cannot
//! need a rewrite reach the client byte for byte, and JSON escapes hide neither a login from
//! the client nor a result or settings event from the upstream.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::bridge::*;
use support::ws::{self, Socket};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// A stream-room-messages event as Rocket.Chat pushes it, with spacing and a number format
/// (`1.50`) that a parse and re-encode would change.
const ROOM_EVENT: &str = r#"{"msg":"changed", "collection":"stream-room-messages","id":"id","fields":{"eventName":"GENERAL","args":[{"_id":"m1","rid":"GENERAL","msg":"a \"quoted\" word \\ and a slash \/","score":1.50,"u":{"_id":"u1","username":"bob"}}]}}"#;
/// The same with a `\u` escape in the text: read, found unchanged, and still relayed as it came.
const ESCAPED_ROOM_EVENT: &str = r#"{"msg":"changed","collection":"stream-room-messages","id":"id","fields":{"eventName":"GENERAL","args":[{"_id":"m2","msg":"caf\u00e9","score":2.50}]}}"#;
/// A login result authgate did not ask for, with its keys spelt through escapes.
const ESCAPED_LEAK: &str = r#"{"msg":"\u0072esult","id":"9","\u0072esult":{"id":"u1","token":"upstream-secret-token","tokenExpires":{"$date":1900000000000}}}"#;
/// A public-settings event that turns LDAP off, its event name spelt through an escape.
const ESCAPED_SETTINGS: &str = r#"{"msg":"changed","collection":"stream-notify-all","id":"id","fields":{"eventName":"public-settings-\u0063hanged","args":["updated",{"_id":"LDAP_Enable","value":false}]}}"#;

/// A WebSocket upstream that answers DDP `connect` by pushing `frames` as they are, and records
/// the text frames it receives.
async fn scripted_upstream(
    frames: Vec<&'static str>,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let frames = frames.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    seen.lock().unwrap().push(text.as_str().to_string());
                    if text.as_str().contains("\"connect\"") {
                        for f in &frames {
                            ws.send(Message::text(*f)).await.unwrap();
                        }
                    }
                }
            });
        }
    });
    (addr, received)
}

async fn connect(gw: &Gateway) -> Socket {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/websocket", gw.addr))
        .await
        .expect("websocket through authgate");
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_frames_pass_byte_for_byte_unless_they_need_a_rewrite() {
    let (addr, upstream_saw) = scripted_upstream(vec![
        ROOM_EVENT,
        ESCAPED_ROOM_EVENT,
        ESCAPED_LEAK,
        ESCAPED_SETTINGS,
        ROOM_EVENT,
    ])
    .await;
    let gw = Gateway::start(&config_text(addr, None, ""), &bridge_users()).await;
    let mut ws = connect(&gw).await;
    let connect_frame = r#"{"msg":"connect","version":"1","support":["1"]}"#;
    ws.send(Message::text(connect_frame)).await.unwrap();
    assert_eq!(ws::next_text(&mut ws).await, ROOM_EVENT);
    assert_eq!(ws::next_text(&mut ws).await, ESCAPED_ROOM_EVENT);
    // The escaped login result is still caught: the client gets an error, never the token.
    let leak: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert_eq!(leak["id"], "9", "{leak}");
    assert_eq!(leak["error"]["error"], 403, "{leak}");
    assert!(
        !leak.to_string().contains("upstream-secret-token"),
        "{leak}"
    );
    // The escaped settings event is still rewritten.
    let settings: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert_eq!(settings["fields"]["eventName"], "public-settings-changed");
    assert_eq!(settings["fields"]["args"][1]["_id"], "LDAP_Enable");
    assert_eq!(settings["fields"]["args"][1]["value"], true, "{settings}");
    assert_eq!(ws::next_text(&mut ws).await, ROOM_EVENT);
    // A client frame that holds no method call reaches the upstream as it was sent.
    let sub =
        r#"{"msg":"sub","id":"s1", "name":"stream-room-messages","params":["GENERAL",false]}"#;
    ws.send(Message::text(sub)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !upstream_saw.lock().unwrap().iter().any(|f| f == sub) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the sub frame reached the upstream unchanged");
    assert_eq!(upstream_saw.lock().unwrap()[0], connect_frame);
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_spelt_with_escapes_are_checked_like_any_login() {
    let (rc, gw) = trusted_headers().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut ws = connect(&gw).await;
    ws.send(Message::text(
        r#"{"msg":"connect","version":"1","support":["1"]}"#,
    ))
    .await
    .unwrap();
    assert!(ws::next_text(&mut ws).await.contains("connected"));
    // A resume of a token no session has, `login` spelt through escapes: refused here.
    let forged = r#"{"msg":"\u006dethod","id":"1","\u006dethod":"\u006cogin","params":[{"resume":"not-a-session-token-at-all"}]}"#;
    ws.send(Message::text(forged)).await.unwrap();
    let refused: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert_eq!(refused["id"], "1", "{refused}");
    assert_eq!(refused["error"]["error"], 403, "{refused}");
    assert!(
        rc.socket_logins().is_empty(),
        "a refused login reached the upstream: {:?}",
        rc.socket_logins()
    );
    // The same shape with a live session: authenticated, and the upstream sees authgate's resume.
    let real = format!(
        r#"{{"msg":"\u006dethod","id":"2","\u006dethod":"\u006cogin","params":[{{"resume":"{token}"}}]}}"#
    );
    ws.send(Message::text(real)).await.unwrap();
    let result: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert_eq!(result["id"], "2", "{result}");
    assert_eq!(result["result"]["token"], token.as_str(), "{result}");
    assert_eq!(result["result"]["id"], uid.as_str(), "{result}");
    let logins = rc.socket_logins();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0]["params"][0]["userId"], uid.as_str(), "{logins:?}");
    // A password method spelt through escapes is refused like the plain one.
    let register = r#"{"msg":"\u006dethod","id":"3","method":"registerUser","params":[{"email":"x@example.org","pass":"p","name":"x"}]}"#;
    ws.send(Message::text(register)).await.unwrap();
    let refused: Value = serde_json::from_str(&ws::next_text(&mut ws).await).unwrap();
    assert_eq!(refused["id"], "3", "{refused}");
    assert!(refused.get("error").is_some(), "{refused}");
    assert!(
        rc.state
            .lock()
            .unwrap()
            .ddp_in
            .iter()
            .all(|f| f["method"] != "registerUser"),
        "a credential method reached the upstream"
    );
}
