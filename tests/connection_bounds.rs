//! Every phase of a client connection is bounded (issue 14, point 2), and the framing guard
//! ends a connection it cannot follow (point 9): raw TCP clients against the real gateway.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One second for every bound, so a test sees each one run out quickly.
const SHORT_BOUNDS: &str = "first_byte_timeout = \"1s\"\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\nlogin_body_timeout = \"1s\"\nh2_preface_timeout = \"1s\"\nidle_timeout = \"1s\"\n";
const METRICS_ON: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame on stream 0.
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const AMBIGUOUS_BODY: &str = r#"{"success":false,"error":"error-bad-request","status":"error","message":"Content-Length with Transfer-Encoding is not allowed."}"#;

async fn gateway_with(up: &RecordingUpstream, server_extra: &str) -> Gateway {
    let cfg = config_text(up.addr, None, METRICS_ON)
        .replace("[server]\n", &format!("[server]\n{server_extra}"));
    Gateway::start(&cfg, &users_toml(&standard_users())).await
}

/// The same, with an upstream timeout long enough that only the client's side can run out.
async fn patient_gateway_with(up: &RecordingUpstream, server_extra: &str) -> Gateway {
    let cfg = config_text(up.addr, None, METRICS_ON)
        .replace("[server]\n", &format!("[server]\n{server_extra}"))
        .replace("timeout = \"2s\"\n", "timeout = \"30s\"\n");
    Gateway::start(&cfg, &users_toml(&standard_users())).await
}

/// Reads until the gateway closes the connection (EOF or reset); what arrived and when it closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (
        String::from_utf8_lossy(&out).into_owned(),
        closed.then(|| started.elapsed()),
    )
}

/// Asserts the connection was closed by the gateway between `at_least` and `at_most` from now.
async fn assert_closed_within(s: &mut TcpStream, at_least: Duration, at_most: Duration) -> String {
    let (got, closed_after) = read_until_closed(s, at_most + Duration::from_secs(3)).await;
    let closed_after = closed_after.expect("the gateway never closed the connection");
    assert!(
        closed_after >= at_least && closed_after <= at_most,
        "closed after {closed_after:?}, expected between {at_least:?} and {at_most:?}"
    );
    got
}

/// The count of one close reason. The server counts a close after the client has seen it, so
/// a zero is read again for up to a second before it is believed.
async fn closed_count(gw: &Gateway, reason: &str) -> u64 {
    let series = format!("authgate_connections_closed_total{{reason=\"{reason}\"}} ");
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let text = scrape_metrics(&gw.admin_url("/metrics")).await;
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} is not registered:\n{text}"))
            .trim()
            .parse()
            .unwrap();
        if n > 0 || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_close_reason_is_registered_at_start() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, "").await;
    for reason in [
        "first_byte_timeout",
        "header_timeout",
        "body_timeout",
        "login_body_timeout",
        "h2_preface_timeout",
        "idle_timeout",
        "tls_handshake_timeout",
        "unfollowed_framing",
    ] {
        assert_eq!(closed_count(&gw, reason).await, 0, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connection_is_closed_at_first_byte_timeout() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, SHORT_BOUNDS).await;
    let mut s = connect(gw.addr).await;
    let got = assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(got, "", "a silent client was sent something");
    assert_eq!(closed_count(&gw, "first_byte_timeout").await, 1);
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_head_is_closed_at_header_read_timeout() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, SHORT_BOUNDS).await;
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET /api/info HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let got = assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(got, "");
    assert_eq!(closed_count(&gw, "header_timeout").await, 1);
    assert_eq!(up.count(), 0, "a half-sent request reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_h2_preface_is_closed_at_h2_preface_timeout() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, SHORT_BOUNDS).await;
    let mut s = connect(gw.addr).await;
    s.write_all(&H2_PREFACE[..20]).await.unwrap();
    let got = assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(got, "");
    assert_eq!(closed_count(&gw, "h2_preface_timeout").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_h2_preface_then_silence_is_closed_at_h2_preface_timeout() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, SHORT_BOUNDS).await;
    let mut s = connect(gw.addr).await;
    s.write_all(H2_PREFACE).await.unwrap();
    // The gateway may send its own SETTINGS meanwhile; what matters is that it hangs up.
    assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(closed_count(&gw, "h2_preface_timeout").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_h2_connection_is_closed_at_idle_timeout_but_not_while_a_request_waits() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, SHORT_BOUNDS).await;
    // Preface and SETTINGS, then nothing: idle, not stuck in the preface.
    let mut s = connect(gw.addr).await;
    s.write_all(H2_PREFACE).await.unwrap();
    s.write_all(H2_EMPTY_SETTINGS).await.unwrap();
    assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(3500),
    )
    .await;
    assert_eq!(closed_count(&gw, "idle_timeout").await, 1);
    assert_eq!(closed_count(&gw, "h2_preface_timeout").await, 0);

    // A request whose answer takes longer than idle_timeout (the upstream's /slow, cut at the
    // upstream timeout of 2 s) still gets its answer over HTTP/2.
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(gw.url("/slow"))
        .header("x-user-id", &id)
        .header("x-auth-token", &token)
        .send()
        .await
        .expect("the HTTP/2 connection was closed under a waiting request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 504);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"success":false,"error":"error-upstream-timeout","status":"error","message":"The chat backend did not answer in time."}"#
    );
    assert_eq!(up.last().target, "/slow");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_body_that_stops_midway_gets_408_and_the_connection_closes() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(
        &up,
        SHORT_BOUNDS
            .replace("body_read_timeout = \"1s\"", "body_read_timeout = \"30s\"")
            .as_str(),
    )
    .await;
    let mut s = connect(gw.addr).await;
    s.write_all(
        b"POST /api/v1/login HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{\"user\":\"alice\",",
    )
    .await
    .unwrap();
    let got = assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(2500),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
    assert!(
        got.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{got}"
    );
    assert!(
        got.ends_with(r#"{"success":false,"error":"error-request-timeout","status":"error","message":"The login request body did not arrive in time."}"#),
        "{got}"
    );
    assert_eq!(closed_count(&gw, "login_body_timeout").await, 1);
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxied_body_that_stalls_is_cut_at_body_read_timeout() {
    let up = RecordingUpstream::start().await;
    let gw = patient_gateway_with(&up, SHORT_BOUNDS).await;
    let mut s = connect(gw.addr).await;
    s.write_all(b"POST /api/info HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    // A body still moving is not cut: a byte every 500 ms for 2 s, past the 1 s bound.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(b"x").await.unwrap();
    }
    let got = assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(2500),
    )
    .await;
    assert!(
        !got.contains(" 200 "),
        "a stalled body was answered as complete: {got}"
    );
    assert_eq!(closed_count(&gw, "body_timeout").await, 1);
    // Whatever the upstream got, it never got a whole 100-byte body.
    assert!(up.requests().iter().all(|r| r.body_len < 100));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_at_idle_timeout() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, SHORT_BOUNDS).await;
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET /api/info HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(closed_count(&gw, "idle_timeout").await, 1);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_request_slower_than_idle_timeout_is_answered_and_the_wait_after_it_bounded() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, SHORT_BOUNDS).await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let mut s = connect(gw.addr).await;
    // The upstream's /slow is cut at the upstream timeout (2 s), past the 1 s idle bound: the
    // request is in progress all along, so the connection is not idle.
    s.write_all(
        format!(
            "GET /slow HTTP/1.1\r\nHost: a\r\nX-User-Id: {id}\r\nX-Auth-Token: {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 504 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(up.last().target, "/slow");
    // Then nothing: closed as idle within one to two bounds.
    assert_closed_within(
        &mut s,
        Duration::from_millis(800),
        Duration::from_millis(2500),
    )
    .await;
    assert_eq!(closed_count(&gw, "idle_timeout").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn four_idle_sockets_do_not_lock_out_a_fifth_client_past_the_bound() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, &format!("{SHORT_BOUNDS}max_connections = 4\n")).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(gw.addr).await);
    }
    // Let the four take every slot before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let answer = raw_request(
        gw.addr,
        b"GET /api/info HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.ends_with(r#""received":0}"#), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "served after {:?}",
        started.elapsed()
    );
    for mut s in idle {
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(1)).await;
        assert!(closed.is_some(), "an idle socket is still open");
    }
    assert_eq!(closed_count(&gw, "first_byte_timeout").await, 4);
}

/// A request the guard must follow, then one framed two ways: the second is refused.
async fn assert_second_request_refused(first: &[u8]) {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, "").await;
    let mut s = connect(gw.addr).await;
    s.write_all(first).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    s.write_all(
        b"POST /api/info HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "the connection stayed open: {got}");
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(got.ends_with(AMBIGUOUS_BODY), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
    let seen: Vec<(String, String)> = up
        .requests()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    assert_eq!(seen, vec![("GET".to_string(), "/api/info".to_string())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_head_ending_in_bare_line_feeds_a_smuggling_attempt_is_refused() {
    assert_second_request_refused(b"GET /api/info HTTP/1.1\nHost: a\n\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_head_ending_in_crlf_lf_a_smuggling_attempt_is_refused() {
    assert_second_request_refused(b"GET /api/info HTTP/1.1\r\nHost: a\r\n\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_behind_a_bare_line_feed_head_nothing_is_smuggled() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, "").await;
    let answer = raw_request(
        gw.addr,
        b"GET /api/info HTTP/1.1\nHost: a\n\nPOST /api/info HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    // Framed two ways somewhere on the connection: refused, and the connection ends there.
    assert!(answer.contains("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.ends_with(AMBIGUOUS_BODY), "{answer}");
    assert!(!answer.contains("smuggled"), "{answer}");
    assert!(
        up.requests()
            .iter()
            .all(|r| r.method == "GET" && r.target == "/api/info"),
        "{:?}",
        up.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_upgrade_that_is_not_upgraded_ends_its_connection() {
    let up = RecordingUpstream::start().await;
    let gw = gateway_with(&up, "").await;
    // Sent together: the second request must never be read, framed either way.
    let answer = raw_request(
        gw.addr,
        b"GET /api/info HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\nPOST /api/info HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(!answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(
        up.requests()
            .iter()
            .all(|r| r.method == "GET" && r.target == "/api/info"),
        "{:?}",
        up.requests()
    );
    assert_eq!(closed_count(&gw, "unfollowed_framing").await, 1);

    // Sent one after the other: the first answer already closed the connection.
    let mut s = connect(gw.addr).await;
    s.write_all(
        b"GET /api/info HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "the connection stayed open after {got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
    let _ = s
        .write_all(b"POST /api/info HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await;
    assert!(
        up.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        up.requests()
    );
}
