//! Authenticated forwarding: what the upstream receives, routing, streaming, upstream faults.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const NOT_LOGGED_IN: &str = r#"{"success":false,"error":"You must be logged in to do this.","status":"error","message":"You must be logged in to do this."}"#;

async fn setup_with(extra: &str) -> (RecordingUpstream, Gateway, String, String) {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, extra),
        &users_toml(&standard_users()),
    )
    .await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    (up, gw, id, token)
}

async fn setup() -> (RecordingUpstream, Gateway, String, String) {
    setup_with("").await
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_paths_need_a_live_session_of_the_named_user() {
    let (up, gw, id, token) = setup().await;
    let (bob_id, _) = login(&gw.url(""), "bob", "bob-password-2").await;
    let cases: Vec<(Option<&str>, Option<&str>)> = vec![
        (None, None),
        (Some(token.as_str()), None),
        (None, Some(id.as_str())),
        (Some("x".repeat(43).leak()), Some(id.as_str())),
        (Some(token.as_str()), Some(bob_id.as_str())),
        (Some(token.as_str()), Some("")),
        (Some(""), Some(id.as_str())),
    ];
    for (t, u) in cases {
        let mut rb = client().get(gw.url("/api/v1/me"));
        if let Some(t) = t {
            rb = rb.header("x-auth-token", t);
        }
        if let Some(u) = u {
            rb = rb.header("x-user-id", u);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 401, "{t:?} {u:?}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.text().await.unwrap(), NOT_LOGGED_IN);
    }
    // Other methods and paths likewise.
    for (m, p) in [
        ("POST", "/api/v1/chat.postMessage"),
        ("DELETE", "/api/v1/rooms.delete"),
        ("GET", "/"),
        ("GET", "/avatar/alice"),
    ] {
        let r = client()
            .request(m.parse().unwrap(), gw.url(p))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{m} {p}");
    }
    assert_eq!(
        up.count(),
        0,
        "nothing may reach the upstream without a session"
    );
    // Query strings, even empty ones (rocketchat_API sends `/me?`), do not change the decision.
    let r = client()
        .get(gw.url("/api/v1/me?"))
        .header("x-auth-token", &token)
        .header("x-user-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().target, "/api/v1/me?");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_sees_only_the_gateways_identity_and_forwarding_headers() {
    let (up, gw, id, token) = setup().await;
    let raw = format!(
        "POST /api/v1/chat.postMessage?x=1 HTTP/1.1\r\nHost: chat.example\r\nX-Auth-Token: {token}\r\nX-User-Id: {id}\r\n\
         X_Auth_Token: forged\r\nX_User_Id: forged-admin\r\nx-user_id: forged2\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\nX-Original-URL: /api/v1/login\r\n\
         X-Http-Method-Override: DELETE\r\nConnection: keep-alive, X-Custom-Hop\r\nX-Custom-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nUpgrade: h2c\r\nCookie: theme=dark; rc_uid=admin; rc_token=forged\r\n\
         Accept: application/json\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"msg\":\"hi\"}}"
    );
    let answer = raw_request(gw.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/api/v1/chat.postMessage?x=1");
    assert_eq!(seen.body, br#"{"msg":"hi"}"#);
    assert_eq!(seen.header_all("x-user-id"), vec![id.clone()]);
    assert_eq!(seen.header_all("x-auth-token"), vec![token.clone()]);
    assert_eq!(seen.header_all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    for gone in [
        "x_auth_token",
        "x_user_id",
        "x-user_id",
        "x-forwarded-host",
        "x-forwarded-proto",
        "forwarded",
        "x-original-url",
        "x-http-method-override",
        "x-custom-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            seen.header_all(gone).is_empty(),
            "{gone} reached the upstream"
        );
    }
    assert_eq!(seen.header("cookie").as_deref(), Some("theme=dark"));
    assert_eq!(seen.header("accept").as_deref(), Some("application/json"));
    // The upstream's own hop-by-hop headers do not reach the client.
    assert!(
        !answer.to_ascii_lowercase().contains("x-upstream-private"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn public_routes_forward_without_identity() {
    let (up, gw, id, token) =
        setup_with("[routes]\npublic = [\"/api/info\", \"/assets/*\"]\n").await;
    for path in ["/api/info", "/assets/app.css"] {
        let r = client()
            .get(gw.url(path))
            .header("x-auth-token", &token)
            .header("x-user-id", &id)
            .header("x-forwarded-for", "6.6.6.6")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let seen = up.last();
        assert_eq!(seen.target, path);
        assert!(
            seen.header_all("x-user-id").is_empty() && seen.header_all("x-auth-token").is_empty(),
            "{path}"
        );
        assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    }
    let before = up.count();
    for path in ["/API/INFO", "/api/info/x", "/assets"] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    assert_eq!(up.count(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_surfaces_are_answered_here_and_never_forwarded() {
    let (up, gw, id, token) = setup().await;
    let ddp = json!({"message": "{\"msg\":\"method\",\"method\":\"login\",\"params\":[{\"user\":{\"username\":\"alice\"},\"password\":\"x\"}]}"});
    for path in [
        "/api/v1/method.callAnon/login",
        "/api/v1/method.call/login",
        "/api/v1/method.callanon/login/",
        "/API/V1/METHOD.CALL/LOGIN",
    ] {
        for with_session in [false, true] {
            let mut rb = client().post(gw.url(path)).json(&ddp);
            if with_session {
                rb = rb.header("x-auth-token", &token).header("x-user-id", &id);
            }
            let r = rb.send().await.unwrap();
            // Answered like Rocket.Chat: 200 with the DDP error frame inside.
            assert_eq!(r.status(), 200, "{path}");
            let envelope: serde_json::Value = r.json().await.unwrap();
            let frame: serde_json::Value =
                serde_json::from_str(envelope["message"].as_str().unwrap()).unwrap();
            assert_eq!(frame["error"]["error"], 401, "{path}: {frame}");
        }
    }
    // users.createToken mints a backend token for anyone: refused, session or not.
    let r = client()
        .post(gw.url("/api/v1/users.createToken"))
        .json(&json!({"username": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The realtime API only as WebSockets (SockJS's HTTP transports would carry unread frames).
    for (path, status) in [
        ("/websocket", 400),
        ("/sockjs/123/abc/websocket", 400),
        ("/sockjs/123/abc/xhr_send", 404),
        ("/sockjs/123/abc/xhr", 404),
    ] {
        assert_eq!(
            status_as(reqwest::Method::POST, &gw.url(path), &id, &token).await,
            status,
            "{path}"
        );
    }
    assert_eq!(
        status_as(
            reqwest::Method::POST,
            &gw.url("/api/v1/users.createToken"),
            &id,
            &token
        )
        .await,
        403
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_stream_to_the_upstream() {
    let (up, gw, id, token) = setup().await;
    // The second half is only sent once the upstream has seen the first: a buffering gateway
    // would wait for the whole body and this request would never complete.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let notify = up.first_chunk.clone();
    tokio::spawn(async move {
        tx.send(Ok(vec![b'a'; 4096])).await.unwrap();
        notify.notified().await;
        tx.send(Ok(vec![b'b'; 4096])).await.unwrap();
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client()
            .post(gw.url("/api/v1/rooms.upload/x"))
            .header("x-auth-token", &token)
            .header("x-user-id", &id)
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    )
    .await
    .expect("a buffering gateway never forwards the first chunk")
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body_len, 8192);
    // A multi-megabyte upload arrives whole.
    let big = vec![b'z'; 12 * 1024 * 1024];
    let r = client()
        .post(gw.url("/api/v1/rooms.upload/y"))
        .header("x-auth-token", &token)
        .header("x-user-id", &id)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body_len, 12 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn response_bodies_stream_to_the_client() {
    let (_up, gw, id, token) = setup().await;
    let mut r = client()
        .get(gw.url("/stream"))
        .header("x-auth-token", &token)
        .header("x-user-id", &id)
        .send()
        .await
        .unwrap();
    // The first chunk arrives while the upstream is still holding back the second.
    let first = tokio::time::timeout(Duration::from_secs(2), r.chunk())
        .await
        .expect("first chunk was held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first;");
    let rest = r.chunk().await.unwrap().unwrap();
    assert_eq!(&rest[..], b"second");
    let r = client()
        .get(gw.url("/big"))
        .header("x-auth-token", &token)
        .header("x-user-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 8 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_faults_are_502_and_504_without_tokens() {
    // A closed port: 502.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gateway::start(
        &config_text(closed, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let r = client()
        .get(gw.url("/api/v1/me"))
        .header("x-auth-token", &token)
        .header("x-user-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = r.text().await.unwrap();
    assert!(!body.contains(&token), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["success"].clone(), v["status"].clone()),
        (json!(false), json!("error"))
    );
    // A silent upstream (no headers within upstream.timeout = 2s): 504.
    let (up, gw, id, token) = setup().await;
    let started = std::time::Instant::now();
    let r = client()
        .get(gw.url("/slow"))
        .header("x-auth-token", &token)
        .header("x-user-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(8));
    let body = r.text().await.unwrap();
    assert!(!body.contains(&token), "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "error"
    );
    assert_eq!(up.last().target, "/slow");
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_and_repeated_credentials_are_refused() {
    let (up, gw, id, token) = setup().await;
    let cases = [
        format!("POST /api/v1/x HTTP/1.1\r\nHost: a\r\nX-Auth-Token: {token}\r\nX-User-Id: {id}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        format!("GET /api/v1/me HTTP/1.1\r\nHost: a\r\nX-Auth-Token: {token}\r\nX-Auth-Token: {token}\r\nX-User-Id: {id}\r\n\r\n"),
        format!("GET /api/v1/me HTTP/1.1\r\nHost: a\r\nX-Auth-Token: {token}\r\nX-User-Id: {id}\r\nX-User-Id: other\r\n\r\n"),
    ];
    for raw in &cases {
        let answer = raw_request(gw.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{raw}\n=> {answer}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn locally_answered_requests_keep_the_connection_usable() {
    let (up, gw, _, _) = setup().await;
    // Each answered by the gateway itself, each with a small body it has no use for, sent
    // after its head (as Python's requests does): the next request must still be served.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    for path in [
        "/api/v1/logout",
        "/api/v1/me",
        "/api/v1/method.callAnon/login",
    ] {
        let head = format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"{}").await.unwrap();
    }
    s.write_all(b"GET /api/info HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    let statuses: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["401", "401", "200", "200"], "{answer}");
    assert_eq!(up.count(), 1);
}

/// The names of a process's threads (as the kernel keeps them: 15 characters at most).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn several_workers_serve_one_port_and_stop_together() {
    let up = RecordingUpstream::start().await;
    let config =
        config_text(up.addr, None, "").replace("[server]\n", "[server]\nworker_threads = 3\n");
    let files = write_files(&config, &users_toml(&standard_users()));
    let mut gw = GatewayProcess::spawn(&files.config_path);
    let workers = || {
        thread_names(gw.child.id())
            .iter()
            .filter(|name| name.starts_with("authgate-worke"))
            .count()
    };
    // A thread names itself once it runs, which may be just after the port is announced.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while workers() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        workers(),
        2,
        "the main thread is the first of the 3 workers"
    );

    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    // A client each, so a connection each: the kernel spreads them over the workers' sockets.
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (url, id, token) = (gw.url(""), id.clone(), token.clone());
        clients.spawn(async move {
            let http = client();
            for j in 0..4 {
                let resp = http
                    .get(format!("{url}/api/v1/me?n={i}-{j}"))
                    .header("X-User-Id", &id)
                    .header("X-Auth-Token", &token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let forwarded: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/api/v1/me?n="))
        .collect();
    assert_eq!(forwarded.len(), 96);
    for r in &forwarded {
        assert_eq!(r.header("x-user-id").as_deref(), Some(id.as_str()));
        assert_eq!(r.header("x-auth-token").as_deref(), Some(token.as_str()));
    }
    let stopped = gw.signal_and_wait("TERM", Duration::from_secs(10));
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
}
