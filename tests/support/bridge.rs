//! Shared pieces of the Rocket.Chat bridge tests.

use serde_json::{json, Value};

use super::rocketchat::{FakeRocketChat, ADMIN_ID, ADMIN_TOKEN};
use super::*;

pub fn bridge_config(rc: &FakeRocketChat, redis_url: Option<&str>, extra: &str) -> String {
    config_text(rc.addr, redis_url, extra).replace(
        "[upstream]\n",
        &format!("[upstream]\nmode = \"rocketchat\"\nadmin_user_id = \"{ADMIN_ID}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n"),
    )
}

pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

pub fn bridge_users() -> String {
    let mut users = standard_users();
    users.push(TestUser {
        username: "tina",
        password: "tina-password-5",
        email: Some("tina@example.org"),
        extra: "totp_secret = \"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\"",
    });
    users_toml(&users)
}

pub fn totp_code() -> String {
    use totp_rs::{Algorithm, Secret, TOTP};
    let bytes = Secret::Encoded(TOTP_SECRET.into()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new())
        .generate_current()
        .unwrap()
}

pub async fn start() -> (FakeRocketChat, Gateway) {
    let rc = FakeRocketChat::start().await;
    let gw = Gateway::start(&bridge_config(&rc, None, ""), &bridge_users()).await;
    (rc, gw)
}

/// The trusted-headers gateway in front of a backend that takes authgate's socket resumes.
pub async fn trusted_headers() -> (FakeRocketChat, Gateway) {
    let rc = FakeRocketChat::start().await;
    rc.trust_gateway();
    let gw = Gateway::start(&config_text(rc.addr, None, ""), &bridge_users()).await;
    (rc, gw)
}

pub fn assert_never_reached_upstream(rc: &FakeRocketChat, secrets: &[&str]) {
    for seen in rc.seen() {
        for s in secrets {
            assert!(
                !seen.body.contains(s),
                "{s} reached the upstream in {} {}",
                seen.method,
                seen.target
            );
            assert!(
                !seen.target.contains(s),
                "{s} reached the upstream in {}",
                seen.target
            );
            assert!(
                seen.headers.iter().all(|(_, v)| !v.contains(s)),
                "{s} reached the upstream in a header of {}",
                seen.target
            );
        }
    }
}

/// A DDP login over `method.callAnon/login`; the inner frame of the answer.
pub async fn call_anon(base: &str, params: Value) -> Value {
    let frame = json!({"msg": "method", "id": "7", "method": "login", "params": [params]});
    let r = client()
        .post(format!("{base}/api/v1/method.callAnon/login"))
        .json(&json!({"message": frame.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let envelope: Value = r.json().await.unwrap();
    assert_eq!(envelope["success"], true);
    serde_json::from_str(envelope["message"].as_str().unwrap()).unwrap()
}
