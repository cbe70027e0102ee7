//! The real Python SDK (`rocketchat_API`) logs in by username and by email, calls an
//! authenticated endpoint and logs out, unchanged. `./scripts/test` installs the package.

mod support;

use std::process::Command;

use support::*;

#[test]
fn rocketchat_api_python_client_works_unchanged() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RecordingUpstream::start());
    let files = write_files(
        &config_text(up.addr, None, ""),
        &users_toml(&standard_users()),
    );
    let gw = GatewayProcess::spawn(&files.config_path);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients/rocketchat_api_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            gw.url("").as_str(),
            "alice",
            "alice@example.org",
            "alice-password-1",
        ])
        .output()
        .expect("python3 is needed (./scripts/test installs the rocketchat_API package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.stderr()
    );
    assert!(stdout.contains("rocketchat_API client OK"));
    // What the backend saw: the SDK's /me calls, each with the gateway's identity headers.
    let seen = up.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for r in seen {
        assert!(r.target.starts_with("/api/v1/me"));
        assert_eq!(r.header_all("x-user-id").len(), 1);
    }
}
