//! The built binary: subcommands, exit codes, config problems, signals, logs.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn run(args: &[&str], stdin: Option<&str>, cwd: Option<&std::path::Path>) -> (i32, String, String) {
    let mut cmd = Command::new(authgate_bin());
    cmd.args(args)
        .env_remove("AUTHGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().unwrap();
    {
        let mut sin = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            sin.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

#[test]
fn checked_in_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), repo_file("config.toml")).unwrap();
    std::fs::write(dir.path().join("users.toml"), repo_file("users.toml")).unwrap();
    let (code, out, err) = run(
        &[
            "check-config",
            "--config",
            dir.path().join("config.toml").to_str().unwrap(),
        ],
        None,
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    // Without --config, ./config.toml is used.
    let (code, _, err) = run(&["check-config"], None, Some(dir.path()));
    assert_eq!(code, 0, "{err}");
    // With no file at all, the embedded default runs; check-config says so, and that nobody
    // can log in.
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["check-config"], None, Some(empty.path()));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("configuration is valid: <embedded default config>"),
        "{out}"
    );
    assert!(
        err.contains("warning: the users file") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn check_config_names_the_file_it_read_and_warns_about_an_empty_users_file() {
    let users = users_toml(&standard_users());
    let files = write_files("[directory.local]\nusers_file = \"users.toml\"\n", &users);
    let path = files.config_path.to_str().unwrap();
    let (code, out, err) = run(&["check-config", "--config", path], None, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("configuration is valid: {path}")),
        "{out}"
    );
    assert!(out.contains("users.toml: 4 user(s)"), "{out}");
    assert!(!err.contains("users file"), "{err}");

    let files = write_files("[directory.local]\nusers_file = \"users.toml\"\n", "");
    let path = files.config_path.to_str().unwrap();
    let (code, _, err) = run(&["check-config", "--config", path], None, None);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: the users file") && err.contains("holds no users"),
        "{err}"
    );
}

/// One run lists every problem: a typo'd key next to wrong types in the config; in the users
/// file an unknown key in one entry next to a bad hash, a duplicate and a short TOTP secret in
/// others, each naming its entry.
#[test]
fn check_config_lists_every_problem_in_one_run() {
    let config = "[server]\nmax_conections = 5\nmax_connections = \"many\"\nidle_timeout = 5\n\n[sesion]\nstore = \"memory\"\n";
    let files = write_files(config, "");
    let path = files.config_path.to_str().unwrap();
    let (code, _, err) = run(&["check-config", "--config", path], None, None);
    assert_eq!(code, 64, "{err}");
    for key in [
        "server.max_connections",
        "server.idle_timeout",
        "server.max_conections",
        "sesion",
    ] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    assert!(err.contains("unknown key") && err.contains("fix:"), "{err}");

    let good = cheap_hash("pw");
    let users = format!(
        "[[users]]\nusername = \"alice\"\npassword_hash = \"{good}\"\npasword = \"x\"\n\n\
         [[users]]\nusername = \"bob\"\npassword_hash = \"plaintext\"\n\n\
         [[users]]\nusername = \"BOB\"\npassword_hash = \"{good}\"\n\n\
         [[users]]\nusername = \"carol\"\npassword_hash = \"{good}\"\ntotp_secret = \"short\"\n\n\
         [[users]]\nusername = \"dave\"\npassword_hash = \"{good}\"\nactive = \"yes\"\n"
    );
    let files = write_files("[directory.local]\nusers_file = \"users.toml\"\n", &users);
    let path = files.config_path.to_str().unwrap();
    let (code, _, err) = run(&["check-config", "--config", path], None, None);
    assert_eq!(code, 64, "{err}");
    for key in [
        "users[0].pasword (user `alice`)",
        "users[1].password_hash (user `bob`)",
        "users[2].username (user `BOB`)",
        "users[3].totp_secret (user `carol`)",
        "users[4] (user `dave`)",
    ] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    assert!(
        err.contains(r#"string "yes", expected a boolean in `active`"#),
        "{err}"
    );
}

#[test]
fn bad_config_lists_every_problem_with_key_and_fix() {
    let files = write_files(
        "[server]\nlisten = \"nowhere\"\nheader_read_timeout = \"soon\"\nlisten_backlog = 5\npassword_hash_priority = \"urgent\"\n\n[upstream]\nurl = \"ftp://x\"\n\n\
         [session]\nstore = \"postgres\"\nttl = \"-1\"\n\n[directory.local]\nusers_file = \"users.toml\"\nbogus = 1\n\n[routes]\npublic = [\"/api/v1/*\"]\n\n[nonsense]\nx = 1\n",
        "",
    );
    let (code, _, err) = run(
        &[
            "check-config",
            "--config",
            files.config_path.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert_eq!(code, 64, "{err}");
    for key in [
        "`server.listen`",
        "`server.header_read_timeout`",
        "`server.listen_backlog`",
        "`server.password_hash_priority`",
        "`upstream.url`",
        "`session.store`",
        "`session.ttl`",
        "`directory.local.bogus`",
        "`routes.public[0]`",
        "`nonsense`",
    ] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    assert!(err.contains("fix:"), "{err}");
    // serve refuses the same config with the same exit code.
    let (code, _, err2) = run(
        &["serve", "--config", files.config_path.to_str().unwrap()],
        None,
        None,
    );
    assert_eq!(code, 64, "{err2}");
    assert!(err2.contains("`session.store`"));
}

#[test]
fn type_errors_and_users_file_problems_name_the_key() {
    let files = write_files("[server]\nmax_connections = \"many\"\n", "");
    let (code, _, err) = run(
        &[
            "check-config",
            "--config",
            files.config_path.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert_eq!(code, 64);
    assert!(err.contains("server.max_connections"), "{err}");

    let users = "[[users]]\nusername = \"alice\"\npassword_hash = \"plaintext\"\n\n[[users]]\nusername = \"ALICE\"\npassword_hash = \"$2b$04$abcdefghijklmnopqrstuu5Y5Gf2nBcq2b1T5m7oY8W2x3c4d5e6\"\ntotp_secret = \"short\"\n";
    let files = write_files("[directory.local]\nusers_file = \"users.toml\"\n", users);
    let (code, _, err) = run(
        &[
            "check-config",
            "--config",
            files.config_path.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert_eq!(code, 64);
    for key in [
        "users[0].password_hash",
        "users[1].username",
        "users[1].totp_secret",
    ] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    let files = write_files("[directory.local]\nusers_file = \"missing.toml\"\n", "");
    let (code, _, err) = run(
        &[
            "check-config",
            "--config",
            files.config_path.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert_eq!(code, 64);
    assert!(err.contains("directory.local.users_file"), "{err}");
    // A missing config file is a usage problem too.
    let (code, _, err) = run(
        &["check-config", "--config", "/nonexistent/authgate.toml"],
        None,
        None,
    );
    assert_eq!(code, 64, "{err}");
}

#[test]
fn usage_errors_exit_64() {
    let (code, _, _) = run(&["frobnicate"], None, None);
    assert_eq!(code, 64);
    let (code, _, _) = run(&["serve", "--no-such-flag"], None, None);
    assert_eq!(code, 64);
    let (code, out, _) = run(&["--help"], None, None);
    assert_eq!(code, 0);
    assert!(out.contains("hash-password") && out.contains("check-config") && out.contains("serve"));
}

/// The `password_hash` and `password_prehash` of the entry `hash-password` printed.
fn printed_entry(out: &str) -> (String, String) {
    let entry: toml::Table = toml::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(entry.len(), 2, "{out}");
    let field = |k: &str| {
        entry[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}: {out}"))
            .to_string()
    };
    (field("password_hash"), field("password_prehash"))
}

#[test]
fn hash_password_prints_an_entry_that_verifies_plain_and_digest_logins() {
    use authgate::password::{sha256_hex, verify_blocking, Password, Prehash};
    let (code, out, err) = run(&["hash-password"], Some("s3cret pass\n"), None);
    assert_eq!(code, 0, "{err}");
    let (hash, prehash) = printed_entry(&out);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert_eq!(prehash, "sha256");
    let verifies = |p: Password| verify_blocking(&p, &hash, Prehash::Sha256);
    assert!(verifies(Password::Plain("s3cret pass".into())));
    assert!(verifies(Password::Sha256Digest(sha256_hex("s3cret pass"))));
    assert!(!verifies(Password::Plain("s3cret pass\n".into())));
    assert!(!verifies(Password::Sha256Digest(sha256_hex(
        "s3cret pass\n"
    ))));
    // The digest itself is not the password.
    assert!(!verifies(Password::Plain(sha256_hex("s3cret pass"))));
    // Leading and trailing spaces are part of the password.
    let (_, out, _) = run(&["hash-password"], Some("  padded  "), None);
    let (hash, _) = printed_entry(&out);
    assert!(verify_blocking(
        &Password::Plain("  padded  ".into()),
        &hash,
        Prehash::Sha256
    ));
    let (code, _, err) = run(&["hash-password"], Some(""), None);
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = run(&["hash-password"], Some("\n"), None);
    assert_eq!(code, 64);
}

#[test]
fn a_hashed_user_logs_in_through_the_binary_and_logs_stay_clean() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(RecordingUpstream::start());
    let password = "Tr0ub4dor&3-unique-password";
    let (_, entry, _) = run(&["hash-password"], Some(password), None);
    let users = format!(
        "[[users]]\nusername = \"zoe\"\nemail = \"zoe@example.org\"\n{}\n",
        entry.trim()
    );
    let cfg = config_text(
        upstream.addr,
        None,
        "[log]\nlevel = \"debug\"\nformat = \"json\"\n",
    );
    let files = write_files(&cfg, &users);
    let mut gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    rt.block_on(async {
        let (id, token) = login(&base, "zoe@example.org", password).await;
        let (status, _) = login_json(
            &base,
            serde_json::json!({"user": "zoe", "password": format!("{password}-wrong")}),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(
            status_as(
                reqwest::Method::GET,
                &format!("{base}/api/v1/me"),
                &id,
                &token
            )
            .await,
            200
        );
        let r = client()
            .post(format!("{base}/api/v1/logout"))
            .header("x-auth-token", &token)
            .header("x-user-id", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The whole log of the run, once the process has stopped.
        let status = gw
            .signal_and_wait("TERM", Duration::from_secs(10))
            .expect("authgate did not stop on SIGTERM");
        assert!(status.success(), "exit {status:?}");
        let log = gw.stderr();
        assert!(!log.is_empty());
        assert!(!log.contains(password), "password in logs:\n{log}");
        assert!(!log.contains(&token), "token in logs:\n{log}");
    });
}

#[test]
fn sigint_stops_cleanly_and_requests_in_flight_finish() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(RecordingUpstream::start());
    let cfg = config_text(upstream.addr, None, "")
        .replace("timeout = \"2s\"", "timeout = \"30s\"")
        .replace("shutdown_grace = \"2s\"", "shutdown_grace = \"15s\"");
    let files = write_files(&cfg, &users_toml(&standard_users()));
    let mut gw = GatewayProcess::spawn(&files.config_path);
    let base = gw.url("");
    rt.block_on(async {
        let (id, token) = login(&base, "alice", "alice-password-1").await;
        // /slow answers after 10 s; the stop must wait for it.
        let inflight = tokio::spawn({
            let url = format!("{base}/slow");
            async move {
                client()
                    .get(url)
                    .header("x-auth-token", token)
                    .header("x-user-id", id)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = tokio::task::spawn_blocking(move || {
            let s = gw.signal_and_wait("INT", Duration::from_secs(20));
            (s, gw)
        })
        .await
        .unwrap();
        assert!(status.0.expect("did not exit").success());
        assert_eq!(
            inflight.await.unwrap().unwrap(),
            200,
            "the request in flight was cut off"
        );
    });
}

#[test]
fn the_checked_in_config_serves() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        repo_file("config.toml").replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
    std::fs::write(dir.path().join("users.toml"), repo_file("users.toml")).unwrap();
    let gw = GatewayProcess::spawn(&dir.path().join("config.toml"));
    rt.block_on(async {
        let (status, body) = login_json(
            &gw.url(""),
            serde_json::json!({"user": "admin", "password": "admin"}),
        )
        .await;
        assert_eq!(status, 401, "there is no default account: {body}");
        let r = client().get(gw.url("/api/v1/me")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    });
}

#[test]
fn check_config_refuses_writable_secret_files_and_warns_on_readable_ones() {
    use std::os::unix::fs::PermissionsExt;
    let files = write_files(
        "[directory.local]\nusers_file = \"users.toml\"\n\n[totp]\nsecrets_file = \"totp-secrets.json\"\n",
        &users_toml(&standard_users()),
    );
    let users = files.dir.path().join("users.toml");
    let secrets = files.dir.path().join("totp-secrets.json");
    std::fs::write(&secrets, "{\"users\": {}}\n").unwrap();
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let check = |cmd: &str| {
        run(
            &[cmd, "--config", files.config_path.to_str().unwrap()],
            None,
            None,
        )
    };
    chmod(&users, 0o600);
    chmod(&secrets, 0o640);
    let (code, out, err) = check("check-config");
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    // Readable by every local user: valid, with a warning naming the key.
    chmod(&users, 0o644);
    chmod(&secrets, 0o604);
    let (code, _, err) = check("check-config");
    assert_eq!(code, 0, "{err}");
    for key in ["`directory.local.users_file`", "`totp.secrets_file`"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("warning: ") && l.contains(key) && l.contains("readable")),
            "{key} in:\n{err}"
        );
    }
    // Writable by the group or by others: refused, by check-config and serve alike.
    for (users_mode, secrets_mode, key) in [
        (0o620, 0o600, "`directory.local.users_file`"),
        (0o600, 0o602, "`totp.secrets_file`"),
        (0o666, 0o600, "`directory.local.users_file`"),
    ] {
        chmod(&users, users_mode);
        chmod(&secrets, secrets_mode);
        for cmd in ["check-config", "serve"] {
            let (code, _, err) = check(cmd);
            assert_eq!(code, 64, "{cmd} {users_mode:o}/{secrets_mode:o}: {err}");
            assert!(
                err.contains(key) && err.contains("writable by other users"),
                "{err}"
            );
        }
    }
    // Every `*_file` secret too.
    let files = write_files(
        "[session]\nstore = \"redis\"\nredis_url_file = \"redis-url.secret\"\n\n[directory.local]\nusers_file = \"users.toml\"\n",
        "",
    );
    let url_file = files.dir.path().join("redis-url.secret");
    std::fs::write(&url_file, "redis://:pw@127.0.0.1:6379/0\n").unwrap();
    let config = files.config_path.to_str().unwrap();
    chmod(&url_file, 0o600);
    assert_eq!(run(&["check-config", "--config", config], None, None).0, 0);
    chmod(&url_file, 0o660);
    let (code, _, err) = run(&["check-config", "--config", config], None, None);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("`session.redis_url_file`") && err.contains("writable by other users"),
        "{err}"
    );
}
