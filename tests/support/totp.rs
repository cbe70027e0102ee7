//! Shared pieces of the TOTP tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use totp_rs::{Algorithm, Secret, TOTP};

use super::*;

pub const UNAUTHORIZED: &str =
    r#"{"success":false,"error":"Unauthorized","status":"error","message":"Unauthorized"}"#;
pub const TOTP_REQUIRED: &str = r#"{"success":false,"error":"totp-required","status":"error","details":{"method":"totp","codeGenerated":false,"availableMethods":["totp"]},"message":"TOTP Required"}"#;
pub const TOTP_INVALID: &str = r#"{"success":false,"error":"totp-invalid","status":"error","details":{"method":"totp","codeGenerated":false,"availableMethods":["totp"]},"message":"TOTP Invalid"}"#;

pub const ALICE_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
pub const BOB_SECRET: &str = "KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TF";
pub const DAVE_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// alice, bob and dave have a secret in the users file; erin has none.
pub fn totp_users() -> String {
    users_toml(&[
        TestUser {
            username: "alice",
            password: "alice-password-1",
            email: Some("alice@example.org"),
            extra: "totp_secret = \"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\"",
        },
        TestUser {
            username: "bob",
            password: "bob-password-2",
            email: None,
            // Lower case with spaces, as apps display secrets: normalized on load.
            extra: "totp_secret = \"krsx g5ct mvrx ezlu kn2x azls knsw g4tf\"",
        },
        TestUser {
            username: "dave",
            password: "dave-password-4",
            email: None,
            extra: "totp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"",
        },
        user("erin", "erin-password-5", Some("erin@example.org")),
    ])
}

pub fn now_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// The code an authenticator app shows for `step` (SHA1, 6 digits, 30 s).
pub fn code(secret: &str, step: u64) -> String {
    let bytes = Secret::Encoded(secret.to_string()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new()).generate(step * 30)
}

/// Posts a login body, optionally with `x-2fa-code`; returns the status and the exact body.
pub async fn post_login(gw: &Gateway, body: &Value, header_code: Option<&str>) -> (u16, String) {
    let mut rb = client().post(gw.url("/api/v1/login")).json(body);
    if let Some(c) = header_code {
        rb = rb.header("x-2fa-code", c);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub fn pw(user: &str, password: &str) -> Value {
    json!({"user": user, "password": password})
}

pub fn with_code(user: &str, password: &str, code: &str) -> Value {
    json!({"user": user, "password": password, "code": code})
}

pub fn session_of(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap();
    (
        v["data"]["userId"].as_str().unwrap().to_string(),
        v["data"]["authToken"].as_str().unwrap().to_string(),
    )
}

/// Two instances sharing one Redis and one enrollment store.
pub struct Pair {
    pub redis: Redis,
    pub _up: RecordingUpstream,
    pub a: Gateway,
    pub b: Gateway,
    pub _shared: tempfile::TempDir,
    pub secrets_file: std::path::PathBuf,
}

pub async fn pair() -> Pair {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let shared = tempfile::tempdir().unwrap();
    let secrets_file = shared.path().join("totp-secrets.json");
    // Generous regulation: these tests send many wrong codes on purpose.
    let extra = format!(
        "[totp]\nsecrets_file = \"{}\"\n\n[regulation]\nuser_failures = 100\nip_failures = 1000\n",
        secrets_file.display()
    );
    let config = config_text(up.addr, Some(&redis.url()), &extra);
    let users = totp_users();
    let a = Gateway::start(&config, &users).await;
    let b = Gateway::start(&config, &users).await;
    Pair {
        redis,
        _up: up,
        a,
        b,
        _shared: shared,
        secrets_file,
    }
}

pub fn no_session_keys(redis: &Redis) {
    let keys = redis.keys();
    assert!(!keys.contains("session"), "a session was created: {keys}");
}

/// An operator command against the config file at `config`.
pub fn run_cli(args: &[&str], config: &Path) -> (i32, String, String) {
    super::run_authgate(&[args, &["--config", config.to_str().unwrap()]].concat())
}

pub async fn cli(args: &'static [&'static str], config: &Path) -> (i32, String, String) {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || run_cli(args, &config))
        .await
        .unwrap()
}
