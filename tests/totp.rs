//! TOTP two-factor against the contract: real Redis, two gateway instances sharing it, and the
//! `authgate totp` CLI changing what running gateways do.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::totp::*;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn missing_wrong_and_misplaced_codes_get_the_contract_bodies_and_no_session() {
    let p = pair().await;
    for gw in [&p.a, &p.b] {
        let (status, body) = post_login(gw, &pw("alice", "alice-password-1"), None).await;
        assert_eq!((status, body.as_str()), (401, TOTP_REQUIRED));
        // An empty code is no code, as in Rocket.Chat.
        let (status, body) =
            post_login(gw, &with_code("alice", "alice-password-1", ""), None).await;
        assert_eq!((status, body.as_str()), (401, TOTP_REQUIRED));
        let wrong = code(BOB_SECRET, now_step());
        let (status, body) =
            post_login(gw, &with_code("alice", "alice-password-1", &wrong), None).await;
        assert_eq!((status, body.as_str()), (401, TOTP_INVALID));
        let (status, body) = post_login(gw, &pw("alice", "alice-password-1"), Some("000000")).await;
        assert_eq!(status, 401);
        assert!(body == TOTP_INVALID || code(ALICE_SECRET, now_step()) == "000000");
    }
    // A wrong password gets the generic 401 whatever the code, and does not use the code up.
    let good = code(ALICE_SECRET, now_step());
    for body in [
        with_code("alice", "wrong-password", &good),
        pw("alice", "wrong-password"),
        with_code("alice", "wrong-password", "12"),
        json!({"totp": {"code": good, "login": {"user": {"username": "alice"}, "password": "nope"}}}),
    ] {
        let (status, text) = post_login(&p.a, &body, None).await;
        assert_eq!((status, text.as_str()), (401, UNAUTHORIZED), "{body}");
    }
    let (status, text) = post_login(&p.b, &pw("alice", "wrong"), Some(&good)).await;
    assert_eq!((status, text.as_str()), (401, UNAUTHORIZED));
    no_session_keys(&p.redis);
    assert!(!p.redis.keys().contains("totp"), "{}", p.redis.keys());
    let (status, text) =
        post_login(&p.b, &with_code("alice", "alice-password-1", &good), None).await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn code_in_body_header_or_nested_shape_logs_in_on_either_instance() {
    let p = pair().await;
    let step = now_step();
    let cases = [
        (
            &p.a,
            with_code("alice", "alice-password-1", &code(ALICE_SECRET, step)),
            None,
        ),
        (
            &p.b,
            pw("bob", "bob-password-2"),
            Some(code(BOB_SECRET, step)),
        ),
        (
            &p.a,
            json!({"totp": {"code": code(DAVE_SECRET, step), "login": {"user": {"username": "dave"}, "password": "dave-password-4"}}}),
            None,
        ),
    ];
    for (gw, body, header) in cases {
        let (status, text) = post_login(gw, &body, header.as_deref()).await;
        assert_eq!(status, 200, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["data"]["me"]["services"]["totp"],
            json!({"enabled": true})
        );
        let (id, token) = session_of(&text);
        // The session lives in Redis: the other instance honours it too.
        assert_eq!(protected_status(&p.a, &id, &token).await, 200);
        assert_eq!(protected_status(&p.b, &id, &token).await, 200);
    }
    // A code given to a user without a second factor is ignored.
    let (status, text) =
        post_login(&p.a, &with_code("erin", "erin-password-5", "123456"), None).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["data"]["me"]["services"].get("totp").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_used_code_is_refused_on_every_instance() {
    let p = pair().await;
    let c = code(ALICE_SECRET, now_step());
    let body = with_code("alice", "alice-password-1", &c);
    let (status, text) = post_login(&p.a, &body, None).await;
    assert_eq!(status, 200, "{text}");
    let session_keys = |redis: &Redis| -> Vec<String> {
        let mut keys: Vec<String> = redis
            .keys()
            .lines()
            .filter(|l| {
                l.contains(":session:")
                    || l.contains(":sessions")
                    || l.starts_with("authgate:token:")
            })
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    };
    let sessions_before = session_keys(&p.redis);
    for gw in [&p.b, &p.a] {
        let (status, text) = post_login(gw, &body, None).await;
        assert_eq!((status, text.as_str()), (401, TOTP_INVALID));
        let (status, text) = post_login(gw, &pw("alice", "alice-password-1"), Some(&c)).await;
        assert_eq!((status, text.as_str()), (401, TOTP_INVALID));
    }
    assert_eq!(
        session_keys(&p.redis),
        sessions_before,
        "a refused code created a session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_step_after_a_newer_one_is_refused() {
    let p = pair().await;
    let step = now_step();
    let newer = with_code("alice", "alice-password-1", &code(ALICE_SECRET, step + 1));
    let (status, text) = post_login(&p.a, &newer, None).await;
    assert_eq!(status, 200, "{text}");
    let (id, _) = session_of(&text);
    for older in [step, step - 1] {
        let c = code(ALICE_SECRET, older);
        if c == code(ALICE_SECRET, step + 1) {
            continue; // one chance in a million: the same digits for two steps
        }
        let (status, text) =
            post_login(&p.b, &with_code("alice", "alice-password-1", &c), None).await;
        assert_eq!((status, text.as_str()), (401, TOTP_INVALID), "step {older}");
    }
    // The record is per user: bob is not affected by alice's newer step.
    let (status, text) = post_login(
        &p.b,
        &with_code("bob", "bob-password-2", &code(BOB_SECRET, step)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // The record outlives every step that could still be accepted.
    let ttl = p
        .redis
        .command(&format!("TTL authgate:{{u:{id}}}:totp"))
        .unwrap();
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl > 4 * 30, "{ttl}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_codes_are_totp_invalid() {
    let p = pair().await;
    let good = code(ALICE_SECRET, now_step());
    let huge = "1".repeat(10 * 1024);
    let malformed = [
        good[..5].to_string(),
        format!("{good}7"),
        "abcdef".to_string(),
        "12345a".to_string(),
        format!(" {good}"),
        format!("{good} "),
        format!("{good}\n"),
        "１２３４５６".to_string(),
        "-12345".to_string(),
        huge.clone(),
    ];
    for bad in &malformed {
        let (status, text) =
            post_login(&p.a, &with_code("alice", "alice-password-1", bad), None).await;
        assert_eq!((status, text.as_str()), (401, TOTP_INVALID), "{bad:?}");
        let nested = json!({"totp": {"code": bad, "login": {"user": {"username": "alice"}, "password": "alice-password-1"}}});
        let (status, text) = post_login(&p.b, &nested, None).await;
        assert_eq!(
            (status, text.as_str()),
            (401, TOTP_INVALID),
            "nested {bad:?}"
        );
    }
    for bad in [&good[..5], "abcdef", huge.as_str()] {
        let (status, text) = post_login(&p.a, &pw("alice", "alice-password-1"), Some(bad)).await;
        assert_eq!(
            (status, text.as_str()),
            (401, TOTP_INVALID),
            "header {}",
            bad.len()
        );
    }
    // Codes as JSON types other than strings and numbers are not codes at all.
    let (status, text) = post_login(
        &p.a,
        &json!({"user": "alice", "password": "alice-password-1", "code": ["123456"]}),
        None,
    )
    .await;
    assert_eq!((status, text.as_str()), (401, TOTP_REQUIRED));
    no_session_keys(&p.redis);
    // None of that used the real code up.
    let (status, text) =
        post_login(&p.a, &with_code("alice", "alice-password-1", &good), None).await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_users_file_secret_wins_over_the_enrollment_store() {
    let p = pair().await;
    let enrolled = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZ";
    std::fs::write(
        &p.secrets_file,
        format!(r#"{{"users":{{"alice":{{"secret":"{enrolled}","enrolled_at":"2025-01-01T00:00:00Z"}},"erin":{{"secret":"{enrolled}","enrolled_at":"2025-01-01T00:00:00Z"}}}}}}"#),
    )
    .unwrap();
    let step = now_step();
    let (status, text) = post_login(
        &p.a,
        &with_code("alice", "alice-password-1", &code(enrolled, step)),
        None,
    )
    .await;
    assert_eq!((status, text.as_str()), (401, TOTP_INVALID));
    let (status, text) = post_login(
        &p.a,
        &with_code("alice", "alice-password-1", &code(ALICE_SECRET, step)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // erin has no users-file secret, so the (hand-written) enrollment applies, by email too.
    let (status, text) = post_login(&p.b, &pw("ERIN@example.org", "erin-password-5"), None).await;
    assert_eq!((status, text.as_str()), (401, TOTP_REQUIRED));
    let (status, text) = post_login(
        &p.b,
        &with_code("Erin", "erin-password-5", &code(enrolled, step)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_store_failure_during_the_code_check_fails_closed() {
    let mut p = pair().await;
    let c = code(ALICE_SECRET, now_step());
    let body = with_code("alice", "alice-password-1", &c);
    p.redis.kill();
    let (status, text) = post_login(&p.a, &body, None).await;
    assert_eq!(status, 503, "{text}");
    p.redis.restart();
    // Nothing was recorded, so the same code works once Redis is back, and only once.
    let mut status = 0;
    for _ in 0..50 {
        (status, _) = post_login(&p.b, &body, None).await;
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let (status, text) = post_login(&p.a, &body, None).await;
    assert_eq!((status, text.as_str()), (401, TOTP_INVALID));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_secrets_and_totp_settings_are_config_errors_naming_the_key() {
    let up = RecordingUpstream::start().await;
    let files = write_files(
        &config_text(up.addr, None, ""),
        &users_toml(&[TestUser {
            username: "alice",
            password: "pw-alice-123",
            email: None,
            extra: "totp_secret = \"JBSWY3DPEHPK3PXP\"",
        }]),
    );
    let (rc, _, err) = run_cli(&["check-config"], &files.config_path);
    assert_eq!(rc, 64, "{err}");
    assert!(
        err.contains("users[0].totp_secret") && err.contains("128"),
        "{err}"
    );

    let files = write_files(
        &config_text(
            up.addr,
            None,
            "[totp]\nissuer = \"a:b\"\ndigits = 9\nperiod = \"7s\"\nalgorithm = \"MD5\"\nskew = 3\ncolour = 1\n",
        ),
        "",
    );
    let (rc, _, err) = run_cli(&["check-config"], &files.config_path);
    assert_eq!(rc, 64, "{err}");
    for key in [
        "totp.issuer",
        "totp.digits",
        "totp.period",
        "totp.algorithm",
        "totp.skew",
        "totp.colour",
    ] {
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }

    let files = write_files(&config_text(up.addr, None, ""), "");
    std::fs::write(files.dir.path().join("totp-secrets.json"), "{\"users\": 5}").unwrap();
    let (rc, _, err) = run_cli(&["check-config"], &files.config_path);
    assert_eq!(rc, 64, "{err}");
    assert!(err.contains("totp.secrets_file"), "{err}");
    let (rc, _, err) = run_cli(&["totp", "enroll", "erin"], &files.config_path);
    assert_eq!(rc, 64, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_codes_count_as_failed_logins() {
    let up = RecordingUpstream::start().await;
    let cfg = config_text(
        up.addr,
        None,
        "[regulation]\nuser_failures = 2\nuser_block = \"60s\"\n",
    );
    let gw = Gateway::start(&cfg, &totp_users()).await;
    let wrong = if code(ALICE_SECRET, now_step()) == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..2 {
        let (status, text) =
            post_login(&gw, &with_code("alice", "alice-password-1", wrong), None).await;
        assert_eq!((status, text.as_str()), (401, TOTP_INVALID));
    }
    // Blocked now, even with the right password and the right code.
    let (status, text) = post_login(
        &gw,
        &with_code("alice", "alice-password-1", &code(ALICE_SECRET, now_step())),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(text.contains("error-login-blocked-for-user"), "{text}");
}
