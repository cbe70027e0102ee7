//! POST /api/v1/login and /api/v1/logout against the contract, with the real gateway.

mod support;

use serde_json::{json, Value};
use support::*;

const UNAUTHORIZED: &str =
    r#"{"success":false,"error":"Unauthorized","status":"error","message":"Unauthorized"}"#;
const NOT_LOGGED_IN: &str = r#"{"success":false,"error":"You must be logged in to do this.","status":"error","message":"You must be logged in to do this."}"#;

async fn setup() -> (RecordingUpstream, Gateway) {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    )
    .await;
    (up, gw)
}

async fn post_raw(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = client().post(url).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    let r = rb.send().await.unwrap();
    (
        r.status().as_u16(),
        r.headers().clone(),
        r.text().await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn login_by_username_and_email_returns_contract_body() {
    let (up, gw) = setup().await;
    let base = gw.url("");
    for body in [
        json!({"user": "alice", "password": "alice-password-1"}),
        json!({"user": "ALICE", "password": "alice-password-1"}),
        json!({"username": "Alice", "password": "alice-password-1"}),
        json!({"user": "alice@example.org", "password": "alice-password-1"}),
        json!({"email": "ALICE@EXAMPLE.ORG", "password": "alice-password-1"}),
        json!({"user": {"username": "alice"}, "password": "alice-password-1"}),
        json!({"user": {"email": "alice@example.org"}, "password": "alice-password-1"}),
    ] {
        let r = client()
            .post(gw.url("/api/v1/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{body}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let text = r.text().await.unwrap();
        assert!(
            text.starts_with(r#"{"status":"success","data":{"userId":""#),
            "{text}"
        );
        assert!(text.ends_with(r#","success":true}"#), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let token = v["data"]["authToken"].as_str().unwrap();
        assert_eq!(token.len(), 43);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let id = v["data"]["userId"].as_str().unwrap();
        assert_eq!(id.len(), 17);
        let me = &v["data"]["me"];
        assert_eq!(me["_id"], id);
        assert_eq!(me["username"], "alice");
        assert_eq!(me["name"], "alice Name");
        assert_eq!(
            me["emails"],
            json!([{"address": "Alice@Example.org", "verified": true}])
        );
        assert_eq!(me["email"], "Alice@Example.org");
        assert_eq!(me["roles"], json!(["user"]));
        assert_eq!(me["active"], true);
        assert_eq!(me["status"], "online");
        assert_eq!(me["utcOffset"], 0);
        assert_eq!(me["settings"], json!({"profile": {}, "preferences": {}}));
        assert_eq!(me["avatarUrl"], format!("{base}/avatar/alice"));
        assert!(me["services"].get("password").is_some());
        let keys: Vec<&String> = me.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "_id",
                "username",
                "name",
                "emails",
                "status",
                "active",
                "roles",
                "utcOffset",
                "email",
                "settings",
                "avatarUrl",
                "isOAuthUser",
                "services"
            ]
        );
    }
    // Form-urlencoded, as older SDKs send it.
    let (status, _, text) = post_raw(
        &gw.url("/api/v1/login"),
        Some("application/x-www-form-urlencoded"),
        "user=bob&password=bob-password-2",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Ids are stable across logins; roles and explicit ids come from the users file.
    let (id1, t1) = login(&base, "alice", "alice-password-1").await;
    let (id2, t2) = login(&base, "alice", "alice-password-1").await;
    assert_eq!(id1, id2);
    assert_ne!(t1, t2);
    let (_, v) = login_json(
        &base,
        json!({"user": "dave", "password": "dave-password-4"}),
    )
    .await;
    assert_eq!(v["data"]["userId"], "DaveId12345678901");
    assert_eq!(v["data"]["me"]["roles"], json!(["user", "admin"]));
    assert!(v["data"]["me"].get("email").is_none());
    assert_eq!(up.count(), 0, "login must never reach the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_credential_failure_gets_the_identical_401() {
    let (up, gw) = setup().await;
    let url = gw.url("/api/v1/login");
    let json_bodies = [
        r#"{"user":"alice","password":"wrong"}"#,
        r#"{"user":"nobody","password":"alice-password-1"}"#,
        r#"{"user":"carol","password":"carol-password-3"}"#,
        r#"{"username":"alice@example.org","password":"alice-password-1"}"#,
        r#"{"user":"alice","password":""}"#,
        r#"{"user":"alice"}"#,
        r#"{"password":"alice-password-1"}"#,
        r#"{}"#,
        r#""#,
        r#"not json at all"#,
        r#"{"user":"alice","password":"alice-password-1""#,
        r#"[1,2,3]"#,
        r#"{"user":"alice","password":12345}"#,
        r#"{"user":["alice"],"password":"alice-password-1"}"#,
        r#"{"user":{"username":"alice"},"password":"alice-password-1","code":"1"}"#,
        r#"{"user":"alice","password":"alice-password-1","admin":true}"#,
        r#"{"resume":"not-a-token"}"#,
        r#"{"resume":12}"#,
        r#"{"user":"alice","password":{"digest":"abc","algorithm":"sha-256"}}"#,
    ];
    for body in json_bodies {
        let (status, headers, text) = post_raw(&url, Some("application/json"), body).await;
        assert_eq!((status, text.as_str()), (401, UNAUTHORIZED), "body: {body}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["cache-control"], "no-store");
    }
    for (ct, body) in [
        (
            Some("application/x-www-form-urlencoded"),
            "user=alice&password=wrong",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "user=alice&user=bob&password=alice-password-1",
        ),
        (Some("application/x-www-form-urlencoded"), "%%%"),
        (
            Some("multipart/form-data; boundary=x"),
            "--x\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nalice\r\n--x--",
        ),
        (
            Some("text/plain"),
            r#"{"user":"alice","password":"alice-password-1"}"#,
        ),
        (None, r#"{"user":"alice","password":"alice-password-1"}"#),
    ] {
        let (status, _, text) = post_raw(&url, ct, body).await;
        assert_eq!(
            (status, text.as_str()),
            (401, UNAUTHORIZED),
            "{ct:?} {body}"
        );
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_login_bodies_get_413_unparsed() {
    let (up, gw) = setup().await;
    let url = gw.url("/api/v1/login");
    let big = format!(
        r#"{{"user":"alice","password":"alice-password-1","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, _, text) = post_raw(&url, Some("application/json"), big.clone()).await;
    assert_eq!(status, 413, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(v["status"], "error");
    // Chunked, with no Content-Length to trust.
    let stream =
        futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let (status, _, _) = post_raw(
        &url,
        Some("application/json"),
        reqwest::Body::wrap_stream(stream),
    )
    .await;
    assert_eq!(status, 413);
    // Just under the limit is parsed (and fails as credentials, not size).
    let fits = format!(
        r#"{{"user":"alice","password":"{}"}}"#,
        "x".repeat(60 * 1024)
    );
    let (status, _, text) = post_raw(&url, Some("application/json"), fits).await;
    assert_eq!((status, text.as_str()), (401, UNAUTHORIZED));
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_returns_the_same_token_while_the_session_lives() {
    let (_up, gw) = setup().await;
    let base = gw.url("");
    let (id, token) = login(&base, "bob", "bob-password-2").await;
    let (status, v) = login_json(&base, json!({"resume": token})).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["authToken"], token);
    assert_eq!(v["data"]["userId"], id);
    assert_eq!(v["data"]["me"]["username"], "bob");
    assert_eq!(logout_status(&gw, &id, &token).await, 200);
    let (status, v) = login_json(&base, json!({"resume": token})).await;
    assert_eq!(status, 401);
    assert_eq!(v.to_string(), UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_the_presented_token_only() {
    let (up, gw) = setup().await;
    let base = gw.url("");
    let (id, t1) = login(&base, "alice", "alice-password-1").await;
    let (_, t2) = login(&base, "alice", "alice-password-1").await;
    let me = |t: String| {
        let id = id.clone();
        let url = gw.url("/api/v1/me");
        async move {
            client()
                .get(url)
                .header("x-auth-token", t)
                .header("x-user-id", id)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(me(t1.clone()).await, 200);
    // POST logout answers the contract's body.
    let r = client()
        .post(gw.url("/api/v1/logout"))
        .header("x-auth-token", &t1)
        .header("x-user-id", &id)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"status":"success","data":{"message":"You've been logged out!"}}"#
    );
    assert_eq!(me(t1.clone()).await, 401);
    assert_eq!(me(t2.clone()).await, 200);
    // GET works too, as Rocket.Chat allows.
    assert_eq!(
        status_as(reqwest::Method::GET, &gw.url("/api/v1/logout"), &id, &t2).await,
        200
    );
    assert_eq!(me(t2.clone()).await, 401);
    // Logging out again, or without credentials, is the generic not-logged-in answer.
    for req in [
        client()
            .post(gw.url("/api/v1/logout"))
            .header("x-auth-token", &t2)
            .header("x-user-id", &id),
        client().post(gw.url("/api/v1/logout")),
        client()
            .post(gw.url("/API/V1/LOGOUT/"))
            .header("x-auth-token", &t1)
            .header("x-user-id", &id),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.text().await.unwrap(), NOT_LOGGED_IN);
    }
    let paths: Vec<String> = up.requests().iter().map(|r| r.target.clone()).collect();
    assert!(
        paths.iter().all(|p| p == "/api/v1/me"),
        "only /me may reach the upstream: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_path_spellings_never_reach_the_upstream() {
    let (up, gw) = setup().await;
    for path in [
        "/api/v1/login",
        "/API/V1/LOGIN",
        "/api/v1/login/",
        "/api/v1/%6cogin",
        "/Api/V1/Login/",
    ] {
        let r = client()
            .post(gw.url(path))
            .json(&json!({"user": "alice", "password": "alice-password-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for path in ["/api/v1/login", "/api/v1/login/"] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 405, "{path}");
    }
    for path in [
        "/api/v1/../v1/login",
        "/api/v1//login",
        "/api/v1%2flogin",
        "/api/v1/login%00",
        "/api/v1/login;a=b",
        "/api/v1\\login",
    ] {
        let raw = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        let answer = raw_request(gw.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hashes_from_other_tools_verify() {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let up = RecordingUpstream::start().await;
    let argon2i = argon2::Argon2::new(
        argon2::Algorithm::Argon2i,
        argon2::Version::V0x13,
        argon2::Params::new(512, 3, 2, None).unwrap(),
    )
    .hash_password(b"i-password", &SaltString::generate(&mut OsRng))
    .unwrap()
    .to_string();
    let bcrypt_2b = bcrypt::hash("b-password", 4).unwrap();
    let bcrypt_2y = format!("$2y${}", &bcrypt::hash("y-password", 5).unwrap()[4..]);
    let bcrypt_2a = format!("$2a${}", &bcrypt::hash("a-password", 4).unwrap()[4..]);
    let users = format!(
        "[[users]]\nusername = \"ivan\"\npassword_hash = \"{argon2i}\"\n\n[[users]]\nusername = \"bert\"\npassword_hash = \"{bcrypt_2b}\"\n\n\
         [[users]]\nusername = \"yana\"\npassword_hash = \"{bcrypt_2y}\"\n\n[[users]]\nusername = \"anna\"\npassword_hash = \"{bcrypt_2a}\"\n"
    );
    let gw = Gateway::start(&config_text(up.addr, None, ""), &users).await;
    let base = gw.url("");
    for (u, p) in [
        ("ivan", "i-password"),
        ("bert", "b-password"),
        ("yana", "y-password"),
        ("anna", "a-password"),
    ] {
        login(&base, u, p).await;
        let (status, _) = login_json(&base, json!({"user": u, "password": format!("{p}x")})).await;
        assert_eq!(status, 401, "{u}");
    }
}
