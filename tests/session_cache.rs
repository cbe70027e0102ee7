//! The in-process session cache in front of Redis: hot sessions cost no Redis round trip,
//! revocations from another instance evict at once, and a broken revocation channel sends every
//! lookup back to Redis.

mod support;

use std::time::Duration;

use support::*;

/// Requests until the session is served from memory (the channel needs a moment to come up).
async fn until_cached(redis: &Redis, gw: &Gateway, id: &str, token: &str) {
    for _ in 0..100 {
        let before = redis.calls("get");
        assert_eq!(protected_status(gw, id, token).await, 200);
        if redis.calls("get") == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the session never came from the cache");
}

/// A gateway on `redis` with alice logged in and her session already served from memory.
async fn alice_cached(redis: &Redis) -> (RecordingUpstream, Gateway, String, String) {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    until_cached(redis, &gw, &id, &token).await;
    (up, gw, id, token)
}

/// Two gateways on `redis` with the standard users (the users file's text comes back too).
async fn two_instances(redis: &Redis) -> (RecordingUpstream, String, Gateway, Gateway) {
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let config = config_text(up.addr, Some(&redis.url()), "");
    let a = Gateway::start(&config, &users).await;
    let b = Gateway::start(&config, &users).await;
    (up, users, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_sessions_cost_no_redis_round_trip() {
    let redis = Redis::start();
    let (_up, gw, id, token) = alice_cached(&redis).await;
    let before = redis.calls("get");
    for _ in 0..50 {
        assert_eq!(protected_status(&gw, &id, &token).await, 200);
    }
    assert_eq!(redis.calls("get"), before, "a hot session went to Redis");
    // Another user's id with this token is still refused, from memory or not.
    assert_eq!(protected_status(&gw, "someone-else", &token).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_elsewhere_evicts_the_cached_session_at_once() {
    let redis = Redis::start();
    let (_up, _users, a, b) = two_instances(&redis).await;
    let (id, t1) = login(&a.url(""), "bob", "bob-password-2").await;
    let (_, t2) = login(&a.url(""), "bob", "bob-password-2").await;
    until_cached(&redis, &a, &id, &t1).await;
    until_cached(&redis, &a, &id, &t2).await;
    assert_eq!(logout_status(&b, &id, &t1).await, 200);
    refused_within_100ms(&a.url("/api/v1/me"), &id, &t1).await;
    assert_eq!(protected_status(&a, &id, &t2).await, 200);

    // "Log out everywhere" from an operator's store handle reaches the cache too.
    let store =
        authgate::session::RedisStore::new(&redis.url(), "authgate:", Duration::from_secs(1))
            .unwrap();
    use authgate::session::SessionStore;
    assert_eq!(store.revoke_user(&id).await.unwrap(), 1);
    refused_within_100ms(&a.url("/api/v1/me"), &id, &t2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_revocation_channel_sends_lookups_back_to_redis() {
    let redis = Redis::start();
    let (_up, gw, id, token) = alice_cached(&redis).await;
    // Cut the subscriber off, then delete the session behind the gateway's back, as a
    // revocation whose message never arrived.
    let killed = redis.command("CLIENT KILL TYPE pubsub").unwrap();
    assert!(killed.starts_with(":1"), "{killed}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let keys = redis.keys();
    let key = keys
        .lines()
        .find(|k| k.contains(":session:"))
        .unwrap_or_else(|| panic!("no session key in {keys}"));
    assert!(redis
        .command(&format!("DEL {key}"))
        .unwrap()
        .starts_with(":1"));
    assert_eq!(
        protected_status(&gw, &id, &token).await,
        401,
        "a stale cached session was served"
    );
}

/// `users` with `username`'s password hash replaced by one of `password`.
fn with_new_password(users: &str, username: &str, password: &str) -> String {
    let entry = users.find(&format!("username = \"{username}\"")).unwrap();
    let line = users[entry..].find("password_hash = ").unwrap() + entry;
    let end = users[line..].find('\n').unwrap() + line;
    let new_hash = format!("password_hash = \"{}\"", cheap_hash(password));
    format!("{}{}{}", &users[..line], new_hash, &users[end..])
}

#[tokio::test(flavor = "multi_thread")]
async fn new_credentials_in_the_users_file_end_older_sessions_everywhere_once() {
    let redis = Redis::start();
    let (_up, users, a, b) = two_instances(&redis).await;
    let (alice, alice_before) = login(&a.url(""), "alice", "alice-password-1").await;
    let (bob, bob_token) = login(&a.url(""), "bob", "bob-password-2").await;
    let (dave, dave_token) = login(&a.url(""), "dave", "dave-password-4").await;
    for (id, token) in [
        (&alice, &alice_before),
        (&bob, &bob_token),
        (&dave, &dave_token),
    ] {
        until_cached(&redis, &b, id, token).await;
    }

    // The operator gives alice a new password and dave a TOTP secret; bob's entry stays as it
    // is. Instance A reloads first: B, serving from its cache, refuses the older sessions too.
    let changed = with_new_password(&users, "alice", "alice-password-new").replacen(
        "id = \"DaveId12345678901\"",
        "id = \"DaveId12345678901\"\ntotp_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"",
        1,
    );
    a.reload_users(&changed).await;
    refused_within_100ms(&b.url("/api/v1/me"), &alice, &alice_before).await;
    refused_within_100ms(&b.url("/api/v1/me"), &dave, &dave_token).await;
    assert_eq!(protected_status(&b, &bob, &bob_token).await, 200);

    // alice logs in with the new password; B reloading the same change later leaves that alone.
    let (_, alice_after) = login(&a.url(""), "alice", "alice-password-new").await;
    b.reload_users(&changed).await;
    for gw in [&a, &b] {
        assert_eq!(protected_status(gw, &alice, &alice_after).await, 200);
        assert_eq!(protected_status(gw, &bob, &bob_token).await, 200);
    }

    // Another change is a new one: its first reload ends her sessions again.
    b.reload_users(&with_new_password(
        &changed,
        "alice",
        "alice-password-third",
    ))
    .await;
    refused_within_100ms(&a.url("/api/v1/me"), &alice, &alice_after).await;
    assert_eq!(protected_status(&b, &bob, &bob_token).await, 200);
}
