//! Directory accounts that expire, are locked out or are disabled (Active Directory's
//! attributes, on a real slapd) lose their sessions at the next resume, as a new bind would fail.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::slapd::{self, Slapd};
use support::*;

const UNAUTHORIZED: &str =
    r#"{"success":false,"error":"Unauthorized","status":"error","message":"Unauthorized"}"#;

async fn post_login(base: &str, body: Value) -> (u16, String) {
    let r = client()
        .post(format!("{base}/api/v1/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Logs in and returns (user id, token).
async fn session(base: &str, user: &str, password: &str) -> (String, String) {
    let (status, body) = post_login(base, json!({"user": user, "password": password})).await;
    assert_eq!(status, 200, "{user}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    (
        v["data"]["userId"].as_str().unwrap().to_string(),
        v["data"]["authToken"].as_str().unwrap().to_string(),
    )
}

/// A Windows FILETIME `offset_secs` from now.
fn filetime(offset_secs: i64) -> String {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    ((unix + offset_secs + 11_644_473_600) * 10_000_000).to_string()
}

fn mark(s: &Slapd, uid: &str, attr: &str, value: &str) {
    s.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: objectClass\nobjectClass: adAccount\n-\nreplace: {attr}\n{attr}: {value}\n",
        slapd::user_dn(uid)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_locked_out_and_disabled_accounts_lose_their_sessions_on_resume() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, &s.directory_toml("")),
        &users_toml(&standard_users()),
    )
    .await;
    let base = gw.url("");
    let cases = [
        ("user01", "accountExpires", filetime(-3600), false),
        ("user02", "lockoutTime", filetime(-60), false),
        ("user03", "userAccountControl", "514".to_string(), false),
        ("user04", "accountExpires", filetime(86_400), true),
        (
            "user05",
            "accountExpires",
            "9223372036854775807".to_string(),
            true,
        ),
        ("user06", "lockoutTime", "0".to_string(), true),
        ("user07", "userAccountControl", "512".to_string(), true),
    ];
    let mut sessions = Vec::new();
    for (uid, ..) in &cases {
        let (id, token) = session(&base, uid, &format!("pw-{uid}")).await;
        assert_eq!(protected_status(&gw, &id, &token).await, 200);
        sessions.push((id, token));
    }
    for (uid, attr, value, _) in &cases {
        mark(&s, uid, attr, value);
    }
    let ups_before = up.count();
    for ((uid, attr, _, still_usable), (id, token)) in cases.iter().zip(&sessions) {
        let (status, body) = post_login(&base, json!({"resume": token})).await;
        if *still_usable {
            assert_eq!(status, 200, "{uid} ({attr}): {body}");
            assert_eq!(protected_status(&gw, id, token).await, 200, "{uid}");
        } else {
            assert_eq!(
                (status, body.as_str()),
                (401, UNAUTHORIZED),
                "{uid} ({attr})"
            );
            // The session is gone, not merely refused for a resume.
            assert_eq!(protected_status(&gw, id, token).await, 401, "{uid}");
        }
    }
    // Fresh logins of the expired and the disabled account fail even though slapd, which does
    // not enforce AD's attributes, accepts their binds.
    for uid in ["user01", "user03"] {
        assert_eq!(
            post_login(&base, json!({"user": uid, "password": format!("pw-{uid}")})).await,
            (401, UNAUTHORIZED.into()),
            "{uid}"
        );
    }
    // Only the still-usable sessions' protected requests went upstream.
    assert_eq!(up.count() - ups_before, 4);
}
