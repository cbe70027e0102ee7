//! The built binary: SIGHUP reloads of a good and of a bad config, and a full run's JSON logs
//! (one access line per request, one audit line per login, no secret anywhere).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use totp_rs::{Algorithm, Secret, TOTP};

const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn totp_code(secret: &str) -> String {
    let bytes = Secret::Encoded(secret.into()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new())
        .generate_current()
        .unwrap()
}

async fn post(url: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().post(url).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_logs_one_access_line_per_request_one_audit_line_per_login_and_no_secret() {
    let up = RecordingUpstream::start().await;
    let mut users = standard_users();
    users.push(TestUser {
        username: "tess",
        password: "tess-password-5",
        email: None,
        extra: "totp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"",
    });
    let users_text = users_toml(&users);
    let hashes: Vec<String> = users_text
        .lines()
        .filter_map(|l| l.strip_prefix("password_hash = \""))
        .map(|h| h.trim_end_matches('"').to_string())
        .collect();
    let config = config_text(
        up.addr,
        None,
        "[log]\nformat = \"json\"\nlevel = \"trace\"\n",
    )
    .replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let files = write_files(&config, &users_text);
    let mut gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    let login_url = gw.url("/api/v1/login");

    let (s, alice) = post(
        &login_url,
        json!({"user": "alice", "password": "alice-password-1"}),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let alice_id = alice["data"]["userId"].as_str().unwrap().to_string();
    let alice_token = alice["data"]["authToken"].as_str().unwrap().to_string();
    let creds = [
        ("x-user-id", alice_id.as_str()),
        ("x-auth-token", alice_token.as_str()),
        ("x-request-id", "lb-req-0042"),
    ];
    // A token in the query string must not reach the log through the path either.
    let me = format!("{base}/api/v1/me?authToken={alice_token}&rc_token={alice_token}");
    assert_eq!(get_with(&me, &creds).await, 200);
    let bad = json!({"user": "alice", "password": "wrong-password-9"});
    assert_eq!(post(&login_url, bad, &[]).await.0, 401);
    let tess = json!({"user": "tess", "password": "tess-password-5"});
    assert_eq!(post(&login_url, tess.clone(), &[]).await.0, 401);
    let code = totp_code(TOTP_SECRET);
    let (s, tess_session) = post(&login_url, tess, &[("x-2fa-code", code.as_str())]).await;
    assert_eq!(s, 200, "{tess_session}");
    let tess_token = tess_session["data"]["authToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = post(&login_url, json!({"resume": alice_token}), &[]).await;
    assert_eq!(s, 200);
    let out = format!("{base}/api/v1/logout");
    let (s, _) = post(&out, json!({}), &creds[..2]).await;
    assert_eq!(s, 200);
    assert!(gw
        .signal_and_wait("TERM", Duration::from_secs(10))
        .is_some());

    let logs = gw.stderr();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let of =
        |target: &str| -> Vec<&Value> { lines.iter().filter(|l| l["target"] == target).collect() };
    let access = of("authgate::access");
    assert_eq!(access.len(), 7, "one access line per request:\n{logs}");
    let traced = access
        .iter()
        .find(|l| l["request_id"] == "lb-req-0042" && l["path"] == "/api/v1/me")
        .expect("the access line of the proxied request");
    assert_eq!(traced["method"], "GET");
    assert_eq!(traced["status"], 200);
    assert_eq!(traced["user_id"], alice_id.as_str());
    assert_eq!(traced["client_ip"], "127.0.0.1");
    assert!(traced["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(traced["upstream_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(up.last().header("x-request-id").unwrap(), "lb-req-0042");

    let audit = of("authgate::audit");
    let outcomes: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|l| {
            (
                l["login"].as_str().unwrap(),
                l["directory"].as_str().unwrap(),
                l["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("alice", "local", "success"),
            ("alice", "local", "bad_credentials"),
            ("tess", "local", "totp_required"),
            ("tess", "local", "success"),
            ("-", "local", "success"),
        ]
    );
    assert!(audit.iter().all(|l| l["client_ip"] == "127.0.0.1"));

    let mut secrets = vec![
        "alice-password-1".to_string(),
        "wrong-password-9".into(),
        "tess-password-5".into(),
        alice_token.clone(),
        tess_token.clone(),
        TOTP_SECRET.into(),
        format!("\"{code}\""),
        format!("={code}"),
    ];
    secrets.extend(hashes);
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{secret} is in the logs:\n{logs}"
        );
    }
}

fn reload_config(upstream: std::net::SocketAddr, public: &str) -> String {
    config_text(
        upstream,
        None,
        &format!("[routes]\npublic = [{public}]\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n"),
    )
}

fn access_lines(gw: &GatewayProcess) -> usize {
    gw.stderr()
        .matches("\"target\":\"authgate::access\"")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let up = RecordingUpstream::start().await;
    let alice_only = users_toml(&[user("alice", "alice-password-1", None)]);
    let files = write_files(&reload_config(up.addr, "\"/api/info\""), &alice_only);
    let gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    let login_url = gw.url("/api/v1/login");
    let bob = json!({"user": "bob", "password": "bob-password-2"});
    assert_eq!(post(&login_url, bob.clone(), &[]).await.0, 401);
    assert_eq!(get_with(&format!("{base}/news"), &[]).await, 401);

    // Good: a new user, a new public route, a quieter log level, and a listen address that
    // needs a restart.
    std::fs::write(
        files.dir.path().join("users.toml"),
        users_toml(&[
            user("alice", "alice-password-1", None),
            user("bob", "bob-password-2", None),
        ]),
    )
    .unwrap();
    let moved = reload_config(up.addr, "\"/api/info\", \"/news\"")
        .replace("127.0.0.1:0\"\nshutdown", "127.0.0.1:1\"\nshutdown")
        .replace("level = \"info\"", "level = \"info,authgate::access=off\"");
    assert!(moved.contains("127.0.0.1:1"), "{moved}");
    std::fs::write(&files.config_path, moved).unwrap();
    gw.signal("HUP");
    assert!(
        gw.wait_for_stderr("configuration reloaded", 1, Duration::from_secs(10)),
        "{}",
        gw.stderr()
    );
    assert!(
        gw.stderr().contains(r#""key":"server.listen""#),
        "{}",
        gw.stderr()
    );
    let logged = access_lines(&gw);
    assert!(logged >= 2);
    assert_eq!(post(&login_url, bob.clone(), &[]).await.0, 200);
    assert_eq!(get_with(&format!("{base}/news"), &[]).await, 200);
    assert_eq!(up.last().target, "/news");
    assert_eq!(access_lines(&gw), logged, "the new log level applies");

    // Bad: the rejection names each problem's key, and everything keeps running as before.
    let broken = reload_config(up.addr, "\"/api/info\"")
        .replace("[upstream]\n", "[upstream]\nretries = 3\n")
        .replace("timeout = \"2s\"", "timeout = \"soon\"");
    std::fs::write(&files.config_path, broken).unwrap();
    gw.signal("HUP");
    assert!(
        gw.wait_for_stderr("new configuration rejected", 1, Duration::from_secs(10)),
        "{}",
        gw.stderr()
    );
    let rejection = gw
        .stderr()
        .lines()
        .find(|l| l.contains("new configuration rejected"))
        .unwrap()
        .to_string();
    assert!(rejection.contains("upstream.retries"), "{rejection}");
    assert!(rejection.contains("upstream.timeout"), "{rejection}");
    assert_eq!(post(&login_url, bob.clone(), &[]).await.0, 200);
    assert_eq!(get_with(&format!("{base}/news"), &[]).await, 200);

    // Bad users file: rejected too, naming the file; bob can still log in.
    std::fs::write(&files.config_path, reload_config(up.addr, "\"/api/info\"")).unwrap();
    std::fs::write(
        files.dir.path().join("users.toml"),
        "[[users]]\nusername = 3\n",
    )
    .unwrap();
    gw.signal("HUP");
    assert!(
        gw.wait_for_stderr("new configuration rejected", 2, Duration::from_secs(10)),
        "{}",
        gw.stderr()
    );
    assert!(gw.stderr().contains("users.toml"), "{}", gw.stderr());
    assert_eq!(post(&login_url, bob, &[]).await.0, 200);
    assert_eq!(get_with(&format!("{base}/news"), &[]).await, 200);

    let metrics = scrape_metrics(&format!("http://{}/metrics", gw.metrics_addr())).await;
    assert!(
        metrics.contains(r#"authgate_config_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"authgate_config_reloads_total{result="failure"} 2"#));
}

/// Every string value of a JSON log record, however deep.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// JSON logs hold plain values, never Rust renderings (`Some(..)`, `None`, `[..]`); the startup
/// records name the listeners, the upstream and its mode, the config file, the session store and
/// the users each directory holds; an unreachable upstream at start gets a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_startup_records_are_plain_values_and_name_what_runs() {
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = config_text(
        dead,
        None,
        "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let files = write_files(&config, &users_toml(&standard_users()));
    let mut gw = GatewayProcess::spawn(&files.config_path);
    let metrics = gw.metrics_addr();
    assert!(gw.wait_for_stderr("authgate started", 1, Duration::from_secs(10)));
    assert!(gw
        .signal_and_wait("TERM", Duration::from_secs(10))
        .is_some());
    let logs = gw.stderr();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let mut all = Vec::new();
    lines.iter().for_each(|l| strings(l, &mut all));
    for s in &all {
        assert!(
            !s.starts_with("Some(") && s != "None" && !s.starts_with('['),
            "a Rust rendering in the logs: {s}\n{logs}"
        );
    }
    let with = |message: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["message"].as_str() == Some(message))
            .collect()
    };
    let started = with("authgate started");
    assert_eq!(started.len(), 1, "{logs}");
    let started = started[0];
    assert_eq!(started["level"], "INFO");
    assert_eq!(
        started["config"],
        files.config_path.display().to_string().as_str()
    );
    assert!(
        started["upstream"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{dead}")),
        "{started}"
    );
    assert_eq!(started["upstream_mode"], "trusted-headers");
    assert_eq!(started["session_store"], "memory");
    assert_eq!(started["listeners"], 1);
    // carol is inactive: three of the four users can log in.
    assert_eq!(started["users_local"], 3);
    let listening: Vec<&str> = with("listening")
        .iter()
        .map(|l| l["address"].as_str().unwrap())
        .collect();
    assert_eq!(listening, [gw.addr.to_string().as_str()]);
    let management = with("management listener (metrics, health) listening");
    assert_eq!(management[0]["address"], metrics.to_string().as_str());
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("upstream not reachable"))),
        "{logs}"
    );
}

/// A user added to the users file of a running `serve` can log in within `directory.local.watch`,
/// without a signal; a broken edit is rejected and the loaded users keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_file_edits_apply_without_a_signal() {
    let up = RecordingUpstream::start().await;
    let users = standard_users();
    let config = config_text(up.addr, None, "").replace(
        "users_file = \"users.toml\"\n",
        "users_file = \"users.toml\"\nwatch = \"200ms\"\n",
    );
    let files = write_files(&config, &users_toml(&users));
    let gw = GatewayProcess::spawn(&files.config_path);
    let login_url = gw.url("/api/v1/login");
    let frank = json!({"user": "frank", "password": "frank-password-6"});
    let (s, _) = post(&login_url, frank.clone(), &[]).await;
    assert_eq!(s, 401);

    // Only frank is added; the other entries stay byte for byte (new hashes would be new
    // credentials). The gateway is not polled with logins meanwhile: those would be failures
    // that regulation counts.
    let users_path = files.dir.path().join("users.toml");
    let mut text = std::fs::read_to_string(&users_path).unwrap();
    text.push_str(&users_toml(&[user("frank", "frank-password-6", None)]));
    std::fs::write(&users_path, text).unwrap();
    assert!(
        gw.wait_for_stderr("configuration reloaded", 1, Duration::from_secs(10)),
        "{}",
        gw.stderr()
    );
    let (s, body) = post(&login_url, frank.clone(), &[]).await;
    assert_eq!(s, 200, "{body}");
    assert!(
        gw.stderr().contains("the users file changed"),
        "{}",
        gw.stderr()
    );

    std::fs::write(&users_path, "[[users]]\nusername = \"broken\"\n").unwrap();
    assert!(gw.wait_for_stderr("new configuration rejected", 1, Duration::from_secs(5)));
    let (s, body) = post(&login_url, frank, &[]).await;
    assert_eq!(s, 200, "{body}");
}
