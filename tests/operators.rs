//! The operator commands an on-call engineer reaches for, run as the real binary against a real
//! Redis that a real gateway process uses: `authgate sessions list` (what each session is, where
//! it came from, when it was last used; unknown users are errors) and `authgate blocks
//! list|clear` (lifting a brute-force block, of a user or of a client IP).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use support::*;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) OperatorsTest/1.0";
const MOBILE: &str = "RC Mobile; Android 14; v4.55.0 (OperatorsTest)";

fn users() -> String {
    users_toml(&[
        user("bob", "bob-password-2", Some("bob@example.org")),
        user("eve", "eve-password-5", None),
    ])
}

/// A gateway on `redis`, without the session cache (every request reads Redis, the worst case
/// for last-use writes), with the given regulation limits.
fn config(upstream: SocketAddr, redis: &Redis, user_failures: u64, ip_failures: u64) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\nworker_threads = 1\n\
         password_hash_concurrency = 2\n\n[upstream]\nurl = \"http://{upstream}\"\ntimeout = \"2s\"\n\n\
         [session]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"1s\"\ncache_ttl = \"0s\"\n\n\
         [directory.local]\nusers_file = \"users.toml\"\n\n\
         [regulation]\nuser_failures = {user_failures}\nip_failures = {ip_failures}\n",
        redis.url()
    )
}

fn authgate(args: &[&str], config: &GatewayFiles) -> (i32, String, String) {
    support::totp::run_cli(args, &config.config_path)
}

async fn login_as(base: &str, user: &str, password: &str, agent: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/api/v1/login"))
        .header("user-agent", agent)
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn me(gw: &GatewayProcess, id: &str, token: &str) -> u16 {
    status_as(reqwest::Method::GET, &gw.url("/api/v1/me"), id, token).await
}

/// The listing's row for a token, split on its two-space column gaps.
fn row<'a>(listing: &'a str, token: &str) -> Vec<&'a str> {
    let id = authgate::session::Token::from_client(token).hash().id();
    let line = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{listing}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn parse_utc(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not a UTC time: {e}"))
}

const BLOCKED_USER: &str = r#"{"success":false,"error":"error-login-blocked-for-user","status":"error","details":{"function":"Accounts.validateLoginAttempt"},"message":"Login has been temporarily blocked For User"}"#;
const BLOCKED_IP: &str = r#"{"success":false,"error":"error-login-blocked-for-ip","status":"error","details":{"function":"Accounts.validateLoginAttempt"},"message":"Login has been temporarily blocked For IP"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn sessions_list_shows_creation_last_use_client_ip_and_user_agent() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let files = write_files(&config(up.addr, &redis, 10, 1000), &users());
    let gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    let before = SystemTime::now() - Duration::from_secs(1);
    let (status, body) = login_as(&base, "bob", "bob-password-2", BROWSER).await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["userId"].as_str().unwrap().to_string();
    let used = body["data"]["authToken"].as_str().unwrap().to_string();
    let (status, body) = login_as(&base, "bob", "bob-password-2", MOBILE).await;
    assert_eq!(status, 200, "{body}");
    let idle = body["data"]["authToken"].as_str().unwrap().to_string();
    assert_eq!(me(&gw, &id, &used).await, 200);
    let after = SystemTime::now() + Duration::from_secs(1);

    let (code, out, err) = authgate(&["sessions", "list", "bob"], &files);
    assert_eq!(code, 0, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TOKEN-ID",
            "CREATED",
            "LAST-USED",
            "EXPIRES",
            "KIND",
            "CLIENT-IP",
            "USER-AGENT"
        ]
    );
    let used_row = row(&out, &used);
    assert_eq!(used_row.len(), 7, "{out}");
    let created = parse_utc(used_row[1]);
    assert!(before <= created && created <= after, "{out}");
    let last_used = parse_utc(used_row[2]);
    assert!(created <= last_used && last_used <= after, "{out}");
    parse_utc(used_row[3]);
    assert_eq!(&used_row[4..], ["session", "127.0.0.1", BROWSER], "{out}");
    let idle_row = row(&out, &idle);
    assert_eq!(idle_row[2], "-", "never used since login: {out}");
    assert_eq!(&idle_row[4..], ["session", "127.0.0.1", MOBILE], "{out}");
    assert!(out.contains("2 live session(s) of bob"), "{out}");
    assert!(
        !out.contains(&used) && !out.contains(&idle),
        "a token was printed"
    );

    // Last use is recorded at most once a minute: a burst of requests, each reading the session
    // from Redis (no cache), writes nothing more.
    let writes = redis.calls("hset");
    assert_eq!(writes, 1, "one last-use record so far");
    for _ in 0..20 {
        assert_eq!(me(&gw, &id, &used).await, 200);
    }
    assert_eq!(redis.calls("hset"), writes, "a Redis write per request");
    assert!(redis.calls("get") >= 20, "the requests did read Redis");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_of_a_user_no_directory_knows_are_an_error_not_an_empty_list() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let files = write_files(&config(up.addr, &redis, 10, 1000), &users());
    let gw = GatewayProcess::spawn(&files.config_path);
    let (id, _) = login(&gw.url(""), "bob", "bob-password-2").await;

    for args in [
        &["sessions", "list", "bobb"][..],
        &["sessions", "revoke", "bobb", "--all"],
        &["sessions", "revoke", "bobb", "abcdefgh"],
    ] {
        let (code, out, err) = authgate(args, &files);
        assert_eq!(code, 64, "{args:?}: {out}{err}");
        assert!(err.contains("unknown user `bobb`"), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // A user the users file knows, with no sessions, is an empty list; by email and id too.
    let (code, out, err) = authgate(&["sessions", "list", "eve"], &files);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("eve (id ") && out.contains("has no live sessions"),
        "{out}"
    );
    for name in ["BOB@example.org", id.as_str()] {
        let (code, out, err) = authgate(&["sessions", "list", name], &files);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("1 live session(s) of bob"), "{name}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_clear_user_lets_a_user_blocked_by_wrong_passwords_log_in() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let files = write_files(&config(up.addr, &redis, 3, 1000), &users());
    let gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    let (code, out, err) = authgate(&["blocks", "list"], &files);
    assert_eq!(
        (code, out.trim()),
        (0, "No failed logins on record: nothing is blocked."),
        "{err}"
    );

    for _ in 0..3 {
        let (status, _) = login_as(&base, "bob", "wrong-password", BROWSER).await;
        assert_eq!(status, 401);
    }
    let (status, body) = login_as(&base, "bob", "bob-password-2", BROWSER).await;
    assert_eq!((status, body.to_string().as_str()), (401, BLOCKED_USER));

    let (code, out, err) = authgate(&["blocks", "list"], &files);
    assert_eq!(code, 0, "{err}");
    let login_line = out
        .lines()
        .find(|l| l.starts_with("login ") && l.contains(" bob "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        login_line.contains("3/3") && login_line.contains("blocked until 20"),
        "{out}"
    );
    let until = login_line.rsplit(' ').next().unwrap();
    let lifts_in = parse_utc(until).duration_since(SystemTime::now()).unwrap();
    assert!(
        lifts_in > Duration::from_secs(250),
        "the default 5m window: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("user-id") && l.contains("blocked until")),
        "{out}"
    );
    let ip_line = out.lines().find(|l| l.starts_with("client-ip")).unwrap();
    assert!(
        ip_line.contains("127.0.0.1") && ip_line.contains("3/1000 "),
        "{out}"
    );
    assert!(ip_line.ends_with("not blocked"), "{out}");
    let (_, only_blocked, _) = authgate(&["blocks", "list", "--blocked"], &files);
    assert!(!only_blocked.contains("client-ip"), "{only_blocked}");

    // A name nobody has and nobody tried is a typo, not a success.
    let (code, _, err) = authgate(&["blocks", "clear", "--user", "bobb"], &files);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("unknown user `bobb`"), "{err}");
    let (status, body) = login_as(&base, "bob", "bob-password-2", BROWSER).await;
    assert_eq!((status, body.to_string().as_str()), (401, BLOCKED_USER));

    // Cleared by email: the same user, so the login name and user id counters both go.
    let (code, out, err) = authgate(&["blocks", "clear", "--user", "bob@example.org"], &files);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Cleared login bob: 3 failed login(s) forgotten (was blocked)"),
        "{out}"
    );
    assert!(out.contains("Cleared user-id "), "{out}");
    assert!(!out.contains("client-ip"), "the IP keeps its count: {out}");
    let (status, body) = login_as(&base, "bob", "bob-password-2", BROWSER).await;
    assert_eq!(status, 200, "{body}");
    let (_, out, _) = authgate(&["blocks", "list", "--blocked"], &files);
    assert_eq!(out.trim(), "Nothing is blocked.");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_clear_ip_lets_a_blocked_client_address_log_in_again() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let files = write_files(&config(up.addr, &redis, 100, 2), &users());
    let gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    for who in ["bob", "eve"] {
        let (status, _) = login_as(&base, who, "wrong-password", BROWSER).await;
        assert_eq!(status, 401);
    }
    let (status, body) = login_as(&base, "eve", "eve-password-5", BROWSER).await;
    assert_eq!((status, body.to_string().as_str()), (401, BLOCKED_IP));

    let (code, out, err) = authgate(&["blocks", "list", "--blocked"], &files);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "header, the IP, the summary: {out}");
    assert!(
        lines[1].starts_with("client-ip") && lines[1].contains("127.0.0.1"),
        "{out}"
    );
    assert!(
        lines[1].contains("2/2") && lines[1].contains("blocked until"),
        "{out}"
    );

    let (code, out, err) = authgate(&["blocks", "clear", "--ip", "127.0.0.1"], &files);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Cleared client-ip 127.0.0.1: 2 failed login(s) forgotten"),
        "{out}"
    );
    let (status, body) = login_as(&base, "eve", "eve-password-5", BROWSER).await;
    assert_eq!(status, 200, "{body}");

    let (code, _, err) = authgate(&["blocks", "clear", "--ip", "not-an-ip"], &files);
    assert_eq!(code, 64, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_with_the_memory_store_say_they_cannot_be_reached() {
    let up = RecordingUpstream::start().await;
    let files = write_files(&config_text(up.addr, None, ""), &users());
    for args in [
        &["blocks", "list"][..],
        &["blocks", "clear", "--user", "bob"],
        &["blocks", "clear", "--all"],
    ] {
        let (code, out, err) = authgate(args, &files);
        assert_eq!(code, 64, "{args:?}: {out}{err}");
        assert!(
            err.contains("\"memory\"") && err.contains("inside the running gateway process"),
            "{args:?}: {err}"
        );
    }
}

/// An LDAP user is found through the directory for both commands; a name it does not know is
/// an error that says where it looked.
#[tokio::test(flavor = "multi_thread")]
async fn ldap_users_are_listed_and_unblocked_through_the_directory() {
    let slapd = support::slapd::Slapd::start();
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let extra = format!(
        "{}\n[regulation]\nuser_failures = 2\nip_failures = 1000\n",
        slapd.directory_toml("")
    );
    let files = write_files(
        &config_text(up.addr, Some(&redis.url()), &extra),
        &users_toml(&standard_users()),
    );
    let gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    let (status, body) = login_as(&base, "erin", "erin-ldap-pw", BROWSER).await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["authToken"].as_str().unwrap().to_string();

    let (code, out, err) = authgate(&["sessions", "list", "erin"], &files);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 live session(s) of erin"), "{out}");
    assert_eq!(
        &row(&out, &token)[4..],
        ["session", "127.0.0.1", BROWSER],
        "{out}"
    );
    let (code, out, err) = authgate(&["sessions", "list", "eriin"], &files);
    assert_eq!(code, 64, "{out}{err}");
    assert!(
        err.contains("unknown user `eriin`") && err.contains("the LDAP directory"),
        "{err}"
    );

    for _ in 0..2 {
        let (status, _) = login_as(&base, "erin", "wrong-password", BROWSER).await;
        assert_eq!(status, 401);
    }
    let (status, body) = login_as(&base, "erin", "erin-ldap-pw", BROWSER).await;
    assert_eq!((status, body.to_string().as_str()), (401, BLOCKED_USER));
    let (code, out, err) = authgate(&["blocks", "clear", "--user", "erin"], &files);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Cleared login erin: 2 failed login(s)"),
        "{out}"
    );
    assert!(out.contains("Cleared user-id "), "{out}");
    let (status, body) = login_as(&base, "erin", "erin-ldap-pw", BROWSER).await;
    assert_eq!(status, 200, "{body}");
}

/// On a Redis Cluster the counters are spread over the primaries: listed from all of them, and
/// last use is recorded there too.
#[tokio::test(flavor = "multi_thread")]
async fn blocks_and_sessions_work_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(support::redis_topology::Cluster::start)
        .await
        .unwrap();
    let up = RecordingUpstream::start().await;
    let session = format!(
        "[session]\nstore = \"redis\"\nredis_timeout = \"1s\"\ncache_ttl = \"0s\"\n\n\
         [session.redis]\ncluster = {}\n",
        cluster.toml_list()
    );
    let text = config_text(up.addr, None, "")
        .replace("[session]\nstore = \"memory\"\n", &session)
        .replace(
            "[directory.local]",
            "[regulation]\nuser_failures = 2\nip_failures = 1000\n\n[directory.local]",
        );
    let files = write_files(&text, &users());
    let gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    let (status, body) = login_as(&base, "bob", "bob-password-2", MOBILE).await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["userId"].as_str().unwrap().to_string();
    let token = body["data"]["authToken"].as_str().unwrap().to_string();
    assert_eq!(me(&gw, &id, &token).await, 200);
    let (code, out, err) = authgate(&["sessions", "list", "bob"], &files);
    assert_eq!(code, 0, "{err}");
    let r = row(&out, &token);
    parse_utc(r[2]);
    assert_eq!(&r[4..], ["session", "127.0.0.1", MOBILE], "{out}");

    // Several login names, so the counters land in several slots (and on several primaries).
    for name in ["bob", "eve", "mallory", "trent", "peggy", "victor"] {
        for _ in 0..2 {
            let (status, _) = login_as(&base, name, "wrong-password", BROWSER).await;
            assert_eq!(status, 401);
        }
    }
    let (code, out, err) = authgate(&["blocks", "list", "--blocked"], &files);
    assert_eq!(code, 0, "{err}");
    for name in ["bob", "eve", "mallory", "trent", "peggy", "victor"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("login ") && l.contains(&format!(" {name} "))),
            "{name} missing from:\n{out}"
        );
    }
    let (code, out, err) = authgate(&["blocks", "clear", "--all"], &files);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Cleared login mallory"), "{out}");
    let (status, body) = login_as(&base, "bob", "bob-password-2", BROWSER).await;
    assert_eq!(status, 200, "{body}");
    let (_, out, _) = authgate(&["blocks", "list"], &files);
    assert!(!out.contains("blocked until"), "{out}");
}

/// A dead Redis is a runtime failure (exit 1) with the reason, never a crash or an empty answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_redis_is_a_plain_runtime_failure() {
    let mut redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let files = write_files(&config(up.addr, &redis, 3, 1000), &users());
    redis.kill();
    for args in [
        &["blocks", "list"][..],
        &["blocks", "clear", "--ip", "192.0.2.7"],
        &["sessions", "list", "bob"],
    ] {
        let (code, out, err) = authgate(args, &files);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains("session store"), "{args:?}: {err}");
    }
}
