//! The clients: many logged-in sockets that subscribe and count what arrives.

use std::io::{self, BufRead, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::*;
use crate::{flag, has, now_us};

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

pub async fn clients(args: &[String]) {
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
