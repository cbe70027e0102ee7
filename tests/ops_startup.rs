//! What an operator meets when starting the real binary: `log.level` (and AUTHGATE_LOG) values
//! that would silence the logs are refused by `check-config` and `serve`; pretty logs carry
//! colour codes only on a terminal and never with NO_COLOR; `--listen`, AUTHGATE_LISTEN and
//! AUTHGATE_UPSTREAM replace the file's listen addresses and upstream.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{authgate_bin, client, which, write_files, GatewayProcess, RecordingUpstream};

/// A config listening on an ephemeral loopback port, forwarding to `upstream`, with `extra`.
fn config(upstream: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\n[upstream]\nurl = \"{upstream}\"\n\n\
         [directory.local]\nusers_file = \"users.toml\"\n\n{extra}\n"
    )
}

fn run(args: &[&str], config_path: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(authgate_bin())
        .args(args)
        .arg("--config")
        .arg(config_path)
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_LOG")
        .env_remove("AUTHGATE_LISTEN")
        .env_remove("AUTHGATE_UPSTREAM")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_and_serve_refuse_log_levels_that_would_silence_the_logs() {
    for (level, expected) in [
        (
            "warning",
            "`warning` is not a log level (did you mean \"warn\"?)",
        ),
        ("loud", "`loud` is not a log level"),
        (
            "info,authgate=loud",
            "`info,authgate=loud` is not a log filter",
        ),
        ("", "`log.level`: empty"),
    ] {
        let files = write_files(
            &config("http://127.0.0.1:9", &format!("[log]\nlevel = \"{level}\"")),
            "",
        );
        for command in [&["check-config"][..], &["serve"][..]] {
            let out = run(command, &files.config_path, &[]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(64), "{command:?} {level:?}: {err}");
            assert!(err.contains("`log.level`"), "{command:?} {level:?}: {err}");
            assert!(err.contains(expected), "{command:?} {level:?}: {err}");
            assert!(
                err.contains("(fix: use error, warn, info, debug, trace or off"),
                "{command:?} {level:?}: {err}"
            );
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("listening on"),
                "{command:?} {level:?} started anyway"
            );
        }
    }
}

#[test]
fn check_config_accepts_level_names_in_any_case_and_filter_directives() {
    for level in [
        "warn",
        "DEBUG",
        "off",
        "info,authgate::access=warn",
        "authgate=trace",
    ] {
        let files = write_files(
            &config("http://127.0.0.1:9", &format!("[log]\nlevel = \"{level}\"")),
            "",
        );
        let out = run(&["check-config"], &files.config_path, &[]);
        assert!(out.status.success(), "{level}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("configuration is valid: "),
            "{level}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn serve_refuses_an_authgate_log_variable_that_is_no_level() {
    let files = write_files(&config("http://127.0.0.1:9", ""), "");
    let out = run(
        &["serve"],
        &files.config_path,
        &[("AUTHGATE_LOG", "verbose")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("`AUTHGATE_LOG`: `verbose` is not a log level"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}

#[tokio::test]
async fn pretty_logs_written_to_a_file_carry_no_colour_codes() {
    let files = write_files(&config("http://127.0.0.1:9", ""), "");
    // NO_COLOR unset: only the missing terminal may keep the colour out.
    let gw = GatewayProcess::spawn_with(&files.config_path, &[], &[]);
    let answer = client().get(gw.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    assert!(
        gw.wait_for_stderr("/api/v1/me", 1, Duration::from_secs(5)),
        "no access line: {}",
        gw.stderr()
    );
    // The startup line is written after the listeners open, so it may trail the access line.
    assert!(
        gw.wait_for_stderr("authgate started", 1, Duration::from_secs(5)),
        "no startup line: {}",
        gw.stderr()
    );
    let logged = gw.stderr();
    assert!(
        !logged.contains('\x1b'),
        "ANSI codes in a log file: {logged:?}"
    );
}

/// Runs `serve` for five seconds (a debug build on a busy machine needs a few to start) on a
/// pseudo-terminal (util-linux `script`), returning what the terminal showed.
fn serve_on_a_terminal(config_path: &Path, no_color: Option<&str>) -> String {
    let command = format!(
        "timeout -s TERM 5 {} serve --config {}",
        authgate_bin(),
        config_path.display()
    );
    let mut script = Command::new(which("script"));
    script
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if let Some(v) = no_color {
        script.env("NO_COLOR", v);
    }
    let out = script.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pretty_logs_are_coloured_on_a_terminal_unless_no_color_is_set() {
    let files = write_files(&config("http://127.0.0.1:9", ""), "");
    let (coloured, plain) = std::thread::scope(|s| {
        let coloured = s.spawn(|| serve_on_a_terminal(&files.config_path, None));
        let plain = s.spawn(|| serve_on_a_terminal(&files.config_path, Some("1")));
        (coloured.join().unwrap(), plain.join().unwrap())
    });
    assert!(coloured.contains("authgate"), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:?}"
    );
    assert!(plain.contains("authgate started"), "{plain}");
    assert!(
        !plain.contains('\x1b'),
        "colour despite NO_COLOR: {plain:?}"
    );
}

#[tokio::test]
async fn listen_flag_and_authgate_upstream_replace_the_files_addresses() {
    let upstream = RecordingUpstream::start().await;
    // The file names a listener and an upstream that are both wrong for this run.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let files = write_files(
        &config("http://127.0.0.1:9", "").replace("127.0.0.1:0", &taken_addr),
        "",
    );
    let upstream_url = format!("http://{}", upstream.addr);
    let gw = GatewayProcess::spawn_with(
        &files.config_path,
        &["--listen", "127.0.0.1:0"],
        &[("AUTHGATE_UPSTREAM", &upstream_url)],
    );
    assert_ne!(gw.addr.to_string(), taken_addr);
    let answer = client().get(gw.url("/api/info")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body = answer.text().await.unwrap();
    assert!(!body.is_empty());
    assert_eq!(
        upstream.count(),
        1,
        "the request did not reach AUTHGATE_UPSTREAM"
    );
    assert_eq!(upstream.last().target, "/api/info");
    drop(taken);
}

#[tokio::test]
async fn authgate_listen_takes_several_addresses_and_the_flag_wins_over_it() {
    let upstream = RecordingUpstream::start().await;
    let files = write_files(
        &config(&format!("http://{}", upstream.addr), "")
            .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\""),
        "",
    );
    let gw = GatewayProcess::spawn_with(
        &files.config_path,
        &[],
        &[("AUTHGATE_LISTEN", "127.0.0.1:0, 127.0.0.1:0")],
    );
    let addrs = gw.listen_addrs(2);
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    for addr in &addrs {
        assert_ne!(addr.port(), 1);
        let answer = client()
            .get(format!("http://{addr}/api/info"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(upstream.count(), 2);
    drop(gw);

    // The flag beats the variable: a bad AUTHGATE_LISTEN is not even read.
    let gw = GatewayProcess::spawn_with(
        &files.config_path,
        &["--listen", "127.0.0.1:0"],
        &[("AUTHGATE_LISTEN", "not-an-address")],
    );
    assert_eq!(gw.listen_addrs(1).len(), 1);
}

#[test]
fn a_bad_override_is_reported_under_its_own_name() {
    let files = write_files(&config("http://127.0.0.1:9", ""), "");
    let out = run(
        &["check-config", "--listen", "nowhere"],
        &files.config_path,
        &[("AUTHGATE_UPSTREAM", "ftp://chat")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("`--listen/AUTHGATE_LISTEN, overriding server.listen`: `nowhere` is not an IP:port address"),
        "{err}"
    );
    assert!(
        err.contains("`--upstream/AUTHGATE_UPSTREAM, overriding upstream.url`: `ftp://chat` is not an http URL"),
        "{err}"
    );
}

/// `key=value` settings of a systemd unit, in order (a key may repeat).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn deploy_authgate_service_runs_serve_hardened_with_only_the_state_folder_writable_and_verifies() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/authgate.service");
    let text = std::fs::read_to_string(&path).unwrap();
    let settings = unit_settings(&text);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        get("ExecStart"),
        ["/usr/local/bin/authgate serve --config /etc/authgate/config.toml"]
    );
    assert_eq!(get("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(get("User"), ["authgate"]);
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("StateDirectory", "authgate"),
        ("ReadWritePaths", "/var/lib/authgate"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert!(get(key).contains(&value), "{key}={value} missing");
    }
    // The stop must outlast the default drain (shutdown_delay 0s + shutdown_grace 10s).
    let stop = humantime::parse_duration(get("TimeoutStopSec")[0]).unwrap();
    assert!(stop > Duration::from_secs(10));

    // systemd's own check, with the unit pointing at the binary built here.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("authgate.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/authgate", authgate_bin()),
    )
    .unwrap();
    let out = Command::new(which("systemd-analyze"))
        .args(["verify"])
        .arg(&unit)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
}

#[tokio::test]
async fn healthcheck_probes_the_address_authgate_listen_names_instead_of_the_files() {
    let upstream = RecordingUpstream::start().await;
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unused_addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    // The file's address is closed; the gateway runs where --listen put it.
    let files = write_files(
        &config(&format!("http://{}", upstream.addr), "").replace("127.0.0.1:0", &unused_addr),
        "",
    );
    let gw = GatewayProcess::spawn_with(&files.config_path, &["--listen", "127.0.0.1:0"], &[]);
    let listening = gw.addr.to_string();
    // Blocking is fine here: the gateway is another process, and the probe only connects.
    let probe = |env: &[(&str, &str)]| run(&["healthcheck"], &files.config_path, env);
    let healthy = probe(&[("AUTHGATE_LISTEN", &listening)]);
    assert_eq!(healthy.status.code(), Some(0), "{}", stderr(&healthy));
    assert!(String::from_utf8_lossy(&healthy.stdout).starts_with("healthy"));
    let unhealthy = probe(&[]);
    assert_eq!(unhealthy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unhealthy.stdout).starts_with("unhealthy"));
}
