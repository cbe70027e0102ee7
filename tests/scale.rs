//! Several instances acting as one: two authgate processes behind nginx as a round-robin load
//! balancer, on one Redis and on a three-master Redis Cluster; a Sentinel failover; the
//! `authgate sessions` operator commands.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::nginx::NginxBalancer;
use support::redis_topology::{Cluster, SentinelSet};
use support::*;
use totp_rs::{Algorithm, Secret, TOTP};

const ALICE_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// alice has TOTP; bob and eve only a password.
fn users() -> String {
    users_toml(&[
        TestUser {
            username: "alice",
            password: "alice-password-1",
            email: None,
            extra: "totp_secret = \"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\"",
        },
        user("bob", "bob-password-2", None),
        user("eve", "eve-password-5", None),
    ])
}

fn config(upstream: SocketAddr, session: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\nworker_threads = 1\n\
         password_hash_concurrency = 2\n\n[upstream]\nurl = \"http://{upstream}\"\ntimeout = \"2s\"\n\n\
         {session}\n[directory.local]\nusers_file = \"users.toml\"\n\n\
         [regulation]\nuser_failures = 3\nip_failures = 1000\n"
    )
}

fn single_redis(url: &str) -> String {
    format!("[session]\nstore = \"redis\"\nredis_url = \"{url}\"\nredis_timeout = \"1s\"\n")
}

fn cluster_redis(cluster: &Cluster) -> String {
    format!(
        "[session]\nstore = \"redis\"\nredis_timeout = \"1s\"\n\n[session.redis]\ncluster = {}\n",
        cluster.toml_list()
    )
}

/// Two gateway processes with the same config and users, and nginx balancing between them.
struct Fleet {
    a: GatewayProcess,
    b: GatewayProcess,
    lb: NginxBalancer,
    up: RecordingUpstream,
    _files: Vec<GatewayFiles>,
}

async fn fleet(session: impl Fn(SocketAddr) -> String) -> Fleet {
    let up = RecordingUpstream::start().await;
    let text = config(up.addr, &session(up.addr));
    let fa = write_files(&text, &users());
    let fb = write_files(&text, &users());
    let a = GatewayProcess::spawn(&fa.config_path);
    let b = GatewayProcess::spawn(&fb.config_path);
    let lb = NginxBalancer::start(&[a.addr, b.addr]);
    Fleet {
        a,
        b,
        lb,
        up,
        _files: vec![fa, fb],
    }
}

async fn login_at(base: &str, body: Value) -> (u16, Value) {
    login_json(base, body).await
}

fn session_of(body: &Value) -> (String, String) {
    (
        body["data"]["userId"].as_str().unwrap().to_string(),
        body["data"]["authToken"].as_str().unwrap().to_string(),
    )
}

async fn me(url: String, id: &str, token: &str) -> u16 {
    status_as(reqwest::Method::GET, &url, id, token).await
}

async fn logout(url: String, id: &str, token: &str) -> u16 {
    status_as(reqwest::Method::POST, &url, id, token).await
}

fn totp_code(step: u64) -> String {
    let bytes = Secret::Encoded(ALICE_SECRET.into()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new()).generate(step * 30)
}

/// What makes two instances one: shared sessions, logouts honoured by the other at once,
/// shared regulation counters and TOTP replay protection.
async fn behaves_as_one(f: &Fleet) {
    let (a, b, lb) = (f.a.url(""), f.b.url(""), f.lb.url(""));
    // Issued by one, accepted by the other, and by both through the balancer.
    let (status, body) = login_at(&a, json!({"user": "bob", "password": "bob-password-2"})).await;
    assert_eq!(status, 200, "{body}");
    let (id, token) = session_of(&body);
    assert_eq!(me(format!("{b}/api/v1/me"), &id, &token).await, 200);
    for _ in 0..4 {
        assert_eq!(me(format!("{lb}/api/v1/me"), &id, &token).await, 200);
    }
    let (status, body) = login_at(&lb, json!({"user": "bob", "password": "bob-password-2"})).await;
    assert_eq!(status, 200, "{body}");
    let (_, token2) = session_of(&body);
    assert_eq!(me(format!("{a}/api/v1/me"), &id, &token2).await, 200);

    // Logout on one is refused by the other at once, though the other has the session cached.
    for _ in 0..3 {
        assert_eq!(me(format!("{b}/api/v1/me"), &id, &token).await, 200);
    }
    assert_eq!(logout(format!("{a}/api/v1/logout"), &id, &token).await, 200);
    refused_within_100ms(&format!("{b}/api/v1/me"), &id, &token).await;
    for _ in 0..4 {
        assert_eq!(me(format!("{lb}/api/v1/me"), &id, &token).await, 401);
    }
    assert_eq!(me(format!("{lb}/api/v1/me"), &id, &token2).await, 200);

    // Failed logins counted on either instance block the name on both (user_failures = 3).
    for gw in [&a, &b, &a] {
        let (status, _) = login_at(gw, json!({"user": "eve", "password": "wrong"})).await;
        assert_eq!(status, 401);
    }
    for gw in [&b, &a] {
        let (status, body) =
            login_at(gw, json!({"user": "eve", "password": "eve-password-5"})).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"], "error-login-blocked-for-user", "{body}");
    }

    // A TOTP code used on one instance is refused on the other.
    let step = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30;
    let code = totp_code(step);
    let body = json!({"user": "alice", "password": "alice-password-1", "code": code});
    let (status, _) = login_at(&a, body.clone()).await;
    assert_eq!(status, 200);
    let (status, refused) = login_at(&b, body).await;
    assert_eq!(status, 401);
    assert_eq!(refused["error"], "totp-invalid", "{refused}");
    assert!(f.up.count() >= 8, "requests reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_behind_nginx_on_one_redis_behave_as_one() {
    let redis = Redis::start();
    let url = redis.url();
    let f = fleet(|_| single_redis(&url)).await;
    behaves_as_one(&f).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_on_a_redis_cluster_behave_as_one_and_survive_a_node_restart() {
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let session = cluster_redis(&cluster);
    let f = fleet(|_| session.clone()).await;
    behaves_as_one(&f).await;

    // A node restart (its data is gone: no persistence in this test): the gateways carry on
    // without a restart of their own.
    let node = &mut cluster.nodes[1];
    node.kill();
    std::thread::sleep(Duration::from_millis(300));
    node.restart();
    cluster.wait_ok();
    let deadline = Instant::now() + Duration::from_secs(15);
    for gw in [f.a.url(""), f.b.url("")] {
        loop {
            let (status, body) =
                login_at(&gw, json!({"user": "bob", "password": "bob-password-2"})).await;
            if status == 200 {
                let (id, token) = session_of(&body);
                assert_eq!(
                    me(format!("{}/api/v1/me", f.lb.url("")), &id, &token).await,
                    200
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "logins did not recover after the node restart: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_failover_keeps_logins_working_and_revocations_revoked() {
    let mut set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .unwrap();
    let up = RecordingUpstream::start().await;
    let session = format!(
        "[session]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"1s\"\n",
        set.url()
    );
    let gw = Gateway::start(&config(up.addr, &session), &users()).await;
    let base = gw.url("");
    let (id, kept) = login(&base, "bob", "bob-password-2").await;
    let (_, revoked) = login(&base, "bob", "bob-password-2").await;
    assert_eq!(me(gw.url("/api/v1/me"), &id, &kept).await, 200);
    assert_eq!(me(gw.url("/api/v1/me"), &id, &revoked).await, 200);
    // The logout returns once the replica holds it (WAIT 1, the Sentinel default).
    assert_eq!(logout(gw.url("/api/v1/logout"), &id, &revoked).await, 200);

    tokio::task::block_in_place(|| set.kill_master_and_fail_over());

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) =
            login_at(&base, json!({"user": "bob", "password": "bob-password-2"})).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new logins did not work after the failover: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        me(gw.url("/api/v1/me"), &id, &revoked).await,
        401,
        "a revoked session came back after the failover"
    );
    assert_eq!(me(gw.url("/api/v1/me"), &id, &kept).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_list_and_revoke_sessions_from_the_command_line() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(&config(up.addr, &single_redis(&redis.url())), &users()).await;
    let cfg = gw.files.config_path.to_str().unwrap().to_string();
    let base = gw.url("");
    let (id, t1) = login(&base, "bob", "bob-password-2").await;
    let (_, t2) = login(&base, "bob", "bob-password-2").await;
    for t in [&t1, &t2] {
        assert_eq!(me(gw.url("/api/v1/me"), &id, t).await, 200);
    }

    let (code, out, err) = run_authgate(&["sessions", "list", "bob", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<String> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 12)
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 2, "{out}");
    assert!(
        !out.contains(&t1) && !out.contains(&t2),
        "a token was printed"
    );
    // A token id is not a credential.
    assert_eq!(me(gw.url("/api/v1/me"), &id, &ids[0]).await, 401);

    let t1_id = authgate::session::Token::from_client(&t1).hash().id();
    let (code, out, err) =
        run_authgate(&["sessions", "revoke", "bob", &t1_id[..8], "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    refused_within_100ms(&gw.url("/api/v1/me"), &id, &t1).await;
    assert_eq!(me(gw.url("/api/v1/me"), &id, &t2).await, 200);

    let (code, _, err) = run_authgate(&["sessions", "revoke", "bob", "zzzzzzzz", "--config", &cfg]);
    assert_eq!(code, 64);
    assert!(err.contains("no live session"), "{err}");

    // By user id too ("log out everywhere").
    let (code, out, err) = run_authgate(&["sessions", "revoke", &id, "--all", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Revoked 1 session"), "{out}");
    refused_within_100ms(&gw.url("/api/v1/me"), &id, &t2).await;
    let (code, out, _) = run_authgate(&["sessions", "list", "bob", "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("no live sessions"), "{out}");

    // Nothing to reach with in-memory sessions: said plainly, exit 64.
    let files = write_files(&config_text(up.addr, None, ""), &users());
    let (code, _, err) = run_authgate(&[
        "sessions",
        "list",
        "bob",
        "--config",
        files.config_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("memory"), "{err}");
}
