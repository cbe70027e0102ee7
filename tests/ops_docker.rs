//! docker/: the compose file, the configs it mounts, HAProxy's view of the replicas and the
//! Dockerfile stay in step with the code. No Docker engine runs here, so the YAML is parsed and
//! each mounted config is checked by `authgate check-config` in a folder laid out as the
//! container sees /etc/authgate. Where the docker client has the compose plugin, `docker compose
//! config` checks the file as well.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;
use support::authgate_bin;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(docker_dir().join("compose.yml")).unwrap();
    let mut value: Value = serde_norway::from_str(&text).unwrap();
    value.apply_merge().unwrap();
    value
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn services(c: &Value) -> BTreeMap<String, Value> {
    c["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (s(k).to_string(), v.clone()))
        .collect()
}

/// Bind mounts `./host:container[:ro]` of a service, as (host path, container path).
fn bind_mounts(service: &Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_sequence()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            let spec = s(v);
            let mut parts = spec.split(':');
            let host = parts.next()?;
            let target = parts.next()?;
            host.starts_with('.')
                .then(|| (docker_dir().join(host), target.to_string()))
        })
        .collect()
}

/// Drops the `[directory.ldap...]` tables when this build has no LDAP directory.
fn without_ldap(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skipping = line.starts_with("[directory.ldap");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn compose_runs_two_replicas_behind_a_load_balancer_with_redis_ldap_and_an_upstream() {
    let c = compose();
    let all = services(&c);
    for name in [
        "lb",
        "authgate-1",
        "authgate-2",
        "redis",
        "ldap",
        "upstream",
    ] {
        assert!(
            all.contains_key(name),
            "compose.yml has no `{name}` service"
        );
    }
    let replicas: Vec<&String> = all
        .iter()
        .filter(|(_, v)| v["build"]["dockerfile"].as_str() == Some("docker/Dockerfile"))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(replicas, ["authgate-1", "authgate-2"]);
    for name in &replicas {
        let svc = &all[*name];
        assert!(
            svc["ports"].is_null(),
            "{name} must only be reached through the load balancer"
        );
        assert_eq!(s(&svc["build"]["context"]), "..");
    }
    assert_eq!(s(&all["lb"]["ports"][0]), "8080:8080");
    // The LDAP seed and the HAProxy config it mounts exist.
    for (host, _) in bind_mounts(&all["ldap"])
        .into_iter()
        .chain(bind_mounts(&all["lb"]))
    {
        assert!(host.exists(), "{} is mounted but missing", host.display());
    }
    let seed = std::fs::read_to_string(docker_dir().join("ldap/seed.ldif")).unwrap();
    for entry in [
        "uid=alice,ou=people",
        "uid=bob,ou=people",
        "cn=authgate,ou=services",
        "cn=chat-admins,ou=groups",
    ] {
        assert!(
            seed.contains(&format!("dn: {entry},dc=example,dc=org")),
            "{entry}"
        );
    }
}

#[test]
fn the_config_every_replica_mounts_passes_check_config_and_matches_its_neighbours() {
    let c = compose();
    let all = services(&c);
    let ldap_supported = authgate::config::accepted_keys()
        .iter()
        .any(|k| k == "directory.ldap.url");
    for name in ["authgate-1", "authgate-2"] {
        let svc = &all[name];
        let config_target = s(&svc["environment"]["AUTHGATE_CONFIG"]).to_string();
        let etc = tempfile::tempdir().unwrap();
        let mut config_host = None;
        for (host, target) in bind_mounts(svc) {
            assert!(host.exists(), "{name} mounts missing {}", host.display());
            let rel = target
                .strip_prefix("/etc/authgate/")
                .unwrap_or_else(|| panic!("{name} mounts {target} outside /etc/authgate"));
            let dest = etc.path().join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            let mut text = std::fs::read_to_string(&host).unwrap();
            if target == config_target {
                config_host = Some(host.clone());
                if !ldap_supported {
                    text = without_ldap(&text);
                }
            }
            std::fs::write(&dest, text).unwrap();
        }
        let config_host = config_host.expect("AUTHGATE_CONFIG names a mounted file");
        let config_path = etc.path().join("config.toml");
        let out = Command::new(authgate_bin())
            .args(["check-config", "--config"])
            .arg(&config_path)
            .env_remove("AUTHGATE_CONFIG")
            .env_remove("AUTHGATE_SESSION_REDIS_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} fails check-config:\n{}",
            config_host.display(),
            String::from_utf8_lossy(&out.stderr)
        );

        let text = std::fs::read_to_string(&config_host).unwrap();
        let config = authgate::config::Config::load(
            &authgate::config::ConfigSource::from_file(&config_path).unwrap(),
        )
        .unwrap();
        // HAProxy sends traffic to server.listen and health checks to metrics.listen.
        let haproxy = std::fs::read_to_string(docker_dir().join("haproxy.cfg")).unwrap();
        let port = config.server.listen[0].port();
        assert!(
            haproxy.contains(&format!("server {name} {name}:{port}")),
            "haproxy.cfg does not send to {name}:{port}"
        );
        let metrics = config
            .metrics
            .listen
            .expect("the replicas have [metrics] on");
        assert!(haproxy.contains(&format!("check port {}", metrics.port())));
        assert!(haproxy.contains("uri /readyz"));
        // The load balancer's fixed address is the one trusted proxy.
        let lb_ip: std::net::IpAddr = s(&all["lb"]["networks"]["edge"]["ipv4_address"])
            .parse()
            .unwrap();
        assert_eq!(
            config.server.trusted_proxies,
            vec![ipnet::IpNet::from(lb_ip)]
        );
        // Every host the config names is a compose service.
        assert_eq!(config.upstream.url.host(), Some("upstream"));
        assert!(s(&svc["environment"]["AUTHGATE_SESSION_REDIS_URL"]).starts_with("redis://redis:"));
        assert!(text.contains("url = \"ldap://ldap:389\""));
        // A stop must outlast the drain: delay, then the grace period.
        let stop = s(&svc["stop_grace_period"]);
        let stop = humantime::parse_duration(stop).unwrap();
        assert!(stop > config.server.shutdown_delay + config.server.shutdown_grace);
    }
    if !ldap_supported {
        println!("note: this build has no [directory.ldap]; the LDAP tables were left out of check-config");
    }
}

#[test]
fn the_image_runs_as_non_root_with_the_healthcheck() {
    let dockerfile = std::fs::read_to_string(docker_dir().join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(!["root", "0"].contains(&user.trim()), "runs as {user}");
    assert!(
        dockerfile.contains(r#"CMD ["/usr/local/bin/authgate", "healthcheck"]"#),
        "no HEALTHCHECK with `authgate healthcheck`"
    );
    assert!(dockerfile.contains("ENV AUTHGATE_CONFIG=/etc/authgate/config.toml"));
    // Whatever the build stage copies must get through the build context filter.
    let ignore = std::fs::read_to_string(docker_dir().join("Dockerfile.dockerignore")).unwrap();
    for copied in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "config.toml",
        "users.toml",
    ] {
        assert!(
            ignore.lines().any(|l| l == format!("!{copied}")),
            "{copied}"
        );
    }
}

#[test]
fn docker_compose_config_accepts_the_file_where_the_plugin_exists() {
    let plugin = Command::new("docker").args(["compose", "version"]).output();
    if !plugin.is_ok_and(|o| o.status.success()) {
        println!("note: no `docker compose` here; the YAML checks above stand in for it");
        return;
    }
    let out = Command::new("docker")
        .args(["compose", "-f"])
        .arg(docker_dir().join("compose.yml"))
        .args(["config", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
