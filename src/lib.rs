//! authgate: an authentication gateway in front of Rocket.Chat-compatible chat backends.
//! docs/ARCHITECTURE.md describes the layers, the request flow, the two upstream modes and where
//! to add a route kind, a directory, a session store or a mode; README.md is the operator's guide.
//! A request's path through the gateway is `pipeline.rs`, which hands it to the handler of its
//! route kind (`handlers/`, `realtime.rs`, `tokens/`).
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod cli;
pub mod compose;
pub mod config;
pub mod conn_framing;
pub mod conn_guard;
pub mod credentials;
pub mod ddp;
pub mod directory;
pub mod dummy_hash;
pub mod error;
pub mod forward;
pub mod gateway;
pub mod handlers;
pub mod hex;
pub mod import;
pub mod logging;
pub mod login;
pub mod login_flow;
pub mod password;
pub mod pipeline;
pub mod realtime;
pub mod regulation;
pub mod reload;
pub mod rocketchat;
pub mod route;
pub mod secret_files;
pub mod server;
pub mod service;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod totp;
pub mod upstream_identity;
pub mod upstream_pool;
pub mod workers;
