//! Operations: metrics scraped over HTTP on the management listener, health and readiness
//! (including during a stop), `authgate healthcheck`, request ids, and the reference config.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const METRICS_ON: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The value of one exact series (`name{labels}`) in a Prometheus text page.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

async fn get(url: &str) -> (u16, String) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn with_creds(url: &str, uid: &str, token: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("x-user-id", uid)
        .header("x-auth-token", token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_over_http_on_their_own_listener() {
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let gw = Gateway::start(&config_text(up.addr, None, METRICS_ON), &users).await;
    let base = gw.url("");
    let (uid, token) = login(&base, "alice", "alice-password-1").await;
    let wrong = json!({"user": "alice", "password": "not-her-password"});
    assert_eq!(login_json(&base, wrong).await.0, 401);
    let unknown = json!({"user": "nobody", "password": "whatever-1"});
    assert_eq!(login_json(&base, unknown).await.0, 401);
    let me = with_creds(&gw.url("/api/v1/me"), &uid, &token).await;
    assert_eq!(me.status(), 200);
    let failing = with_creds(&gw.url("/status/503"), &uid, &token).await;
    assert_eq!(failing.status(), 503);
    assert_eq!(get(&gw.url("/api/v1/me")).await.0, 401);
    let out = client()
        .post(gw.url("/api/v1/logout"))
        .header("x-user-id", &uid)
        .header("x-auth-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);

    let (status, text) = get(&gw.admin_url("/metrics")).await;
    assert_eq!(status, 200);
    let expect = [
        (
            r#"authgate_logins_total{outcome="success",directory="local"}"#,
            1.0,
        ),
        (
            r#"authgate_logins_total{outcome="bad_credentials",directory="local"}"#,
            1.0,
        ),
        (
            r#"authgate_logins_total{outcome="bad_credentials",directory="none"}"#,
            1.0,
        ),
        (
            r#"authgate_logins_total{outcome="blocked",directory="none"}"#,
            0.0,
        ),
        ("authgate_login_duration_seconds_count", 3.0),
        (
            r#"authgate_proxied_requests_total{status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"authgate_proxied_requests_total{status_class="5xx"}"#,
            1.0,
        ),
        ("authgate_proxied_request_duration_seconds_count", 2.0),
        (r#"authgate_requests_total{status_class="2xx"}"#, 3.0),
        (r#"authgate_requests_total{status_class="4xx"}"#, 3.0),
        (r#"authgate_requests_total{status_class="5xx"}"#, 1.0),
        (r#"authgate_upstream_errors_total{kind="unreachable"}"#, 0.0),
        ("authgate_sessions_issued_total", 1.0),
        ("authgate_sessions_revoked_total", 1.0),
        ("authgate_requests_in_flight", 0.0),
    ];
    for (name, value) in expect {
        assert_eq!(series(&text, name), Some(value), "{name} in\n{text}");
    }
    assert!(text.contains("# TYPE authgate_login_duration_seconds histogram"));
    assert!(text.contains("# HELP authgate_logins_total"));

    // Nothing of the management listener is reachable through the public one.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, body) = get(&gw.url(path)).await;
        assert_eq!(status, 401, "{path}");
        assert!(!body.contains("authgate_"), "{path}: {body}");
    }
    assert_eq!(get(&gw.admin_url("/healthz")).await, (200, "ok\n".into()));
    assert_eq!(get(&gw.admin_url("/nope")).await.0, 404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_counted() {
    let dead = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let users = users_toml(&standard_users());
    let extra = format!("[routes]\npublic = [\"/api/info\"]\n\n{METRICS_ON}");
    let gw = Gateway::start(&config_text(dead, None, &extra), &users).await;
    assert_eq!(get(&gw.url("/api/info")).await.0, 502);
    let text = get(&gw.admin_url("/metrics")).await.1;
    assert_eq!(
        series(
            &text,
            r#"authgate_upstream_errors_total{kind="unreachable"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            r#"authgate_proxied_requests_total{status_class="5xx"}"#
        ),
        Some(1.0)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_off_by_default() {
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let gw = Gateway::start(&config_text(up.addr, None, ""), &users).await;
    assert!(gw.metrics_addr.is_none());
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(&gw.url(path)).await.0, 401, "{path}");
    }
    assert_eq!(up.count(), 0);
    gw.stop().await;
}

async fn readiness(gw: &Gateway) -> (u16, Value) {
    let (status, body) = get(&gw.admin_url("/readyz")).await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_each_dependency() {
    let mut redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), METRICS_ON),
        &users,
    )
    .await;
    let (status, body) = readiness(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"session_store": "ok", "upstream": "ok", "directory.local": "ok"}})
    );

    redis.kill();
    let (status, body) = readiness(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    assert_ne!(body["checks"]["session_store"], "ok");
    assert_eq!(body["checks"]["upstream"], "ok");
    // Alive all the same: the process answers.
    assert_eq!(get(&gw.admin_url("/healthz")).await.0, 200);

    redis.restart();
    let mut ready = false;
    for _ in 0..50 {
        if readiness(&gw).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "readiness did not come back with Redis");
    gw.stop().await;

    let dead = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start(&config_text(dead, None, METRICS_ON), &users).await;
    let (status, body) = readiness(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["session_store"], "ok");
    assert!(
        body["checks"]["upstream"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{body}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_as_soon_as_a_stop_begins() {
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let config = config_text(up.addr, None, METRICS_ON)
        .replace("[server]\n", "[server]\nshutdown_delay = \"1500ms\"\n");
    let mut gw = Gateway::start(&config, &users).await;
    assert_eq!(readiness(&gw).await.0, 200);

    let stopping = tokio::spawn(gw.take_running().shutdown());
    let (status, body) = readiness(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["checks"]["shutdown"]
        .as_str()
        .unwrap()
        .contains("stopping"));
    assert_eq!(get(&gw.admin_url("/healthz")).await.0, 200);
    // During the delay the public listener still takes new requests.
    assert_eq!(get(&gw.url("/api/info")).await.0, 200);

    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the stop finishes")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(gw.metrics_addr.unwrap())
        .await
        .is_err());
}

fn healthcheck(config: &std::path::Path, live: bool) -> (bool, String) {
    let mut cmd = Command::new(authgate_bin());
    cmd.args(["healthcheck", "--config"]).arg(config);
    if live {
        cmd.arg("--live");
    }
    let out = cmd.env_remove("AUTHGATE_CONFIG").output().unwrap();
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 1, "exit {code}");
    (
        code == 0,
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_command_exits_0_when_ready_and_1_otherwise() {
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let metrics = format!("[metrics]\nlisten = \"0.0.0.0:{}\"\n", free_port());
    let files = write_files(&config_text(up.addr, None, &metrics), &users);
    let (ok, out) = healthcheck(&files.config_path, false);
    assert!(!ok, "healthy before it runs: {out}");

    let mut gw = GatewayProcess::spawn(&files.config_path);
    gw.metrics_addr();
    let (ok, out) = healthcheck(&files.config_path, false);
    assert!(ok, "{out}");
    assert!(out.contains("/readyz"), "{out}");
    assert!(healthcheck(&files.config_path, true).0);
    assert!(gw
        .signal_and_wait("TERM", Duration::from_secs(10))
        .is_some());
    assert!(!healthcheck(&files.config_path, true).0);

    // Ready needs the upstream; alive does not.
    let dead = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics = format!("[metrics]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    let files = write_files(&config_text(dead, None, &metrics), &users);
    let gw = GatewayProcess::spawn(&files.config_path);
    gw.metrics_addr();
    let (ok, out) = healthcheck(&files.config_path, false);
    assert!(!ok && out.contains("upstream"), "{out}");
    assert!(healthcheck(&files.config_path, true).0);
    drop(gw);

    // Without the management listener: the public listener must accept connections.
    let port = free_port();
    let config =
        config_text(up.addr, None, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let files = write_files(&config, &users);
    let mut gw = GatewayProcess::spawn(&files.config_path);
    assert!(healthcheck(&files.config_path, false).0);
    assert!(gw
        .signal_and_wait("TERM", Duration::from_secs(10))
        .is_some());
    assert!(!healthcheck(&files.config_path, false).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_come_from_trusted_proxies_or_are_generated_and_forwarded() {
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let public = "[routes]\npublic = [\"/api/info\"]\n";
    let trusted = config_text(up.addr, None, public).replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let gw = Gateway::start(&trusted, &users).await;
    let r = client()
        .get(gw.url("/api/info"))
        .header("x-request-id", "lb-7f3a-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "lb-7f3a-0001");
    assert_eq!(up.last().header("x-request-id").unwrap(), "lb-7f3a-0001");
    // An id that is not one plain token is replaced, even from a trusted proxy.
    let r = client()
        .get(gw.url("/api/info"))
        .header("x-request-id", "a b\tc")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(up.last().header("x-request-id").unwrap(), id);
    gw.stop().await;

    let gw = Gateway::start(&config_text(up.addr, None, public), &users).await;
    let r = client()
        .get(gw.url("/api/info"))
        .header("x-request-id", "forged-by-client")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(up.last().header("x-request-id").unwrap(), id);
    // Answers the gateway gives itself carry one too.
    let r = client().get(gw.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    gw.stop().await;
}

/// Every table and key named in a TOML text, commented out or not (`# key = ...`).
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
            {
                table = name.to_string();
                let mut prefix = String::new();
                for part in name.split('.') {
                    if !prefix.is_empty() {
                        prefix.push('.');
                    }
                    prefix.push_str(part);
                    keys.insert(prefix.clone());
                }
            }
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            keys.insert(format!("{table}.{key}"));
        }
    }
    keys
}

#[test]
fn config_toml_documents_every_accepted_key_and_nothing_else() {
    let documented = documented_keys(include_str!("../config.toml"));
    let accepted = authgate::config::accepted_keys();
    assert!(accepted.len() > 40, "{accepted:?}");
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|k| match k.strip_suffix(".*") {
            Some(table) => !documented.contains(table),
            None => !documented.contains(*k),
        })
        .collect();
    assert!(
        missing.is_empty(),
        "config.toml does not document {missing:?}"
    );
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|d| {
            !accepted.contains(d)
                && !accepted.iter().any(|a| {
                    a.strip_suffix('*')
                        .is_some_and(|table| d.starts_with(table))
                })
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "config.toml documents unknown keys {unknown:?}"
    );
}

#[test]
fn management_and_tls_settings_are_validated_with_their_keys() {
    use authgate::config::{Config, ConfigSource};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let load = |body: &str| {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, body).unwrap();
        Config::load(&ConfigSource::from_file(&path).unwrap())
    };
    let base = "[directory.local]\nusers_file = \"users.toml\"\n";
    let config = load(base).unwrap();
    assert_eq!(config.metrics.listen, None);
    assert!(config.server.tls.is_none());

    let clash = format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\n[metrics]\nlisten = \"127.0.0.1:8080\"\n{base}"
    );
    let e = load(&clash).unwrap_err().to_string();
    assert!(
        e.contains("`metrics.listen`") && e.contains("overlaps"),
        "{e}"
    );
    let e = load(&format!("[metrics]\nlisten = \"localhost\"\n{base}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`metrics.listen`"), "{e}");

    let e = load(&format!("[server.tls]\ncert = \"cert.pem\"\n{base}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`server.tls.key`: missing"), "{e}");
    let e = load(&format!(
        "[server.tls]\ncert = \"nowhere.pem\"\nkey = \"key.pem\"\n{base}"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`server.tls.cert`") && e.contains("nowhere.pem"),
        "{e}"
    );
    let e = load(&format!("[server]\nshutdown_delay = \"soon\"\n{base}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`server.shutdown_delay`"), "{e}");
}

/// A second `serve` on an address a running authgate holds exits with "address in use" instead
/// of taking half of the new connections; the first keeps serving every session it issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_address_refuses_to_start() {
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let port = free_port();
    let config = config_text(up.addr, None, "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace("[server]\n", "[server]\nworker_threads = 2\n");
    let files = write_files(&config, &users);
    let first = GatewayProcess::spawn(&files.config_path);
    let (id, token) = login(&first.url(""), "alice", "alice-password-1").await;

    let config_path = files.config_path.clone();
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let mut second = Command::new(authgate_bin())
            .args(["serve", "--config"])
            .arg(&config_path)
            .env_remove("AUTHGATE_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = second.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = second.kill();
                let _ = second.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        use std::io::Read;
        second
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    let status = status.expect("the second gateway started on an address already in use");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("in use"),
        "{stderr}"
    );
    // Every new connection still reaches the first process, which knows the session.
    for _ in 0..20 {
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = fresh
            .get(first.url("/api/v1/me"))
            .header("x-user-id", &id)
            .header("x-auth-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
}
