//! Load tool for `bench/realtime`: a DDP upstream that pushes `stream-room-messages` frames, and
//! a client that holds many logged-in sockets and counts what arrives.
//!
//! Both sides speak the WebSocket framing by hand (handshake, frame headers, masking): a
//! benchmark of a proxy needs ends that cost far less per frame than the proxy does, and a
//! full WebSocket library would validate, copy and allocate every frame.
//!
//! ```text
//! realtime_load upstream --port P
//! realtime_load clients --port P [--path /websocket] [--sockets N] [--user-id U --token T]
//!                       [--ddp-login] [--rate R | --idle] [--duration S] [--warmup S]
//! ```
//!
//! `clients` prints `ready` once every socket is logged in (and, unless `--idle`, subscribed),
//! `start` and `end` around the measured window, then one JSON line with the figures. With
//! `--idle` it holds its sockets until stdin closes. `--rate 0` (the default) asks the upstream
//! to push as fast as each socket drains; a positive rate is the total frames per second over
//! all sockets, each frame carrying its send time for the latency figures.

use std::io::{self, BufRead, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The size of a pushed frame's payload, like a Rocket.Chat chat message event.
const FRAME_LEN: usize = 412;
/// Frames the flooding upstream writes per `write` call.
const FLOOD_BATCH: usize = 16;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Marks the send time (µs since the epoch, 16 digits) inside a pushed frame.
const STAMP_KEY: &[u8] = b"\"bench_us\":\"";

fn main() {
    raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads = flag(&args, "--threads").map_or(1, |t| t.parse().expect("--threads N"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match args.first().map(String::as_str) {
        Some("upstream") => runtime.block_on(upstream(&args)),
        Some("clients") => runtime.block_on(clients(&args)),
        _ => {
            eprintln!("usage: realtime_load upstream|clients [options] (see the module doc)");
            std::process::exit(2);
        }
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn has(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

// ---------------------------------------------------------------------------------------------
// Framing

/// One WebSocket frame's header: server frames unmasked, client frames masked (RFC 6455).
fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = Vec::with_capacity(payload.len() + 14);
    frame_header(&mut out, opcode, payload.len(), Some(mask));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    frame_header(&mut out, opcode, payload.len(), None);
    out.extend_from_slice(payload);
    out
}

/// A complete frame at the start of `buf`: (opcode, payload range, total length). Unmasks a
/// masked payload in place.
fn parse_frame(buf: &mut [u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < at + len {
        return None;
    }
    if let Some(m) = mask {
        for (i, b) in buf[at..at + len].iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Some((opcode, at..at + len, at + len))
}

/// Reads until the end of an HTTP head; returns the head and whatever followed it.
async fn read_head(stream: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in the head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream

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

async fn upstream(args: &[String]) {
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

// ---------------------------------------------------------------------------------------------
// Clients

struct Shared {
    measuring: AtomicBool,
    frames: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    /// Latencies (µs) of the frames received in the measured window, handed in by each
    /// receiver when it sees the window close.
    latencies: std::sync::Mutex<Vec<u32>>,
}

struct ClientOptions {
    port: u16,
    path: String,
    user_id: Option<String>,
    token: Option<String>,
    ddp_login: bool,
    per_socket_rate: f64,
}

/// A socket that is logged in, with the bytes read past its last complete frame.
struct Socket {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Socket {
    async fn send(&mut self, msg: &Value) -> io::Result<()> {
        let frame = client_frame(OP_TEXT, msg.to_string().as_bytes());
        self.stream.write_all(&frame).await
    }

    /// The next DDP message, answering pings on the way.
    async fn next_message(&mut self) -> io::Result<Value> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&mut self.pending) {
                let body = self.pending[payload].to_vec();
                self.pending.drain(..used);
                match opcode {
                    OP_TEXT => {
                        let v: Value = serde_json::from_slice(&body)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        if v["msg"] == "ping" {
                            self.send(&json!({"msg": "pong"})).await?;
                            continue;
                        }
                        return Ok(v);
                    }
                    OP_CLOSE => {
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed"))
                    }
                    _ => continue,
                }
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    async fn expect(&mut self, what: &str, ok: impl Fn(&Value) -> bool) -> io::Result<Value> {
        let v = self.next_message().await?;
        if ok(&v) {
            Ok(v)
        } else {
            Err(io::Error::other(format!("expected {what}, got {v}")))
        }
    }
}

async fn open_socket(o: &ClientOptions) -> io::Result<Socket> {
    let mut stream = TcpStream::connect(("127.0.0.1", o.port)).await?;
    stream.set_nodelay(true)?;
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        o.path, o.port
    );
    if let (Some(uid), Some(token), false) = (&o.user_id, &o.token, o.ddp_login) {
        head += &format!("X-User-Id: {uid}\r\nX-Auth-Token: {token}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).await?;
    let (answer, pending) = read_head(&mut stream).await?;
    if !answer.starts_with("HTTP/1.1 101") {
        return Err(io::Error::other(format!(
            "upgrade refused: {}",
            answer.lines().next().unwrap_or("")
        )));
    }
    let mut socket = Socket { stream, pending };
    socket
        .send(&json!({"msg": "connect", "version": "1", "support": ["1"]}))
        .await?;
    socket
        .expect("connected", |v| v["msg"] == "connected")
        .await?;
    if o.ddp_login {
        let token = o.token.as_deref().unwrap_or_default();
        socket
            .send(&json!({"msg": "method", "id": "login-1", "method": "login", "params": [{"resume": token}]}))
            .await?;
        socket
            .expect("a login result", |v| {
                v["msg"] == "result" && v["id"] == "login-1" && v["result"]["token"].is_string()
            })
            .await?;
    }
    Ok(socket)
}

async fn subscribe(socket: &mut Socket, rate: f64) -> io::Result<()> {
    socket
        .send(
            &json!({"msg": "sub", "id": "sub-1", "name": "stream-room-messages",
                      "params": ["GENERAL", {"useCollection": false, "rate": rate}]}),
        )
        .await
}

/// Counts frames (and, when paced, their latencies) until the socket closes.
async fn receive(mut socket: Socket, shared: Arc<Shared>, paced: bool) {
    let mut latencies = Vec::new();
    let mut was_measuring = false;
    let mut buf = std::mem::take(&mut socket.pending);
    let mut start = 0;
    loop {
        let mut frames = 0u64;
        let measuring = shared.measuring.load(Ordering::Relaxed);
        if was_measuring && !measuring {
            let mine = std::mem::take(&mut latencies);
            shared.latencies.lock().expect("latencies").extend(mine);
        }
        was_measuring = measuring;
        let now = if paced && measuring { now_us() } else { 0 };
        while let Some((opcode, payload, used)) = parse_frame(&mut buf[start..]) {
            let payload = start + payload.start..start + payload.end;
            if opcode == OP_TEXT {
                frames += 1;
                if now != 0 {
                    if let Some(at) = memchr::memmem::find(&buf[payload.clone()], STAMP_KEY) {
                        let digits = &buf[payload.start + at + STAMP_KEY.len()..][..16];
                        let sent: u64 = std::str::from_utf8(digits)
                            .ok()
                            .and_then(|d| d.parse().ok())
                            .unwrap_or(now);
                        latencies.push(now.saturating_sub(sent) as u32);
                    }
                }
            } else if opcode == OP_CLOSE {
                return;
            }
            start += used;
        }
        if measuring {
            shared.frames.fetch_add(frames, Ordering::Relaxed);
        }
        buf.drain(..start);
        start = 0;
        buf.reserve(64 * 1024);
        match socket.stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(n) => {
                if measuring {
                    shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map(|&us| us as f64 / 1000.0)
}

async fn clients(args: &[String]) {
    let sockets: usize = flag(args, "--sockets").map_or(200, |n| n.parse().expect("--sockets N"));
    let duration: f64 = flag(args, "--duration").map_or(5.0, |d| d.parse().expect("--duration S"));
    let warmup: f64 = flag(args, "--warmup").map_or(1.0, |d| d.parse().expect("--warmup S"));
    let rate: f64 = flag(args, "--rate").map_or(0.0, |r| r.parse().expect("--rate R"));
    let idle = has(args, "--idle");
    let options = Arc::new(ClientOptions {
        port: flag(args, "--port")
            .expect("--port P")
            .parse()
            .expect("port"),
        path: flag(args, "--path").unwrap_or("/websocket").to_string(),
        user_id: flag(args, "--user-id").map(str::to_string),
        token: flag(args, "--token").map(str::to_string),
        ddp_login: has(args, "--ddp-login"),
        per_socket_rate: rate / sockets as f64,
    });
    // Log in a few hundred at a time: a burst of ten thousand connects overflows accept queues.
    let started = Instant::now();
    let mut opened = Vec::with_capacity(sockets);
    let mut errors = 0usize;
    let mut first_error = None;
    let mut left = sockets;
    while left > 0 {
        let wave = left.min(250);
        left -= wave;
        let tasks: Vec<_> = (0..wave)
            .map(|_| {
                let o = options.clone();
                tokio::spawn(async move { open_socket(&o).await })
            })
            .collect();
        for t in tasks {
            match t.await.expect("socket task") {
                Ok(s) => opened.push(s),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
    }
    let login_s = started.elapsed().as_secs_f64();
    if opened.is_empty() {
        println!("{}", json!({"error": first_error, "sockets": 0}));
        std::process::exit(1);
    }
    if idle {
        println!("ready");
        let _ = io::stdout().flush();
        println!(
            "{}",
            json!({"sockets": opened.len(), "errors": errors, "first_error": first_error, "login_s": login_s})
        );
        let _ = io::stdout().flush();
        // Hold the sockets until whoever started this closes stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while io::stdin()
                .lock()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                line.clear();
            }
        })
        .await;
        return;
    }
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        frames: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
    });
    let held = opened.len();
    let mut receivers = Vec::with_capacity(held);
    for mut s in opened {
        if subscribe(&mut s, options.per_socket_rate).await.is_err() {
            errors += 1;
            continue;
        }
        let shared = shared.clone();
        receivers.push(tokio::spawn(receive(s, shared, rate > 0.0)));
    }
    println!("ready");
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    println!("start");
    let _ = io::stdout().flush();
    shared.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    println!("end");
    let _ = io::stdout().flush();
    let frames = shared.frames.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    let failed = shared.failed.load(Ordering::Relaxed);
    if rate > 0.0 {
        // Each receiver hands in its samples at its first frame after the window.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for r in &receivers {
        r.abort();
    }
    let mut latencies = std::mem::take(&mut *shared.latencies.lock().expect("latencies"));
    latencies.sort_unstable();
    println!(
        "{}",
        json!({
            "sockets": held, "errors": errors, "first_error": first_error, "failed": failed,
            "login_s": login_s, "elapsed_s": elapsed, "frames": frames, "bytes": bytes,
            "frames_per_s": frames as f64 / elapsed, "latency_samples": latencies.len(),
            "latency_p50_ms": percentile(&latencies, 0.50), "latency_p99_ms": percentile(&latencies, 0.99),
        })
    );
}
