//! A stock Rocket.Chat behind authgate (`upstream.mode = "rocketchat"`): provisioning, token
//! swap and renewal, the REST login doors, public settings, cookies, migration.

mod support;

use serde_json::{json, Value};
use support::bridge::*;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn first_login_provisions_later_logins_reuse_and_requests_carry_the_rocket_chat_token() {
    let (rc, gw) = start().await;
    let base = gw.url("");
    let (status, v) = login_json(
        &base,
        json!({"user": "dave", "password": "dave-password-4"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let rc_user = rc.user("dave").expect("provisioned");
    assert_eq!(rc_user.roles, ["user", "admin"]);
    assert_eq!(rc_user.email, "dave@authgate.invalid");
    assert_ne!(rc_user.password, "dave-password-4");
    assert_eq!(
        v["data"]["userId"], rc_user.id,
        "clients get the Rocket.Chat user id"
    );
    let token = v["data"]["authToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43);
    assert!(
        !rc.state.lock().unwrap().tokens.contains_key(&token),
        "the client holds authgate's token, not Rocket.Chat's"
    );
    assert_eq!(
        v["data"]["me"]["username"], "dave",
        "me comes from Rocket.Chat"
    );
    // A second login reuses the account.
    login(&base, "dave", "dave-password-4").await;
    assert_eq!(rc.state.lock().unwrap().creates, 1);
    assert_eq!(rc.state.lock().unwrap().updates, 0);
    // Requests go upstream with Rocket.Chat's token for the user.
    assert_eq!(protected_status(&gw, &rc_user.id, &token).await, 200);
    let last = rc.seen().pop().unwrap();
    let rc_token = last.header("x-auth-token").unwrap();
    assert_eq!(
        rc.state.lock().unwrap().tokens.get(&rc_token),
        Some(&rc_user.id)
    );
    assert_eq!(
        last.header("x-user-id").as_deref(),
        Some(rc_user.id.as_str())
    );
    // Changes in the directory reach Rocket.Chat on the next login.
    drop(gw);
    let users = bridge_users().replace("name = \"dave Name\"", "name = \"David\"");
    let gw = Gateway::start(&bridge_config(&rc, None, ""), &users).await;
    login(&gw.url(""), "dave", "dave-password-4").await;
    assert_eq!(rc.user("dave").unwrap().name, "David");
    assert_eq!(rc.state.lock().unwrap().creates, 1);
    assert_never_reached_upstream(&rc, &["dave-password-4", &token]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_upstream_token_is_renewed_once_transparently() {
    let (rc, gw) = start().await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    rc.expire_all_tokens();
    let grants = rc.state.lock().unwrap().token_grants;
    let rooms = gw.url("/api/v1/rooms.get");
    assert_eq!(
        status_as(reqwest::Method::GET, &rooms, &id, &token).await,
        200
    );
    assert_eq!(rc.state.lock().unwrap().token_grants, grants + 1);
    // Later requests use the renewed token without another renewal.
    assert_eq!(
        status_as(reqwest::Method::GET, &rooms, &id, &token).await,
        200
    );
    assert_eq!(rc.state.lock().unwrap().token_grants, grants + 1);
    // A POST is not replayed: its 401 reaches the client.
    rc.expire_all_tokens();
    let r = client()
        .post(gw.url("/api/v1/chat.postMessage"))
        .header("x-auth-token", &token)
        .header("x-user-id", &id)
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A resume login renews too.
    let (status, v) = login_json(&gw.url(""), json!({"resume": token})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["authToken"], token);
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_logins_of_every_shape_and_their_errors() {
    let (rc, gw) = start().await;
    let base = gw.url("");
    for body in [
        json!({"ldap": true, "username": "bob", "ldapPass": "bob-password-2", "ldapOptions": {}}),
        json!({"username": "bob", "password": "bob-password-2"}),
        json!({"totp": {"code": totp_code(), "login": {"user": {"username": "tina"}, "password": "tina-password-5"}}}),
    ] {
        let (status, v) = login_json(&base, body.clone()).await;
        assert_eq!(status, 200, "{body}: {v}");
    }
    let (status, v) = login_json(
        &base,
        json!({"user": "tina", "password": "tina-password-5"}),
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (401, Some("totp-required")));
    let (status, v) = login_json(&base, json!({"user": "bob", "password": "wrong"})).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("Unauthorized")));
    assert_never_reached_upstream(&rc, &["bob-password-2", "tina-password-5", "wrong"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn method_call_logins_answer_like_rocket_chat() {
    let (rc, gw) = start().await;
    let base = gw.url("");
    let frame = call_anon(&base, json!({"ldap": true, "username": "alice", "ldapPass": "alice-password-1", "ldapOptions": {}})).await;
    assert_eq!(frame["msg"], "result");
    assert_eq!(frame["id"], "7");
    let result = &frame["result"];
    assert_eq!(
        result["type"], "resume",
        "continued upstream as a resume: {frame}"
    );
    assert!(result["tokenExpires"]["$date"].is_u64());
    let token = result["token"].as_str().unwrap();
    assert_eq!(token.len(), 43);
    let uid = result["id"].as_str().unwrap();
    assert_eq!(rc.user("alice").unwrap().id, uid);
    // The token works for REST calls through authgate.
    assert_eq!(protected_status(&gw, uid, token).await, 200);
    // Errors come back inside the frame, with HTTP 200.
    let bad = call_anon(
        &base,
        json!({"ldap": true, "username": "alice", "ldapPass": "nope", "ldapOptions": {}}),
    )
    .await;
    assert_eq!(bad["error"]["error"], 401);
    let required = call_anon(
        &base,
        json!({"ldap": true, "username": "tina", "ldapPass": "tina-password-5", "ldapOptions": {}}),
    )
    .await;
    assert_eq!(required["error"]["error"], "totp-required");
    assert_eq!(
        required["error"]["details"],
        json!({"method": "totp", "codeGenerated": false, "availableMethods": ["totp"]})
    );
    let invalid = call_anon(&base, json!({"totp": {"code": "000000", "login": {"ldap": true, "username": "tina", "ldapPass": "tina-password-5", "ldapOptions": {}}}})).await;
    assert_eq!(invalid["error"]["error"], "totp-invalid");
    let ok = call_anon(&base, json!({"totp": {"code": totp_code(), "login": {"ldap": true, "username": "tina", "ldapPass": "tina-password-5", "ldapOptions": {}}}})).await;
    assert!(ok["result"]["token"].is_string(), "{ok}");
    // A digest cannot be checked against an argon2 hash of the plain password.
    let digest = authgate::password::sha256_hex("alice-password-1");
    let refused = call_anon(&base, json!({"user": {"username": "alice"}, "password": {"digest": digest, "algorithm": "sha-256"}})).await;
    assert_eq!(refused["error"]["error"], 401);
    let resumed = call_anon(&base, json!({"resume": token})).await;
    assert_eq!(resumed["result"]["token"], token);
    assert_never_reached_upstream(&rc, &["alice-password-1", "tina-password-5", token]);
    // Nothing but resumes with Rocket.Chat tokens reached its login.
    for seen in rc.seen().iter().filter(|s| s.target.contains("login")) {
        assert!(
            seen.body.contains("resume") && seen.body.contains("rc-"),
            "{}",
            seen.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn public_settings_make_clients_send_plain_passwords() {
    let (_rc, gw) = start().await;
    let frame = json!({"msg": "method", "id": "1", "method": "public-settings/get", "params": []});
    let r = client()
        .post(gw.url("/api/v1/method.callAnon/public-settings%3Aget"))
        .json(&json!({"message": frame.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let envelope: Value = r.json().await.unwrap();
    let inner: Value = serde_json::from_str(envelope["message"].as_str().unwrap()).unwrap();
    let settings: Vec<(String, Value)> = inner["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["_id"].as_str().unwrap().to_string(), s["value"].clone()))
        .collect();
    assert!(
        settings.contains(&("LDAP_Enable".into(), json!(true))),
        "{settings:?}"
    );
    assert!(settings.contains(&("Accounts_ShowFormLogin".into(), json!(true))));
    assert!(settings.contains(&("CROWD_Enable".into(), json!(false))));
    assert!(settings.contains(&("Site_Name".into(), json!("Fake"))));
    let v: Value = client()
        .get(gw.url("/api/v1/settings.public?_id=CROWD_Enable,LDAP_Enable"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["settings"],
        json!([{"_id": "CROWD_Enable", "value": false}, {"_id": "LDAP_Enable", "value": true}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_endpoints_never_reach_rocket_chat() {
    let (rc, gw) = start().await;
    for path in [
        "/api/v1/users.register",
        "/api/v1/method.callAnon/registerUser",
        "/api/v1/method.callAnon/resetPassword",
        "/_oauth/github",
    ] {
        let r = client()
            .post(gw.url(path))
            .json(&json!({"message": "{}"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    assert!(rc.seen().is_empty());
    // Anonymous requests reach Rocket.Chat without identity; it decides.
    let r = client()
        .get(gw.url("/api/v1/rooms.get"))
        .header("x_auth_token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let seen = rc.seen().pop().unwrap();
    assert!(seen.header("x-auth-token").is_none() && seen.header("x_auth_token").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn file_and_avatar_cookies_are_validated_and_swapped() {
    let (rc, gw) = start().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let r = client()
        .get(gw.url("/avatar/alice"))
        .header(
            "cookie",
            format!("rc_uid={uid}; rc_token={token}; theme=dark"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = rc.seen().pop().unwrap();
    let cookie = seen.header("cookie").unwrap();
    assert!(
        cookie.contains("theme=dark")
            && cookie.contains(&format!("rc_uid={uid}"))
            && !cookie.contains(&token),
        "{cookie}"
    );
    let r = client()
        .get(gw.url(&format!(
            "/file-upload/abc/file.png?rc_uid={uid}&rc_token={token}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        rc.seen().pop().unwrap().target,
        "/file-upload/abc/file.png",
        "credential parameters are stripped"
    );
    // Stale or forged cookies are stripped: Rocket.Chat sees an anonymous request.
    let r = client()
        .get(gw.url("/avatar/alice"))
        .header("cookie", format!("rc_uid={uid}; rc_token=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(rc.seen().pop().unwrap().header("cookie").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_rocket_chat_users_log_in_with_old_passwords_and_digests() {
    let export = format!(
        "{{\"_id\":\"OldRcUserId000001\",\"username\":\"olga\",\"name\":\"Olga\",\"emails\":[{{\"address\":\"olga@example.org\",\"verified\":true}}],\"roles\":[\"user\"],\"active\":true,\"services\":{{\"password\":{{\"bcrypt\":\"{}\"}}}}}}\n",
        bcrypt::hash(authgate::password::sha256_hex("olga-old-password"), 4).unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let export_path = dir.path().join("users.json");
    std::fs::write(&export_path, export).unwrap();
    let out = std::process::Command::new(authgate_bin())
        .args(["import", "rocketchat"])
        .arg(&export_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users = String::from_utf8(out.stdout).unwrap();
    assert!(users.contains("OldRcUserId000001"), "{users}");
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(&config_text(up.addr, None, ""), &users).await;
    let (id, _) = login(&gw.url(""), "olga", "olga-old-password").await;
    assert_eq!(id, "OldRcUserId000001", "ids are kept");
    let digest = authgate::password::sha256_hex("olga-old-password");
    let frame = call_anon(&gw.url(""), json!({"user": {"username": "olga"}, "password": {"digest": digest, "algorithm": "sha-256"}})).await;
    assert_eq!(frame["result"]["id"], "OldRcUserId000001", "{frame}");
    let (status, _) = login_json(&gw.url(""), json!({"user": "olga", "password": "wrong"})).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_method_call_runs_only_the_method_its_url_names() {
    let (rc, gw) = start().await;
    let (uid, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    for (url_method, frame_method) in [
        ("public-settings%3Aget", "login"),
        ("loadHistory", "registerUser"),
        ("loadHistory", "resetPassword"),
        ("sendMessage", "login"),
    ] {
        let frame = json!({"msg": "method", "id": "1", "method": frame_method, "params": [{"user": {"username": "x"}, "password": "y"}]});
        for anon in [true, false] {
            let path = if anon {
                format!("/api/v1/method.callAnon/{url_method}")
            } else {
                format!("/api/v1/method.call/{url_method}")
            };
            let r = client()
                .post(gw.url(&path))
                .header("x-auth-token", &token)
                .header("x-user-id", &uid)
                .json(&json!({"message": frame.to_string()}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{path} carrying {frame_method}");
        }
    }
    for body in [
        json!({"message": "not a frame"}),
        json!({"nomessage": 1}),
        json!("text"),
    ] {
        let r = client()
            .post(gw.url("/api/v1/method.call/loadHistory"))
            .header("x-auth-token", &token)
            .header("x-user-id", &uid)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    assert!(
        rc.seen().iter().all(|s| !s.target.contains("method.call")),
        "nothing reached Rocket.Chat's method endpoints"
    );
    // A matching call goes through, with the session's identity.
    let frame = json!({"msg": "method", "id": "2", "method": "loadHistory", "params": []});
    let r = client()
        .post(gw.url("/api/v1/method.call/loadHistory"))
        .header("x-auth-token", &token)
        .header("x-user-id", &uid)
        .json(&json!({"message": frame.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = rc.seen().pop().unwrap();
    assert_eq!(seen.target, "/api/v1/method.call/loadHistory");
    assert!(seen.body.contains("loadHistory"));
}
