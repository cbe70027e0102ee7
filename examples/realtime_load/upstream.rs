//! The upstream: answers DDP `connect`, `login` and `sub`, then pushes room events to each
//! subscribed socket, as fast as it drains or at a paced rate.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::ws::*;
use crate::{flag, now_us};

/// A `stream-room-messages` event of exactly `FRAME_LEN` bytes, and where its stamp goes.
fn message_template() -> (Vec<u8>, usize) {
    let build = |text: &str| {
        format!(
            concat!(
                r#"{{"msg":"changed","collection":"stream-room-messages","id":"id","fields":{{"eventName":"GENERAL","args":[{{"#,
                r#""_id":"Xq7v2LmP9sKd3RtYb","rid":"GENERAL","msg":"{}","bench_us":"0000000000000000","#,
                r#""ts":{{"$date":1765000000000}},"u":{{"_id":"uB3nCh7m4rKxYq2Lp","username":"bench","name":"Bench"}},"#,
                r#""_updatedAt":{{"$date":1765000000000}},"urls":[],"mentions":[],"channels":[]}}]}}}}"#
            ),
            text
        )
    };
    let filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor ";
    let pad = FRAME_LEN - build("").len();
    let text: String = filler.chars().cycle().take(pad).collect();
    let frame = build(&text).into_bytes();
    assert_eq!(frame.len(), FRAME_LEN);
    let stamp = memchr::memmem::find(&frame, STAMP_KEY).expect("stamp key") + STAMP_KEY.len();
    (
        server_frame(OP_TEXT, &frame),
        stamp + (frame_header_len(FRAME_LEN)),
    )
}

fn frame_header_len(len: usize) -> usize {
    let mut v = Vec::new();
    frame_header(&mut v, OP_TEXT, len, None);
    v.len()
}

fn stamp(frame: &mut [u8], at: usize, us: u64) {
    let digits = format!("{us:016}");
    frame[at..at + 16].copy_from_slice(digits.as_bytes());
}

pub async fn upstream(args: &[String]) {
    let port: u16 = flag(args, "--port")
        .expect("--port P")
        .parse()
        .expect("port");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let template = Arc::new(message_template());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let template = template.clone();
        tokio::spawn(async move {
            let _ = upstream_socket(stream, template).await;
        });
    }
}

async fn upstream_socket(mut stream: TcpStream, template: Arc<(Vec<u8>, usize)>) -> io::Result<()> {
    let (head, mut pending) = read_head(&mut stream).await?;
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Sec-WebSocket-Key"))?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(answer.as_bytes()).await?;
    let (mut rx, mut tx) = stream.into_split();
    // Control answers and pushed frames share the write half, so one task owns it.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let (rate_tx, rate_rx) = tokio::sync::oneshot::channel::<f64>();
    let writer = tokio::spawn(async move {
        let mut rate_rx = Some(rate_rx);
        // Until the client subscribes: answers only.
        let rate = loop {
            tokio::select! {
                out = out_rx.recv() => match out {
                    Some(bytes) => if tx.write_all(&bytes).await.is_err() { return; },
                    None => return,
                },
                rate = rate_rx.as_mut().expect("once"), if rate_rx.is_some() => match rate {
                    Ok(rate) => break rate,
                    Err(_) => { rate_rx = None; }
                },
            }
        };
        let (frame, at) = &*template;
        if rate <= 0.0 {
            // Flood: whole batches as fast as the socket drains.
            let mut batch = Vec::with_capacity(frame.len() * FLOOD_BATCH);
            loop {
                while let Ok(bytes) = out_rx.try_recv() {
                    if tx.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                batch.clear();
                let us = now_us();
                for _ in 0..FLOOD_BATCH {
                    let start = batch.len();
                    batch.extend_from_slice(frame);
                    stamp(&mut batch[start..], *at, us);
                }
                if tx.write_all(&batch).await.is_err() {
                    return;
                }
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut one = frame.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    stamp(&mut one, *at, now_us());
                    if tx.write_all(&one).await.is_err() { return; }
                }
                out = out_rx.recv() => match out {
                    Some(bytes) => if tx.write_all(&bytes).await.is_err() { return; },
                    None => return,
                },
            }
        }
    });
    let mut rate_tx = Some(rate_tx);
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some((opcode, payload, used)) = parse_frame(&mut pending) {
            match opcode {
                OP_TEXT => {
                    let Ok(msg) = serde_json::from_slice::<Value>(&pending[payload.clone()]) else {
                        break;
                    };
                    let answer = match msg["msg"].as_str() {
                        Some("connect") => Some(json!({"msg": "connected", "session": "bench"})),
                        Some("ping") => Some(json!({"msg": "pong"})),
                        Some("method") if msg["method"] == "login" => Some(json!({
                            "msg": "result", "id": msg["id"],
                            "result": {"id": "upstream-user", "token": "upstream-token",
                                       "tokenExpires": {"$date": 4102444800000u64}, "type": "resume"}
                        })),
                        Some("method") => Some(json!({"msg": "result", "id": msg["id"]})),
                        Some("sub") => {
                            let rate = msg["params"][1]["rate"].as_f64().unwrap_or(0.0);
                            if let Some(tx) = rate_tx.take() {
                                let _ = tx.send(rate);
                            }
                            Some(json!({"msg": "ready", "subs": [msg["id"]]}))
                        }
                        _ => None,
                    };
                    if let Some(a) = answer {
                        let _ = out_tx.send(server_frame(OP_TEXT, a.to_string().as_bytes()));
                    }
                }
                OP_PING => {
                    let _ = out_tx.send(server_frame(OP_PONG, &pending[payload]));
                }
                OP_CLOSE => {
                    let _ = out_tx.send(server_frame(OP_CLOSE, &[]));
                    writer.abort();
                    return Ok(());
                }
                _ => {}
            }
            pending.drain(..used);
        }
        let n = rx.read(&mut buf).await?;
        if n == 0 {
            writer.abort();
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}
