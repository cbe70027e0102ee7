//! WebSocket clients of the realtime API through a test gateway: connecting (with headers),
//! reading the next text frame within a bound, and waiting for a socket to close.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket on `path` of the gateway at `addr`, upgraded (101) or the test fails.
pub async fn connect(addr: SocketAddr, path: &str) -> Socket {
    connect_with(addr, path, &[]).await
}

/// [`connect`] with extra request headers on the upgrade.
pub async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Socket {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through authgate");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text frame, within five seconds; other frames are skipped.
pub async fn next_text<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
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

/// The next text frame as JSON.
pub async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// True when the socket closes (or dies) within `limit`; frames on the way are ignored.
pub async fn closes_within(ws: &mut Socket, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}
