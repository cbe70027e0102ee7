//! The LDAP directory against a real slapd: search-then-bind, groups, injection, empty
//! passwords, directory order, outages, timeouts, TLS and concurrency.

mod support;

use std::time::{Duration, Instant};

use authgate::config::{Config, ConfigSource};
use authgate::directory::ldap::LdapDirectory;
use authgate::directory::{stable_user_id, AuthOutcome, Directory, Identity};
use authgate::password::Password;
use serde_json::{json, Value};
use support::slapd::{self, Slapd, SlapdOptions};
use support::*;

const UNAUTHORIZED: &str =
    r#"{"success":false,"error":"Unauthorized","status":"error","message":"Unauthorized"}"#;
const LDAP_UNAVAILABLE: &str = r#"{"success":false,"error":"error-service-unavailable","status":"error","message":"The user directory is unavailable; try again shortly."}"#;

/// Logs in and returns (status, raw body).
async fn post_login(base: &str, body: Value) -> (u16, String) {
    let r = client()
        .post(format!("{base}/api/v1/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn login_ok(base: &str, user: &str, password: &str) -> Value {
    let (status, body) = post_login(base, json!({"user": user, "password": password})).await;
    assert_eq!(status, 200, "{user}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn login_status(base: &str, user: &str, password: &str) -> (u16, String) {
    post_login(base, json!({"user": user, "password": password})).await
}

/// A gateway with the standard local users and `ldap_toml` appended after `[directory.local]`.
async fn gateway(up: &RecordingUpstream, ldap_toml: &str) -> Gateway {
    Gateway::start(
        &config_text(up.addr, None, ldap_toml),
        &users_toml(&standard_users()),
    )
    .await
}

fn entry_uuid(s: &Slapd, uid: &str) -> String {
    s.attribute(&slapd::user_dn(uid), "entryUUID")
        .expect("entryUUID")
}

async fn protected_get(gw: &Gateway, id: &str, token: &str) -> u16 {
    client()
        .get(gw.url("/api/v1/channels.list"))
        .header("x-auth-token", token)
        .header("x-user-id", id)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn load(text: &str, base_dir: &std::path::Path) -> Result<Config, authgate::config::ConfigError> {
    Config::load(&ConfigSource {
        name: "test".into(),
        text: text.into(),
        base_dir: base_dir.to_path_buf(),
        embedded: false,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn login_by_uid_and_mail_gets_the_entry_identity_and_group_roles() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = gateway(&up, &s.directory_toml("")).await;
    let base = gw.url("");
    let expected_id = stable_user_id("ldap", &entry_uuid(&s, "erin"));
    for login in ["erin", "ERIN", "erin@example.org", "ERIN@EXAMPLE.ORG"] {
        let v = login_ok(&base, login, "erin-ldap-pw").await;
        let me = &v["data"]["me"];
        assert_eq!(v["data"]["userId"], expected_id.as_str(), "{login}");
        assert_eq!(me["_id"], expected_id.as_str());
        assert_eq!(me["username"], "erin", "the username comes from the entry");
        assert_eq!(me["name"], "Erin Example");
        assert_eq!(
            me["emails"],
            json!([{"address": "Erin@Example.org", "verified": true}])
        );
        assert_eq!(me["roles"], json!(["user", "moderator"]));
    }
    assert_eq!(expected_id.len(), 17);
    let (status, body) = login_status(&base, "erin", "wrong-password").await;
    assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));
    let (status, body) = login_status(&base, "nobody-here", "erin-ldap-pw").await;
    assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));
    // In no mapped group: just `user`; no mail: no `emails`.
    let v = login_ok(&base, "frank", "frank-ldap-pw").await;
    assert_eq!(v["data"]["me"]["roles"], json!(["user"]));
    assert!(v["data"]["me"].get("emails").is_none());
    // Rocket.Chat's LDAP login shape goes to the same directory.
    let (status, body) = post_login(
        &base,
        json!({"ldap": true, "username": "erin", "ldapPass": "erin-ldap-pw", "ldapOptions": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The session works for proxied requests, with the LDAP-derived id.
    let token = v["data"]["authToken"].as_str().unwrap();
    let id = v["data"]["userId"].as_str().unwrap();
    assert_eq!(protected_get(&gw, id, token).await, 200);
    assert_eq!(
        up.requests().last().unwrap().header("x-user-id").as_deref(),
        Some(id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_user_id_is_stable_across_instances_restarts_and_resume() {
    let mut s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let a = gateway(&up, &s.directory_toml("")).await;
    let b = gateway(&up, &s.directory_toml("pool_size = 1")).await;
    let from_b = login_ok(&b.url(""), "erin", "erin-ldap-pw").await;
    let erin_a = login_ok(&a.url(""), "erin", "erin-ldap-pw").await;
    assert_eq!(from_b["data"]["userId"], erin_a["data"]["userId"]);
    let token = erin_a["data"]["authToken"].as_str().unwrap().to_string();
    let (status, body) = post_login(&a.url(""), json!({"resume": token})).await;
    assert_eq!(status, 200, "{body}");
    let resumed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resumed["data"]["userId"], erin_a["data"]["userId"]);
    assert_eq!(resumed["data"]["me"]["roles"], json!(["user", "moderator"]));
    a.stop().await;
    s.kill();
    s.restart();
    let c = gateway(&up, &s.directory_toml("")).await;
    let again = login_ok(&c.url(""), "Erin@example.org", "erin-ldap-pw").await;
    assert_eq!(again["data"]["userId"], erin_a["data"]["userId"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn filter_injection_attempts_get_the_generic_401() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = gateway(&up, &s.directory_toml("")).await;
    let base = gw.url("");
    for login in [
        "*",
        "a*",
        "e*",
        "erin*",
        "*)(uid=*",
        "x)(|(uid=*",
        "erin)(uid=*",
        "*)(|(uid=erin",
        "x)(|(uid=*))(|(uid=*",
        "*@example.org",
        "erin\\2a",
        "erin\0",
    ] {
        for password in ["erin-ldap-pw", "alice-ldap-pw"] {
            let (status, body) = login_status(&base, login, password).await;
            assert_eq!((status, body.as_str()), (401, UNAUTHORIZED), "{login:?}");
        }
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn uids_with_filter_metacharacters_and_quotes_log_in_and_get_their_groups() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = gateway(&up, &s.directory_toml("")).await;
    let base = gw.url("");
    for (uid, password) in [
        (slapd::ODD_UID, "odd-ldap-pw"),
        (slapd::QUOTE_UID, "quote-ldap-pw"),
    ] {
        let v = login_ok(&base, uid, password).await;
        assert_eq!(v["data"]["me"]["username"], uid);
        // The group search put this user's DN (with `*`, `(`, `\`) into `{dn}`, escaped.
        assert_eq!(v["data"]["me"]["roles"], json!(["user", "staff"]), "{uid}");
        let (status, _) = login_status(&base, uid, "odd-ldap-pw-wrong").await;
        assert_eq!(status, 401);
    }
    // `o'brien(test)` followed by a wildcard must not reach o'brien(test)*.
    let (status, _) = login_status(&base, "o'brien*", "odd-ldap-pw").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_passwords_are_refused_although_slapd_allows_unauthenticated_binds() {
    let s = Slapd::start();
    // The server really does accept a DN with an empty password, as an anonymous bind.
    let who = s
        .whoami(&slapd::user_dn("erin"), "")
        .expect("slapd allows bind_anon_dn");
    assert_eq!(who, "anonymous");
    assert!(s.whoami(&slapd::user_dn("erin"), "wrong").is_err());
    let up = RecordingUpstream::start().await;
    let gw = gateway(&up, &s.directory_toml("")).await;
    let base = gw.url("");
    for body in [
        json!({"user": "erin", "password": ""}),
        json!({"ldap": true, "username": "erin", "ldapPass": "", "ldapOptions": {}}),
        json!({"user": "nopass", "password": ""}),
    ] {
        let (status, text) = post_login(&base, body.clone()).await;
        assert_eq!((status, text.as_str()), (401, UNAUTHORIZED), "{body}");
    }
    // A user without a userPassword cannot log in with anything.
    let (status, _) = login_status(&base, "nopass", "anything").await;
    assert_eq!(status, 401);

    // The directory itself refuses too, before any LDAP call: pointed at a closed port it would
    // otherwise answer 503.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ldap.secret"),
        format!("{}\n", slapd::SERVICE_PASSWORD),
    )
    .unwrap();
    let text = |url: &str| {
        format!(
        "[directory.ldap]\nurl = \"{url}\"\nbind_dn = \"{}\"\nbind_password_file = \"ldap.secret\"\nuser_base = \"{}\"\ntimeout = \"2s\"\n",
        slapd::SERVICE_DN, slapd::PEOPLE
    )
    };
    let closed = format!("ldap://127.0.0.1:{}", free_port());
    for url in [s.url(), closed] {
        let config = load(&text(&url), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let ldap = LdapDirectory::new(config.directory.ldap.unwrap()).unwrap();
        let outcome = ldap
            .authenticate(
                &Identity::Username("erin".into()),
                &Password::Plain(String::new()),
            )
            .await
            .unwrap();
        assert!(
            matches!(outcome, AuthOutcome::Rejected),
            "{url}: {outcome:?}"
        );
    }
    // The same directory (password read from a file beside the config) does log erin in.
    let config = load(&text(&s.url()), dir.path()).unwrap();
    let ldap = LdapDirectory::new(config.directory.ldap.unwrap()).unwrap();
    let outcome = ldap
        .authenticate(
            &Identity::Email("erin@example.org".into()),
            &Password::Plain("erin-ldap-pw".into()),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, AuthOutcome::Authenticated(_)),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn whitespace_passwords_are_passed_on_unchanged() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = gateway(&up, &s.directory_toml("")).await;
    let base = gw.url("");
    let v = login_ok(&base, "spacey", "   ").await;
    assert_eq!(v["data"]["me"]["username"], "spacey");
    for wrong in [" ", "  ", "    ", "\t  "] {
        let (status, _) = login_status(&base, "spacey", wrong).await;
        assert_eq!(status, 401, "{wrong:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_directory_that_knows_the_login_decides() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let local_id = stable_user_id("local", "alice");
    let ldap_id = stable_user_id("ldap", &entry_uuid(&s, "alice"));

    // Default order: local, then ldap.
    let gw = gateway(&up, &s.directory_toml("")).await;
    let base = gw.url("");
    let v = login_ok(&base, "alice", "alice-password-1").await;
    assert_eq!(v["data"]["userId"], local_id.as_str());
    let (status, body) = login_status(&base, "alice", "alice-ldap-pw").await;
    assert_eq!(
        (status, body.as_str()),
        (401, UNAUTHORIZED),
        "a wrong local password never falls through"
    );
    login_ok(&base, "erin", "erin-ldap-pw").await;
    login_ok(&base, "bob", "bob-password-2").await;

    // LDAP first.
    let gw = gateway(
        &up,
        &format!(
            "[directory]\norder = [\"ldap\", \"local\"]\n\n{}",
            s.directory_toml("")
        ),
    )
    .await;
    let base = gw.url("");
    let v = login_ok(&base, "alice", "alice-ldap-pw").await;
    assert_eq!(v["data"]["userId"], ldap_id.as_str());
    assert_eq!(
        v["data"]["me"]["roles"],
        json!(["user", "admin", "moderator"])
    );
    let (status, body) = login_status(&base, "alice", "alice-password-1").await;
    assert_eq!(
        (status, body.as_str()),
        (401, UNAUTHORIZED),
        "a wrong LDAP password never falls through"
    );
    let v = login_ok(&base, "bob", "bob-password-2").await;
    assert_eq!(v["data"]["userId"], stable_user_id("local", "bob").as_str());
    // An ambiguous login (two entries share the mail) is refused, and does not fall through.
    let (status, _) = login_status(&base, "twins@example.org", "twin-pw").await;
    assert_eq!(status, 401);
    login_ok(&base, "twin1", "twin-pw").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ldap_outage_is_503_while_sessions_and_local_users_keep_working() {
    let mut s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = gateway(&up, &s.directory_toml("timeout = \"1s\"")).await;
    let base = gw.url("");
    let v = login_ok(&base, "erin", "erin-ldap-pw").await;
    let id = v["data"]["userId"].as_str().unwrap().to_string();
    let token = v["data"]["authToken"].as_str().unwrap().to_string();

    s.kill();
    for body in [
        json!({"user": "erin", "password": "erin-ldap-pw"}),
        json!({"user": "erin", "password": "wrong"}),
        json!({"user": "nobody-anywhere", "password": "x"}),
        json!({"ldap": true, "username": "erin", "ldapPass": "erin-ldap-pw", "ldapOptions": {}}),
        json!({"resume": token}),
    ] {
        let started = Instant::now();
        let (status, text) = post_login(&base, body.clone()).await;
        assert_eq!((status, text.as_str()), (503, LDAP_UNAVAILABLE), "{body}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert_eq!(
        protected_get(&gw, &id, &token).await,
        200,
        "existing sessions keep working"
    );
    login_ok(&base, "bob", "bob-password-2").await;
    let (status, _) = login_status(&base, "bob", "wrong").await;
    assert_eq!(status, 401, "local users are decided locally");

    s.restart();
    let again = login_ok(&base, "erin", "erin-ldap-pw").await;
    assert_eq!(again["data"]["userId"], id.as_str());
    let (status, _) = post_login(&base, json!({"resume": token})).await;
    assert_eq!(status, 200);
    // Pooled connections that died with the server are replaced without a failed login.
    s.kill();
    s.restart();
    login_ok(&base, "erin", "erin-ldap-pw").await;
    login_ok(&base, "frank", "frank-ldap-pw").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_the_server_closed_while_idle_are_replaced() {
    let s = Slapd::start_with(SlapdOptions {
        idle_timeout_secs: Some(1),
        ..Default::default()
    });
    let up = RecordingUpstream::start().await;
    let gw = gateway(&up, &s.directory_toml("pool_size = 2")).await;
    let base = gw.url("");
    login_ok(&base, "erin", "erin-ldap-pw").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    login_ok(&base, "erin", "erin-ldap-pw").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _) = login_status(&base, "erin", "wrong").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_is_503_within_the_timeout_and_never_deadlocks_the_pool() {
    // Accepts TCP connections (the kernel does) and never answers a byte.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ldap://{}", silent.local_addr().unwrap());
    let up = RecordingUpstream::start().await;
    // LDAP first, so the timings measure LDAP and not the local directory's password hashing.
    let toml = format!(
        "[directory]\norder = [\"ldap\", \"local\"]\n\n[directory.ldap]\nurl = \"{url}\"\nbind_dn = \"{}\"\nbind_password = \"x\"\nuser_base = \"{}\"\ntimeout = \"1s\"\npool_size = 4\n",
        slapd::SERVICE_DN, slapd::PEOPLE
    );
    let gw = gateway(&up, &toml).await;
    let base = gw.url("");
    let started = Instant::now();
    let (status, text) = login_status(&base, "erin", "erin-ldap-pw").await;
    assert_eq!((status, text.as_str()), (503, LDAP_UNAVAILABLE));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // Four at once run in parallel (one timeout, not four); then more than the pool holds.
    for n in [4, 10] {
        let started = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let base = base.clone();
                tokio::spawn(async move {
                    login_status(&base, &format!("user{:02}", i + 1), "pw").await
                })
            })
            .collect();
        for t in tasks {
            let (status, text) = t.await.unwrap();
            assert_eq!((status, text.as_str()), (503, LDAP_UNAVAILABLE));
        }
        let limit = if n == 4 { 1900 } else { 4500 };
        assert!(
            started.elapsed() < Duration::from_millis(limit),
            "{n}: {:?}",
            started.elapsed()
        );
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_or_service_bind_is_503() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let closed = format!(
        "[directory.ldap]\nurl = \"ldap://127.0.0.1:{}\"\nuser_base = \"{}\"\n",
        free_port(),
        slapd::PEOPLE
    );
    let wrong_service_password = s
        .directory_toml("")
        .replace(slapd::SERVICE_PASSWORD, "not-the-service-password");
    for toml in [closed, wrong_service_password] {
        let gw = gateway(&up, &toml).await;
        let (status, text) = login_status(&gw.url(""), "erin", "erin-ldap-pw").await;
        assert_eq!((status, text.as_str()), (503, LDAP_UNAVAILABLE), "{toml}");
        login_ok(&gw.url(""), "bob", "bob-password-2").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_concurrent_logins_share_a_pool_of_four() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    // LDAP first: the local directory would spend a password hash on each unknown login.
    // The IP budget is raised: attempts in flight count against it, and all come from one IP.
    let gw = gateway(
        &up,
        &format!(
            "[regulation]\nip_failures = 1000\n\n[directory]\norder = [\"ldap\", \"local\"]\n\n{}",
            s.directory_toml("pool_size = 4")
        ),
    )
    .await;
    let base = gw.url("");
    for round in ["right", "wrong", "right"] {
        let tasks: Vec<_> = (1..=slapd::NUMBERED_USERS)
            .map(|i| {
                let base = base.clone();
                let password = if round == "right" {
                    format!("pw-user{i:02}")
                } else {
                    "nope".into()
                };
                tokio::spawn(
                    async move { login_status(&base, &format!("user{i:02}"), &password).await },
                )
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            if round == "right" {
                assert_eq!(status, 200, "{body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                ids.insert(v["data"]["userId"].as_str().unwrap().to_string());
            } else {
                assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));
            }
        }
        if round == "right" {
            assert_eq!(ids.len(), slapd::NUMBERED_USERS);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_ends_when_the_entry_is_deleted() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let gw = gateway(&up, &s.directory_toml("")).await;
    let base = gw.url("");
    let v = login_ok(&base, "frank", "frank-ldap-pw").await;
    let token = v["data"]["authToken"].as_str().unwrap().to_string();
    let (status, _) = post_login(&base, json!({"resume": token})).await;
    assert_eq!(status, 200);
    s.delete(&slapd::user_dn("frank"));
    let (status, body) = post_login(&base, json!({"resume": token})).await;
    assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));
}

#[tokio::test(flavor = "multi_thread")]
async fn attributes_presets_and_the_totp_secret_come_from_config() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let toml = s.directory_toml("preset = \"openldap\"")
        + "\n[directory.ldap.attributes]\nname = \"displayName\"\nid = \"uid\"\ntotp_secret = \"description\"\n";
    let gw = gateway(&up, &toml).await;
    let base = gw.url("");
    let v = login_ok(&base, "erin", "erin-ldap-pw").await;
    assert_eq!(v["data"]["me"]["name"], "Erin Example (display)");
    assert_eq!(v["data"]["userId"], stable_user_id("ldap", "erin").as_str());
    // tina's entry holds a TOTP secret, so her password alone is not enough.
    let (status, body) = login_status(&base, "tina", "tina-ldap-pw").await;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "totp-required"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ldaps_and_starttls_verify_the_server_against_ca_file() {
    let s = Slapd::start_with(SlapdOptions {
        tls: true,
        ..Default::default()
    });
    let up = RecordingUpstream::start().await;
    let plain = s.url();
    let ca = s.ca_file().display().to_string();
    let other = s.other_ca_file().display().to_string();
    let ldaps = s
        .directory_toml(&format!("ca_file = \"{ca}\""))
        .replace(&plain, &s.ldaps_url());
    let starttls = s.directory_toml(&format!("starttls = true\nca_file = \"{ca}\""));
    for toml in [ldaps, starttls] {
        let gw = gateway(&up, &toml).await;
        login_ok(&gw.url(""), "erin", "erin-ldap-pw").await;
        let (status, _) = login_status(&gw.url(""), "erin", "wrong").await;
        assert_eq!(status, 401);
    }
    let untrusted = [
        s.directory_toml(&format!("ca_file = \"{other}\""))
            .replace(&plain, &s.ldaps_url()),
        s.directory_toml(&format!("starttls = true\nca_file = \"{other}\"")),
        s.directory_toml("").replace(&plain, &s.ldaps_url()),
    ];
    for toml in untrusted {
        let gw = gateway(&up, &toml).await;
        let (status, text) = login_status(&gw.url(""), "erin", "erin-ldap-pw").await;
        assert_eq!((status, text.as_str()), (503, LDAP_UNAVAILABLE), "{toml}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_ldap_server() {
    let mut s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let extra = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        s.directory_toml("timeout = \"1s\"")
    );
    let gw = gateway(&up, &extra).await;
    let ready = || async {
        let r = client().get(gw.admin_url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let directory_up = || async {
        let text = scrape_metrics(&gw.admin_url("/metrics")).await;
        text.lines()
            .find(|l| l.starts_with(r#"authgate_directory_up{directory="ldap"}"#))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["checks"]["directory.ldap"], "ok", "{body}");
    assert_eq!(directory_up().await.as_deref(), Some("1"));

    // slapd down: the replica still serves sessions and local users, so it stays in the
    // load balancer, reported as degraded.
    s.kill();
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["session_store"], "ok", "{body}");
    assert_ne!(body["checks"]["directory.ldap"], "ok", "{body}");
    assert_eq!(directory_up().await.as_deref(), Some("0"));
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    assert_eq!(protected_get(&gw, &id, &token).await, 200);

    s.restart();
    let mut back = false;
    for _ in 0..30 {
        let (status, body) = ready().await;
        if status == 200 && body["status"] == "ready" {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "readiness did not come back with LDAP");
    assert_eq!(directory_up().await.as_deref(), Some("1"));
}

/// A user base the server does not have fails every LDAP login with 503, so the directory is
/// not reported ready, and the problem names the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_base_the_server_lacks_is_not_ready() {
    let s = Slapd::start();
    let up = RecordingUpstream::start().await;
    let toml = s
        .directory_toml("")
        .replace("user_base = \"ou=people", "user_base = \"ou=nobody-here");
    assert!(toml.contains("ou=nobody-here"), "{toml}");
    let gw = gateway(
        &up,
        &format!("{toml}\n[metrics]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .await;
    let r = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let why = body["checks"]["directory.ldap"].as_str().unwrap();
    assert!(
        why.contains("directory.ldap.user_base") && why.contains("ou=nobody-here"),
        "{body}"
    );
    let (status, text) = login_status(&gw.url(""), "erin", "erin-ldap-pw").await;
    assert_eq!((status, text.as_str()), (503, LDAP_UNAVAILABLE));
}
