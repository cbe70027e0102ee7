//! Regulation that cannot be raced or spelled around: concurrent bursts (one instance, two on
//! one Redis), per IP and per TOTP code; lookalike, e-mail and control-character spellings of a
//! name, against the users file and a real slapd.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::slapd::{self, Slapd, SlapdOptions};
use support::totp::{code, now_step, totp_users, ALICE_SECRET, TOTP_INVALID};
use support::*;

const UNAUTHORIZED: &str =
    r#"{"success":false,"error":"Unauthorized","status":"error","message":"Unauthorized"}"#;
const BLOCKED_USER: &str = r#"{"success":false,"error":"error-login-blocked-for-user","status":"error","details":{"function":"Accounts.validateLoginAttempt"},"message":"Login has been temporarily blocked For User"}"#;
const BLOCKED_IP: &str = r#"{"success":false,"error":"error-login-blocked-for-ip","status":"error","details":{"function":"Accounts.validateLoginAttempt"},"message":"Login has been temporarily blocked For IP"}"#;

const USER_LIMIT: &str =
    "[regulation]\nuser_failures = 3\nuser_block = \"60s\"\nip_failures = 1000\nip_block = \"60s\"\n";

/// `config_text` with a Redis timeout a loaded test machine cannot hit during a burst.
fn burst_config(upstream: std::net::SocketAddr, redis_url: &str, extra: &str) -> String {
    config_text(upstream, Some(redis_url), extra)
        .replace("redis_timeout = \"1s\"", "redis_timeout = \"10s\"")
}

async fn post(base: String, body: Value) -> (u16, String) {
    let r = client()
        .post(format!("{base}/api/v1/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Sends every body at once (round-robin over `bases`) and returns the answers.
async fn burst(bases: &[String], bodies: Vec<Value>) -> Vec<(u16, String)> {
    let tasks: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| tokio::spawn(post(bases[i % bases.len()].clone(), body)))
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

fn count(answers: &[(u16, String)], status: u16, body: &str) -> usize {
    answers
        .iter()
        .filter(|(s, b)| *s == status && b == body)
        .count()
}

/// 29 wrong passwords at once, then the right one while they are still in flight: exactly
/// three are evaluated, the rest (the right one included) are refused as blocked.
async fn burst_is_evaluated_at_most_three_times(bases: &[String]) {
    let wrong: Vec<Value> = (0..29)
        .map(|i| json!({"user": "alice", "password": format!("wrong-{i}")}))
        .collect();
    let late_base = bases[bases.len() - 1].clone();
    let right = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        post(
            late_base,
            json!({"user": "alice", "password": "alice-password-1"}),
        )
        .await
    });
    let answers = burst(bases, wrong).await;
    assert_eq!(count(&answers, 401, UNAUTHORIZED), 3, "{answers:?}");
    assert_eq!(count(&answers, 401, BLOCKED_USER), 26, "{answers:?}");
    assert_eq!(right.await.unwrap(), (401, BLOCKED_USER.into()));
    for base in bases {
        assert_eq!(
            post(
                base.clone(),
                json!({"user": "alice", "password": "alice-password-1"})
            )
            .await,
            (401, BLOCKED_USER.into())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_guesses_gets_no_more_than_the_limit_evaluated_in_memory() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, USER_LIMIT),
        &users_toml(&standard_users()),
    )
    .await;
    burst_is_evaluated_at_most_three_times(&[gw.url("")]).await;
    // Other users keep their own budget.
    let (status, _) = post(
        gw.url(""),
        json!({"user": "bob", "password": "bob-password-2"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_spread_over_two_instances_on_one_redis_gets_no_more_than_the_limit() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let config = burst_config(up.addr, &redis.url(), USER_LIMIT);
    let a = Gateway::start(&config, &users).await;
    let b = Gateway::start(&config, &users).await;
    burst_is_evaluated_at_most_three_times(&[a.url(""), b.url("")]).await;
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_from_one_ip_gets_no_more_than_the_ip_limit_evaluated() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let config = burst_config(
        up.addr,
        &redis.url(),
        "[regulation]\nuser_failures = 100\nip_failures = 4\nip_block = \"60s\"\n",
    );
    let a = Gateway::start(&config, &users).await;
    let b = Gateway::start(&config, &users).await;
    // Every guess names another user: only the IP's budget stands in the way.
    let guesses: Vec<Value> = (0..30)
        .map(|i| json!({"user": format!("nobody{i}"), "password": "guess"}))
        .collect();
    let answers = burst(&[a.url(""), b.url("")], guesses).await;
    assert_eq!(count(&answers, 401, UNAUTHORIZED), 4, "{answers:?}");
    assert_eq!(count(&answers, 401, BLOCKED_IP), 26, "{answers:?}");
    for gw in [&a, &b] {
        assert_eq!(
            post(
                gw.url(""),
                json!({"user": "bob", "password": "bob-password-2"})
            )
            .await,
            (401, BLOCKED_IP.into())
        );
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_totp_codes_gets_no_more_than_the_limit_evaluated() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let config = burst_config(up.addr, &redis.url(), USER_LIMIT);
    let users = totp_users();
    let a = Gateway::start(&config, &users).await;
    let b = Gateway::start(&config, &users).await;
    let right = code(ALICE_SECRET, now_step());
    let wrong: Vec<Value> = (0..30)
        .map(|i| format!("{:06}", (i * 7919 + 13) % 1_000_000))
        .filter(|c| {
            let step = now_step();
            (step - 1..=step + 1).all(|s| *c != code(ALICE_SECRET, s))
        })
        .take(29)
        .map(|c| json!({"user": "alice", "password": "alice-password-1", "code": c}))
        .collect();
    assert_eq!(wrong.len(), 29);
    let answers = burst(&[a.url(""), b.url("")], wrong).await;
    assert_eq!(count(&answers, 401, TOTP_INVALID), 3, "{answers:?}");
    assert_eq!(count(&answers, 401, BLOCKED_USER), 26, "{answers:?}");
    let (status, body) = post(
        b.url(""),
        json!({"user": "alice", "password": "alice-password-1", "code": right}),
    )
    .await;
    assert_eq!((status, body.as_str()), (401, BLOCKED_USER));
    assert!(
        !redis.keys().contains("session"),
        "a session was created: {}",
        redis.keys()
    );
    assert_eq!(up.count(), 0);
}

/// Three wrong passwords under `typed`, then `blocked` fails with each of `spellings`.
async fn block_then_try(base: &str, typed: &str, password: &str, spellings: &[&str]) {
    for i in 0..3 {
        assert_eq!(
            post(
                base.to_string(),
                json!({"user": typed, "password": format!("wrong-{i}")})
            )
            .await,
            (401, UNAUTHORIZED.into()),
            "{typed}"
        );
    }
    for spelling in spellings {
        assert_eq!(
            post(
                base.to_string(),
                json!({"user": spelling, "password": password})
            )
            .await,
            (401, BLOCKED_USER.into()),
            "{spelling:?} after {typed:?} was blocked"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lookalike_and_email_spellings_share_the_budget_in_the_users_file() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, USER_LIMIT),
        &users_toml(&standard_users()),
    )
    .await;
    let base = gw.url("");
    // The caseless form of the fullwidth spelling is the user's name: it logs in when unblocked.
    let (status, body) = post(
        base.clone(),
        json!({"user": "ａｌｉｃｅ", "password": "alice-password-1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    block_then_try(
        &base,
        "alice",
        "alice-password-1",
        &[
            "ａｌｉｃｅ",
            "ALICE",
            "alice@example.org",
            "ALICE@EXAMPLE.ORG",
        ],
    )
    .await;
    // Failures typed as the e-mail address count against the user too.
    block_then_try(
        &base,
        "bob@example.org",
        "bob-password-2",
        &["bob", "ｂｏｂ"],
    )
    .await;
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn lookalike_and_email_spellings_share_the_budget_in_ldap() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(
            up.addr,
            None,
            &format!("{USER_LIMIT}\n{}", s.directory_toml("")),
        ),
        &users_toml(&standard_users()),
    )
    .await;
    let base = gw.url("");
    // slapd itself matches the fullwidth spelling to erin's entry.
    let (status, body) = post(
        base.clone(),
        json!({"user": "ｅｒｉｎ", "password": "erin-ldap-pw"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    block_then_try(
        &base,
        "erin",
        "erin-ldap-pw",
        &["ｅｒｉｎ", "ERIN", "erin@example.org", "ERIN@example.org"],
    )
    .await;
    // Counted by the user slapd resolved, not only by the typed name.
    block_then_try(&base, "ＦＲＡＮＫ", "frank-ldap-pw", &["frank", "Frank"]).await;
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_with_control_characters_are_refused_before_any_directory_is_asked() {
    let mut s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(
            up.addr,
            None,
            &format!("{USER_LIMIT}\n{}", s.directory_toml("")),
        ),
        &users_toml(&standard_users()),
    )
    .await;
    let base = gw.url("");
    for name in [
        "erin\u{0}zzz",
        "erin\u{0}",
        "alice\u{0}",
        "erin\n",
        "er\u{1b}in",
    ] {
        assert_eq!(
            post(
                base.clone(),
                json!({"user": name, "password": "erin-ldap-pw"})
            )
            .await,
            (401, UNAUTHORIZED.into()),
            "{name:?}"
        );
    }
    // With the directory down, a name that would be looked up is a 503; these still are not.
    s.kill();
    let (status, _) = post(
        base.clone(),
        json!({"user": "erin", "password": "erin-ldap-pw"}),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(
        post(
            base.clone(),
            json!({"user": "erin\u{0}zzz", "password": "erin-ldap-pw"})
        )
        .await,
        (401, UNAUTHORIZED.into())
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_under_every_spelling_of_a_name_costs_the_directory_no_more_binds_than_the_limit() {
    let s = Slapd::start_with(SlapdOptions {
        log_operations: true,
        ..Default::default()
    });
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(
            up.addr,
            None,
            &format!("{USER_LIMIT}\n{}", s.directory_toml("")),
        ),
        &users_toml(&standard_users()),
    )
    .await;
    // Two spellings slapd resolves to erin, each with a budget of its own as a typed name:
    // only the budget of the user they resolve to lets passwords through to a bind.
    let spellings = ["erin", "erin@example.org"];
    let guesses: Vec<Value> = (0..30)
        .map(|i| json!({"user": spellings[i % 2], "password": format!("wrong-{i}")}))
        .collect();
    let answers = burst(&[gw.url("")], guesses).await;
    assert_eq!(count(&answers, 401, UNAUTHORIZED), 3, "{answers:?}");
    assert_eq!(count(&answers, 401, BLOCKED_USER), 27, "{answers:?}");
    assert_eq!(s.simple_binds_as(&slapd::user_dn("erin")), 3);
    for spelling in spellings {
        assert_eq!(
            post(
                gw.url(""),
                json!({"user": spelling, "password": "erin-ldap-pw"})
            )
            .await,
            (401, BLOCKED_USER.into()),
            "{spelling}"
        );
    }
    assert_eq!(s.simple_binds_as(&slapd::user_dn("erin")), 3);
    assert_eq!(up.count(), 0);
}
