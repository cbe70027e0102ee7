//! A Redis restart while an instance is idle costs that instance nothing: its next request,
//! once Redis is back, is answered normally instead of 503.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// Restarts Redis while `gw` is idle and waits until Redis has been back for a moment.
async fn restart_while_idle(redis: &mut Redis) {
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_instance_logs_in_at_once_after_a_redis_restart() {
    let mut redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), ""),
        &users_toml(&standard_users()),
    )
    .await;
    // Only logins so far: the shared connection is open, nothing else is listening.
    login(&gw.url(""), "alice", "alice-password-1").await;
    restart_while_idle(&mut redis).await;
    let (status, body) = login_json(
        &gw.url(""),
        json!({"user": "alice", "password": "alice-password-1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_instance_serves_sessions_at_once_after_a_redis_restart() {
    let mut redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    // A protected request: the revocation subscriber runs too.
    assert_eq!(protected_status(&gw, &id, &token).await, 200);
    restart_while_idle(&mut redis).await;
    // The session died with the (non-persistent) Redis: a clean 401, not a 503.
    assert_eq!(protected_status(&gw, &id, &token).await, 401);
    let (status, body) = login_json(
        &gw.url(""),
        json!({"user": "alice", "password": "alice-password-1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (id, token) = (
        body["data"]["userId"].as_str().unwrap().to_string(),
        body["data"]["authToken"].as_str().unwrap().to_string(),
    );
    assert_eq!(protected_status(&gw, &id, &token).await, 200);
    assert_eq!(up.count(), 2);
}
