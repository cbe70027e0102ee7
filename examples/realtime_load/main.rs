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

mod clients;
mod upstream;
mod ws;

use std::time::{SystemTime, UNIX_EPOCH};

use clients::clients;
use upstream::upstream;

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
