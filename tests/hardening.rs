//! Hostile clients: brute force, spoofed addresses, slow and malformed HTTP, path tricks.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UNAUTHORIZED: &str =
    r#"{"success":false,"error":"Unauthorized","status":"error","message":"Unauthorized"}"#;
const BLOCKED_USER: &str = r#"{"success":false,"error":"error-login-blocked-for-user","status":"error","details":{"function":"Accounts.validateLoginAttempt"},"message":"Login has been temporarily blocked For User"}"#;
const BLOCKED_IP: &str = r#"{"success":false,"error":"error-login-blocked-for-ip","status":"error","details":{"function":"Accounts.validateLoginAttempt"},"message":"Login has been temporarily blocked For IP"}"#;

/// Windows short enough to watch a block lift.
const SHORT_REGULATION: &str =
    "[regulation]\nuser_failures = 3\nuser_block = \"2s\"\nip_failures = 6\nip_block = \"2s\"\n";
/// Windows long enough that a slow machine cannot age failures out mid-test.
const LONG_REGULATION: &str =
    "[regulation]\nuser_failures = 3\nuser_block = \"60s\"\nip_failures = 6\nip_block = \"60s\"\n";

async fn attempt(
    base: &str,
    user: &str,
    password: &str,
    extra_headers: &[(&str, &str)],
) -> (u16, String) {
    let mut rb = client()
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"user": user, "password": password}));
    for (k, v) in extra_headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_is_blocked_after_failures_even_with_the_right_password_across_instances() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let a = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), SHORT_REGULATION),
        &users,
    )
    .await;
    let b = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), SHORT_REGULATION),
        &users,
    )
    .await;
    // Failures counted on both instances and under every case spelling of the name.
    assert_eq!(
        attempt(&a.url(""), "alice", "wrong-1", &[]).await,
        (401, UNAUTHORIZED.into())
    );
    assert_eq!(
        attempt(&b.url(""), "ALICE", "wrong-2", &[]).await,
        (401, UNAUTHORIZED.into())
    );
    assert_eq!(
        attempt(&a.url(""), "Alice", "wrong-3", &[]).await,
        (401, UNAUTHORIZED.into())
    );
    for gw in [&a, &b] {
        assert_eq!(
            attempt(&gw.url(""), "alice", "alice-password-1", &[]).await,
            (401, BLOCKED_USER.into())
        );
    }
    // Other users are not affected.
    assert_eq!(
        attempt(&a.url(""), "bob", "bob-password-2", &[]).await.0,
        200
    );
    // The block lifts by itself after the window.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        attempt(&b.url(""), "alice", "alice-password-1", &[])
            .await
            .0,
        200
    );
    // A success resets the count: two more failures do not block.
    attempt(&a.url(""), "alice", "wrong", &[]).await;
    attempt(&a.url(""), "alice", "wrong", &[]).await;
    assert_eq!(
        attempt(&a.url(""), "alice", "alice-password-1", &[])
            .await
            .0,
        200
    );
    attempt(&a.url(""), "alice", "wrong", &[]).await;
    attempt(&a.url(""), "alice", "wrong", &[]).await;
    assert_eq!(
        attempt(&a.url(""), "alice", "alice-password-1", &[])
            .await
            .0,
        200
    );
    // Counters live in Redis with an expiry.
    let keys = redis.keys();
    assert!(keys.contains("authgate:fail:ip:127.0.0.1"), "{keys}");
    let ttl = redis.command("PTTL authgate:fail:ip:127.0.0.1").unwrap();
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl > 0 && ttl <= 2000, "{ttl}");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ip_is_blocked_and_spoofed_forwarding_headers_do_not_help() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, LONG_REGULATION),
        &users_toml(&standard_users()),
    )
    .await;
    let base = gw.url("");
    for i in 0..6 {
        let fake = format!("10.0.0.{i}");
        let headers = [
            ("x-forwarded-for", fake.as_str()),
            ("x-real-ip", fake.as_str()),
            ("forwarded", "for=1.2.3.4"),
        ];
        assert_eq!(
            attempt(&base, &format!("nobody{i}"), "guess", &headers)
                .await
                .0,
            401
        );
    }
    let (status, body) = attempt(
        &base,
        "bob",
        "bob-password-2",
        &[("x-real-ip", "192.0.2.200")],
    )
    .await;
    assert_eq!((status, body.as_str()), (401, BLOCKED_IP));
    // Unusable bodies count against the IP too, and blocked answers come before parsing.
    let r = client()
        .post(format!("{base}/api/v1/login"))
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), BLOCKED_IP);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ip_allowlist_exempts_from_ip_blocking_only() {
    let up = RecordingUpstream::start().await;
    let cfg = config_text(
        up.addr,
        None,
        &format!("{LONG_REGULATION}ip_allowlist = [\"127.0.0.0/8\"]\n"),
    );
    let gw = Gateway::start(&cfg, &users_toml(&standard_users())).await;
    let base = gw.url("");
    for i in 0..8 {
        attempt(&base, &format!("nobody{i}"), "guess", &[]).await;
    }
    assert_eq!(attempt(&base, "bob", "bob-password-2", &[]).await.0, 200);
    for _ in 0..3 {
        attempt(&base, "dave", "wrong", &[]).await;
    }
    assert_eq!(
        attempt(&base, "dave", "dave-password-4", &[]).await,
        (401, BLOCKED_USER.into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxies_name_the_client_and_others_cannot() {
    let up = RecordingUpstream::start().await;
    let cfg = config_text(up.addr, None, LONG_REGULATION).replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    let gw = Gateway::start(&cfg, &users_toml(&standard_users())).await;
    let base = gw.url("");
    for i in 0..6 {
        attempt(
            &base,
            &format!("nobody{i}"),
            "guess",
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.9")],
        )
        .await;
    }
    // 203.0.113.9 is blocked; another client behind the same proxy is not.
    assert_eq!(
        attempt(
            &base,
            "bob",
            "bob-password-2",
            &[("x-forwarded-for", "203.0.113.9")]
        )
        .await,
        (401, BLOCKED_IP.into())
    );
    let (id, token) = {
        let r = client()
            .post(format!("{base}/api/v1/login"))
            .header("x-forwarded-for", "198.51.100.4")
            .json(&json!({"user": "bob", "password": "bob-password-2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        (
            v["data"]["userId"].as_str().unwrap().to_string(),
            v["data"]["authToken"].as_str().unwrap().to_string(),
        )
    };
    client()
        .get(format!("{base}/api/v1/me"))
        .header("x-auth-token", &token)
        .header("x-user-id", &id)
        .header("x-forwarded-for", "198.51.100.4")
        .header("x-forwarded-proto", "https")
        .header("x-real-ip", "6.6.6.6")
        .send()
        .await
        .unwrap();
    let seen = up.last();
    assert_eq!(seen.header("x-real-ip").as_deref(), Some("198.51.100.4"));
    // The proxy in front terminated TLS: its word on the scheme is passed on.
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("198.51.100.4, 127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_idle_connections_and_huge_heads_are_cut_off() {
    let up = RecordingUpstream::start().await;
    let cfg = config_text(up.addr, None, "").replace(
        "[server]\n",
        "[server]\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
    );
    let gw = Gateway::start(&cfg, &users_toml(&standard_users())).await;
    // Trickled headers: one byte every 200 ms never completes a head; the gateway hangs up.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let trickle = b"GET /api/info HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in trickle {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            _ => {}
        }
    }
    assert!(cut, "a trickling client was not disconnected");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        started.elapsed()
    );
    // An idle keep-alive connection is closed after idle_timeout, not header_read_timeout.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /api/info HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(s.read(&mut buf).await.unwrap() > 0);
    let idle_from = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection never closed");
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(5),
        "closed after {idle:?}"
    );
    // Oversized heads: 431.
    let big = format!(
        "GET /api/info HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let answer = raw_request(gw.addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_wait() {
    let up = RecordingUpstream::start().await;
    let cfg =
        config_text(up.addr, None, "").replace("[server]\n", "[server]\nmax_connections = 2\n");
    let gw = Gateway::start(&cfg, &users_toml(&standard_users())).await;
    let request = b"GET /api/info HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = vec![0u8; 4096];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(
        tokio::time::timeout(Duration::from_millis(800), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served"
    );
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_shapes_are_refused_and_never_forwarded() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    let cases: [&[u8]; 5] = [
        // CL.TE with a smuggled protected request in the body, on a public path.
        b"POST /api/info HTTP/1.1\r\nHost: a\r\nContent-Length: 47\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/me HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /api/info HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST /api/info HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST /api/info HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /api/info HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for raw in cases {
        let answer = raw_request(gw.addr, raw).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{}\n=> {answer}",
            String::from_utf8_lossy(raw)
        );
        assert!(!answer.contains("HTTP/1.1 200"), "{answer}");
    }
    // A well-formed request on a fresh connection still works, and nothing above was forwarded.
    assert_eq!(up.count(), 0);
    let r = client().get(gw.url("/api/info")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_spelling_of_a_protected_path_passes_without_a_session() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(
            up.addr,
            None,
            "[routes]\npublic = [\"/api/info\", \"/assets/*\"]\n",
        ),
        &users_toml(&standard_users()),
    )
    .await;
    let spellings = [
        "/api/info/../v1/me",
        "/api/info/..%2fv1/me",
        "/api/info%2f..%2fv1%2fme",
        "/assets/../api/v1/me",
        "/assets/%2e%2e/api/v1/me",
        "/assets/..\\api/v1/me",
        "/api/info;/../v1/me",
        "/api/info%00/../v1/me",
        "/assets//../api/v1/me",
        "/api/v1/%6De",
        "/API/INFO",
        "/api/info/",
        "/assets",
        "/api/v1/me%23/../../info",
        "/./api/info",
    ];
    for path in spellings {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let answer = raw_request(gw.addr, raw.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 401"),
            "{path}: {answer}"
        );
    }
    assert_eq!(
        up.count(),
        0,
        "{:?}",
        up.requests()
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_burst_is_bounded_and_proxying_keeps_working() {
    let up = RecordingUpstream::start().await;
    // One verification at a time and a tiny queue wait: the excess gets a fast 503.
    let users = format!(
        "[[users]]\nusername = \"erin\"\npassword_hash = \"{}\"\n",
        authgate::password::hash_password("erin-password")
    );
    let cfg = config_text(up.addr, None, "[regulation]\nenabled = false\n").replace(
        "password_hash_concurrency = 2",
        "password_hash_concurrency = 1\nlogin_queue_timeout = \"5ms\"",
    );
    let gw = Gateway::start(&cfg, &users).await;
    let base = gw.url("");
    let burst: Vec<_> = (0..12)
        .map(|_| tokio::spawn(attempt_owned(base.clone())))
        .collect();
    let r = client().get(gw.url("/api/info")).send().await.unwrap();
    assert_eq!(r.status(), 200, "proxying stalled behind logins");
    let mut statuses = Vec::new();
    for h in burst {
        statuses.push(h.await.unwrap());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
}

async fn attempt_owned(base: String) -> u16 {
    attempt(&base, "erin", "wrong-password", &[]).await.0
}
