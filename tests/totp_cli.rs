//! The `authgate totp` CLI: enrollment and disabling change what running gateways do.

mod support;

use serde_json::Value;
use support::totp::*;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn cli_enrollment_and_disable_change_running_gateways() {
    let p = pair().await;
    let config = p.a.files.config_path.clone();
    let (status, text) = post_login(&p.a, &pw("erin", "erin-password-5"), None).await;
    assert_eq!(status, 200, "{text}");
    let (id, old_token) = session_of(&text);
    let (status, text) = post_login(&p.b, &pw("erin", "erin-password-5"), None).await;
    assert_eq!(status, 200, "{text}");
    let (_, kept_token) = session_of(&text);

    let (rc, out, err) = cli(&["totp", "enroll", "erin"], &config).await;
    assert_eq!(rc, 0, "{out}{err}");
    let uri = out
        .lines()
        .find_map(|l| l.strip_prefix("otpauth URI: "))
        .expect(&out);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("Secret:      "))
        .expect(&out);
    assert_eq!(
        uri,
        format!("otpauth://totp/authgate:erin?secret={secret}&issuer=authgate")
    );
    assert!(authgate::totp::secret_problem(secret).is_ok(), "{secret}");
    assert!(
        out.contains('█') && out.contains("Revoked 2 session(s)"),
        "{out}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&p.secrets_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Both running instances now require a code; the old sessions are gone.
    for gw in [&p.a, &p.b] {
        assert_eq!(protected_status(gw, &id, &old_token).await, 401);
        assert_eq!(protected_status(gw, &id, &kept_token).await, 401);
        let (status, text) = post_login(gw, &pw("erin", "erin-password-5"), None).await;
        assert_eq!((status, text.as_str()), (401, TOTP_REQUIRED));
    }
    let step = now_step();
    let (status, text) = post_login(
        &p.b,
        &with_code("erin", "erin-password-5", &code(secret, step)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, token) = session_of(&text);

    // Re-enrolling with --keep-sessions replaces the secret and keeps the session.
    let (rc, out, err) = cli(
        &["totp", "enroll", "erin@example.org", "--keep-sessions"],
        &config,
    )
    .await;
    assert_eq!(rc, 0, "{out}{err}");
    let secret2 = out
        .lines()
        .find_map(|l| l.strip_prefix("Secret:      "))
        .unwrap();
    assert_ne!(secret, secret2);
    assert_eq!(protected_status(&p.a, &id, &token).await, 200);
    let (status, text) = post_login(
        &p.a,
        &with_code("erin", "erin-password-5", &code(secret, step + 1)),
        None,
    )
    .await;
    assert_eq!((status, text.as_str()), (401, TOTP_INVALID));

    let (rc, out, err) = cli(&["totp", "disable", "erin"], &config).await;
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("Revoked 1 session(s)"), "{out}");
    assert_eq!(protected_status(&p.b, &id, &token).await, 401);
    for gw in [&p.a, &p.b] {
        let (status, text) = post_login(gw, &pw("erin", "erin-password-5"), None).await;
        assert_eq!(status, 200, "{text}");
    }
    let (rc, out, _) = cli(&["totp", "disable", "erin"], &config).await;
    assert_eq!(rc, 0);
    assert!(out.contains("not enrolled"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_refuses_what_it_cannot_do_cleanly() {
    let p = pair().await;
    let config = p.a.files.config_path.clone();
    // A users-file secret wins, so enrolling alice would change nothing.
    let (rc, _, err) = cli(&["totp", "enroll", "alice"], &config).await;
    assert_eq!(rc, 64, "{err}");
    assert!(err.contains("totp_secret"), "{err}");
    let (rc, _, err) = cli(&["totp", "enroll", "nobody@example.org"], &config).await;
    assert_eq!(rc, 64, "{err}");
    // A user no directory knows (a typo) is refused, and nothing is written.
    let (rc, _, err) = cli(&["totp", "enroll", "lucy"], &config).await;
    assert_eq!(rc, 64, "{err}");
    assert!(
        err.contains("no user `lucy`") && err.contains("no LDAP directory"),
        "{err}"
    );
    assert!(
        !p.secrets_file.exists(),
        "a refused command wrote the store"
    );
    let (rc, out, err) = cli(&["totp", "enroll", "erin", "--keep-sessions"], &config).await;
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("Existing sessions were kept"), "{out}");
    let store: Value =
        serde_json::from_str(&std::fs::read_to_string(&p.secrets_file).unwrap()).unwrap();
    assert!(store["users"]["erin"]["secret"].is_string(), "{store}");
    // Redis down: the store is updated, the failure to revoke is reported.
    let mut p = p;
    p.redis.kill();
    let (rc, _, err) = cli(&["totp", "disable", "erin"], &config).await;
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("could not be revoked"), "{err}");
}

/// An LDAP user is found through the directory (no `--user-id`), their sessions end, and their
/// next login needs a code; a name the directory does not know is refused.
#[tokio::test(flavor = "multi_thread")]
async fn ldap_users_are_enrolled_through_the_directory() {
    let s = support::slapd::Slapd::start();
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), &s.directory_toml("")),
        &users_toml(&standard_users()),
    )
    .await;
    let (id, token) = login(&gw.url(""), "erin", "erin-ldap-pw").await;
    let config = gw.files.config_path.clone();

    let (rc, _, err) = cli(&["totp", "enroll", "eriin"], &config).await;
    assert_eq!(rc, 64, "{err}");
    assert!(
        err.contains("no user `eriin`") && err.contains("LDAP directory"),
        "{err}"
    );
    let secrets_file = gw.files.dir.path().join("totp-secrets.json");
    assert!(!secrets_file.exists(), "a refused command wrote the store");

    let (rc, out, err) = cli(&["totp", "enroll", "erin"], &config).await;
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("Revoked 1 session(s) of erin"), "{out}");
    assert_eq!(protected_status(&gw, &id, &token).await, 401);
    let (status, text) = post_login(&gw, &pw("erin", "erin-ldap-pw"), None).await;
    assert_eq!((status, text.as_str()), (401, TOTP_REQUIRED));
    let store: Value =
        serde_json::from_str(&std::fs::read_to_string(&secrets_file).unwrap()).unwrap();
    assert_eq!(
        store["users"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["erin"]
    );
}

/// With the memory store and no users file entry, a typo is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_users_are_refused_with_the_memory_store() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(&config_text(up.addr, None, ""), &totp_users()).await;
    let (rc, _, err) = cli(&["totp", "enroll", "nobody"], &gw.files.config_path).await;
    assert_eq!(rc, 64, "{err}");
    assert!(err.contains("no user `nobody`"), "{err}");
    assert!(!gw.files.dir.path().join("totp-secrets.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_memory_store_the_cli_enrolls_and_warns_it_cannot_revoke() {
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(&config_text(up.addr, None, ""), &totp_users()).await;
    let (status, text) = post_login(&gw, &pw("erin", "erin-password-5"), None).await;
    assert_eq!(status, 200, "{text}");
    let (rc, out, err) = cli(&["totp", "enroll", "erin"], &gw.files.config_path).await;
    assert_eq!(rc, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("cannot be revoked"),
        "{err}"
    );
    // The default store sits next to the config file.
    assert!(gw.files.dir.path().join("totp-secrets.json").exists());
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("Secret:      "))
        .unwrap();
    let (status, text) = post_login(&gw, &pw("erin", "erin-password-5"), None).await;
    assert_eq!((status, text.as_str()), (401, TOTP_REQUIRED));
    let c = code(secret, now_step());
    let (status, text) = post_login(&gw, &with_code("erin", "erin-password-5", &c), None).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = post_login(&gw, &with_code("erin", "erin-password-5", &c), None).await;
    assert_eq!((status, text.as_str()), (401, TOTP_INVALID));
}
