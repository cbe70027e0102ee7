//! docker/, read as a reviewer would: no Docker engine runs here, so nothing in this file needs
//! one, and each test's name says which files it reads. The YAML, Dockerfile and TOML files are
//! parsed; each mounted config is checked by the real `authgate check-config` in a folder laid
//! out as the container sees it; the compose LDAP's seed and ACL are loaded into a local slapd and
//! logged into through the gateway; the Rocket.Chat bootstrap script runs (real sh and curl)
//! against a recording stand-in for Rocket.Chat.

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
    compose_file("compose.yml")
}

fn compose_file(name: &str) -> Value {
    let text = std::fs::read_to_string(docker_dir().join(name)).unwrap();
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

#[test]
fn compose_yml_declares_lb_two_replicas_redis_ldap_upstream_and_seed_ldif_holds_the_example_entries(
) {
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
fn compose_yml_replica_mounts_pass_check_config_and_agree_with_haproxy_cfg_and_stop_timing() {
    let c = compose();
    let all = services(&c);
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
            let text = std::fs::read_to_string(&host).unwrap();
            if target == config_target {
                config_host = Some(host.clone());
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
}

#[test]
fn dockerfile_sets_a_non_root_user_and_the_healthcheck_and_copies_only_what_dockerignore_admits() {
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
        "docker/config.image.toml",
    ] {
        assert!(
            ignore.lines().any(|l| l == format!("!{copied}")),
            "{copied}"
        );
    }
}

fn dockerfile() -> String {
    std::fs::read_to_string(docker_dir().join("Dockerfile")).unwrap()
}

/// The value of `ENV name=value` in the Dockerfile.
fn dockerfile_env(name: &str) -> Option<String> {
    let prefix = format!("ENV {name}=");
    dockerfile()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// Named-volume mounts `name:/container/path[:mode]` of a service, as (name, path, read-only).
fn volume_mounts(service: &Value) -> Vec<(String, String, bool)> {
    service["volumes"]
        .as_sequence()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            let mut parts = s(v).split(':');
            let name = parts.next()?;
            let target = parts.next()?;
            let read_only = parts.next() == Some("ro");
            (!name.starts_with(['.', '/']))
                .then(|| (name.to_string(), target.to_string(), read_only))
        })
        .collect()
}

/// Runs `authgate check-config` on a service's config laid out under a temp root as the
/// container sees its filesystem: bind mounts copied to their container paths, named volumes
/// as empty folders, `files` written at their container paths, and the container paths the
/// config names moved under the root. The service's environment applies.
fn check_config_as_the_container_sees_it(
    service: &Value,
    files: &[(&str, &str)],
) -> (std::process::Output, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let inside = |container_path: &str| root.path().join(container_path.trim_start_matches('/'));
    let mut moved_dirs = vec!["/etc/authgate".to_string()];
    for (host, target) in bind_mounts(service) {
        assert!(host.exists(), "{} is mounted but missing", host.display());
        let dest = inside(&target);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&host, &dest).unwrap();
    }
    for (_, target, _) in volume_mounts(service) {
        std::fs::create_dir_all(inside(&target)).unwrap();
        moved_dirs.push(target);
    }
    for (path, text) in files {
        std::fs::write(inside(path), text).unwrap();
    }
    let env = &service["environment"];
    let config_path = inside(s(&env["AUTHGATE_CONFIG"]));
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    for dir in &moved_dirs {
        text = text.replace(
            &format!("\"{dir}/"),
            &format!("\"{}/", inside(dir).display()),
        );
    }
    std::fs::write(&config_path, text).unwrap();
    let mut command = Command::new(authgate_bin());
    command
        .args(["check-config", "--config"])
        .arg(&config_path)
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_LISTEN")
        .env_remove("AUTHGATE_UPSTREAM")
        .env_remove("AUTHGATE_UPSTREAM_ADMIN_TOKEN")
        .env_remove("AUTHGATE_UPSTREAM_ADMIN_USER_ID")
        .env_remove("AUTHGATE_SESSION_REDIS_URL");
    for (k, v) in env.as_mapping().unwrap() {
        if s(k) != "AUTHGATE_CONFIG" {
            command.env(s(k), s(v));
        }
    }
    (command.output().unwrap(), root)
}

#[test]
fn compose_files_name_existing_files_declared_volumes_known_services_and_pinned_image_tags() {
    for file in ["compose.yml", "compose.rocketchat.yml"] {
        let c = compose_file(file);
        let all = services(&c);
        let declared: Vec<&str> = c["volumes"]
            .as_mapping()
            .map(|m| m.keys().map(s).collect())
            .unwrap_or_default();
        for (name, svc) in &all {
            match svc["image"].as_str() {
                Some(image) => {
                    let (repo, tag) = image
                        .rsplit_once(':')
                        .filter(|(_, tag)| !tag.contains('/'))
                        .unwrap_or_else(|| panic!("{file}: {name} has no image tag: {image}"));
                    assert!(
                        !tag.is_empty() && tag != "latest",
                        "{file}: {name} floats on {image}"
                    );
                    // Bitnami took its free images' version tags off Docker Hub in 2025.
                    assert!(
                        !repo.contains("bitnami/"),
                        "{file}: {name} uses {image}, whose tags are gone"
                    );
                }
                None => assert_eq!(
                    svc["build"]["dockerfile"].as_str(),
                    Some("docker/Dockerfile"),
                    "{file}: {name} has neither image nor build"
                ),
            }
            for (host, _) in bind_mounts(svc) {
                assert!(
                    host.exists(),
                    "{file}: {name} mounts missing {}",
                    host.display()
                );
            }
            for (volume, _, _) in volume_mounts(svc) {
                assert!(
                    declared.contains(&volume.as_str()),
                    "{file}: {name} mounts undeclared volume {volume}"
                );
            }
            for env_file in svc["env_file"]
                .as_sequence()
                .map(|v| v.as_slice())
                .unwrap_or_default()
            {
                assert!(docker_dir().join(s(env_file)).exists(), "{file}: {name}");
            }
            if let Some(deps) = svc["depends_on"].as_mapping() {
                for dep in deps.keys() {
                    assert!(
                        all.contains_key(s(dep)),
                        "{file}: {name} depends on unknown {dep:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn dockerfile_and_config_image_toml_listen_on_all_interfaces_with_management_on_and_upstream_from_env(
) {
    let dockerfile = dockerfile();
    assert!(
        dockerfile
            .lines()
            .any(|l| l == "COPY docker/config.image.toml /etc/authgate/config.toml"),
        "the image's config is not docker/config.image.toml"
    );
    assert!(dockerfile.contains("ENV AUTHGATE_CONFIG=/etc/authgate/config.toml"));
    let expose: Vec<&str> = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE")
        .split_whitespace()
        .collect();
    assert_eq!(expose, ["8080", "9090"]);
    // An ENV default would silently replace the upstream of any config mounted over this one.
    assert_eq!(dockerfile_env("AUTHGATE_UPSTREAM"), None);

    // What the container runs with: the image's config, overridden as serve overrides it.
    let etc = tempfile::tempdir().unwrap();
    std::fs::copy(
        docker_dir().join("config.image.toml"),
        etc.path().join("config.toml"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("users.toml"),
        etc.path().join("users.toml"),
    )
    .unwrap();
    let source =
        authgate::config::ConfigSource::from_file(&etc.path().join("config.toml")).unwrap();
    let overrides = authgate::config::ConfigOverrides {
        listen: vec![],
        upstream_url: Some("http://chat.internal:3000".into()),
    };
    let config = authgate::config::Config::load_with(&source, &overrides).unwrap();
    let all_interfaces: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    assert_eq!(config.server.listen, vec![all_interfaces]);
    assert_eq!(
        config.metrics.listen,
        Some("0.0.0.0:9090".parse().unwrap()),
        "the HEALTHCHECK needs /readyz on the management listener"
    );
    assert_eq!(config.upstream.url, "http://chat.internal:3000");
    // The real CLI agrees; without the variable the file's upstream stays.
    let out = Command::new(authgate_bin())
        .args(["check-config", "--config"])
        .arg(etc.path().join("config.toml"))
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_LISTEN")
        .env("AUTHGATE_UPSTREAM", "http://chat.internal:3000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let defaults = authgate::config::Config::load(&source).unwrap();
    assert_eq!(defaults.upstream.url, "http://upstream:3000/");
}

#[test]
fn dockerfile_gives_var_lib_authgate_to_nonroot_as_a_volume_and_every_config_keeps_totp_secrets_there(
) {
    let dockerfile = dockerfile();
    assert!(dockerfile
        .lines()
        .any(|l| l == r#"VOLUME ["/var/lib/authgate"]"#));
    // distroless's nonroot is uid 65532; a named volume starts out owned as the image's folder.
    let copy = dockerfile
        .lines()
        .find(|l| l.starts_with("COPY ") && l.ends_with(" /var/lib/authgate"))
        .expect("the runtime stage creates /var/lib/authgate");
    assert!(copy.contains("--chown=65532:65532"), "{copy}");
    assert!(dockerfile.lines().any(|l| l == "USER nonroot"));

    for config in [
        "config.image.toml",
        "config.compose.toml",
        "config.rocketchat.toml",
    ] {
        let text = std::fs::read_to_string(docker_dir().join(config)).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        let secrets = value["totp"]["secrets_file"].as_str().unwrap_or_else(|| {
            panic!("{config} leaves totp.secrets_file in the read-only /etc/authgate")
        });
        assert!(
            secrets.starts_with("/var/lib/authgate/"),
            "{config}: {secrets}"
        );
    }
    for (file, replicas) in [
        ("compose.yml", &["authgate-1", "authgate-2"][..]),
        ("compose.rocketchat.yml", &["authgate"][..]),
    ] {
        let all = services(&compose_file(file));
        for name in replicas {
            let svc = &all[*name];
            assert_eq!(svc["read_only"].as_bool(), Some(true), "{file}: {name}");
            let state: Vec<_> = volume_mounts(svc)
                .into_iter()
                .filter(|(_, target, _)| target == "/var/lib/authgate")
                .collect();
            assert_eq!(
                state.len(),
                1,
                "{file}: {name} has no volume on /var/lib/authgate"
            );
            assert!(!state[0].2, "{file}: {name} mounts its state read-only");
            for v in svc["volumes"].as_sequence().unwrap() {
                let spec = s(v);
                assert!(
                    spec.ends_with(":ro") || spec.ends_with(":/var/lib/authgate"),
                    "{file}: {name} mounts {spec} writable"
                );
            }
        }
    }
    // Both replicas share one enrollment store.
    let all = services(&compose());
    assert_eq!(
        volume_mounts(&all["authgate-1"]),
        volume_mounts(&all["authgate-2"])
    );
}

/// slapd.conf `access` lines from the `olcAccess` values of an LDIF modification.
fn access_lines(acl_ldif: &str) -> String {
    acl_ldif
        .lines()
        .filter_map(|l| l.strip_prefix("olcAccess: "))
        .map(|rule| {
            let rule = rule.split_once('}').map_or(rule, |(_, r)| r);
            format!("access {rule}\n")
        })
        .collect()
}

/// The osixia/openldap image's own ACL on its database (before compose's acl.ldif): only the
/// admin reads entries.
const OSIXIA_IMAGE_ACL: &str = "olcAccess: {0}to attrs=userPassword,shadowLastChange by self write by dn=\"cn=admin,dc=example,dc=org\" write by anonymous auth by * none\n\
olcAccess: {1}to * by self read by dn=\"cn=admin,dc=example,dc=org\" write by * none\n";

/// A slapd holding what the compose LDAP holds on first start: the image's base entry, then
/// seed.ldif, under the given ACL.
fn compose_ldap(acl_ldif: &str) -> support::slapd::Slapd {
    let seed = std::fs::read_to_string(docker_dir().join("ldap/seed.ldif")).unwrap();
    let base = "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n";
    support::slapd::Slapd::start_with(support::slapd::SlapdOptions {
        directory: Some(support::slapd::CustomDirectory {
            access: access_lines(acl_ldif),
            ldif: format!("{base}{seed}"),
        }),
        ..Default::default()
    })
}

/// A gateway with config.compose.toml's `[directory.ldap]` (bind DN, password file, bases,
/// roles), pointed at `ldap`.
async fn gateway_with_the_compose_ldap_settings(ldap: &support::slapd::Slapd) -> support::Gateway {
    let text = std::fs::read_to_string(docker_dir().join("config.compose.toml")).unwrap();
    let compose_config: toml::Table = toml::from_str(&text).unwrap();
    let mut directory = compose_config["directory"].as_table().unwrap().clone();
    directory.remove("local");
    let ldap_table = directory["ldap"].as_table_mut().unwrap();
    ldap_table.insert("url".into(), ldap.url().into());
    let password_file = docker_dir().join(ldap_table["bind_password_file"].as_str().unwrap());
    ldap_table.insert(
        "bind_password_file".into(),
        password_file.display().to_string().into(),
    );
    let mut wrapper = toml::Table::new();
    wrapper.insert("directory".into(), toml::Value::Table(directory));
    // Logins are answered by the gateway itself; nothing is forwarded.
    let unused_upstream: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let body = support::config_text(unused_upstream, None, &wrapper.to_string());
    support::Gateway::start(&body, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn ldap_acl_ldif_lets_the_compose_service_account_find_alice_and_bob_in_a_local_slapd() {
    let acl = std::fs::read_to_string(docker_dir().join("ldap/acl.ldif")).unwrap();
    assert!(
        acl.contains("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcAccess\n")
    );
    let compose = services(&compose());
    assert!(
        bind_mounts(&compose["ldap"]).iter().any(|(host, target)| {
            host.ends_with("ldap/acl.ldif")
                && target
                    .starts_with("/container/service/slapd/assets/config/bootstrap/ldif/custom/6")
        }),
        "compose.yml does not load ldap/acl.ldif after the seed (50-seed.ldif)"
    );
    let ldap = compose_ldap(&acl);
    let gw = gateway_with_the_compose_ldap_settings(&ldap).await;
    for (user, password, roles) in [
        ("alice", "alice-ldap-password", vec!["user", "admin"]),
        ("bob", "bob-ldap-password", vec!["user"]),
    ] {
        let (status, body) = support::login_json(
            &gw.url(""),
            serde_json::json!({"user": user, "password": password}),
        )
        .await;
        assert_eq!(status, 200, "{user}: {body}");
        assert_eq!(body["status"], "success", "{body}");
        assert_eq!(body["data"]["me"]["username"], user, "{body}");
        let mut got: Vec<&str> = body["data"]["me"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        got.sort();
        let mut roles = roles;
        roles.sort();
        assert_eq!(got, roles, "{user}");
    }
    let (status, body) = support::login_json(
        &gw.url(""),
        serde_json::json!({"user": "alice", "password": "wrong"}),
    )
    .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_osixia_images_own_acl_leaves_the_compose_service_account_unable_to_find_anyone() {
    let ldap = compose_ldap(OSIXIA_IMAGE_ACL);
    let gw = gateway_with_the_compose_ldap_settings(&ldap).await;
    let (status, body) = support::login_json(
        &gw.url(""),
        serde_json::json!({"user": "alice", "password": "alice-ldap-password"}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
}

/// `KEY=VALUE` lines of an env file.
fn env_file(name: &str) -> BTreeMap<String, String> {
    std::fs::read_to_string(docker_dir().join(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn rocketchat_services() -> BTreeMap<String, Value> {
    services(&compose_file("compose.rocketchat.yml"))
}

/// Where the bootstrap job leaves the admin's files (its OUT_DIR), checked to be a named volume
/// that authgate mounts read-only at the same path.
fn bootstrap_out_dir(all: &BTreeMap<String, Value>) -> String {
    let out_dir = s(&all["rocketchat-bootstrap"]["environment"]["OUT_DIR"]).to_string();
    let written: Vec<_> = volume_mounts(&all["rocketchat-bootstrap"])
        .into_iter()
        .filter(|(_, target, ro)| *target == out_dir && !ro)
        .collect();
    assert_eq!(
        written.len(),
        1,
        "OUT_DIR {out_dir} is not a writable volume"
    );
    assert!(
        volume_mounts(&all["authgate"]).contains(&(written[0].0.clone(), out_dir.clone(), true)),
        "authgate does not mount {} read-only at {out_dir}",
        written[0].0
    );
    out_dir
}

#[test]
fn compose_rocketchat_yml_creates_the_admin_and_runs_the_bootstrap_before_authgate_with_an_example_user(
) {
    let all = rocketchat_services();
    for name in [
        "authgate",
        "rocketchat-bootstrap",
        "rocketchat",
        "mongodb",
        "redis",
    ] {
        assert!(all.contains_key(name), "no `{name}` service");
    }
    // Rocket.Chat creates its first admin from ADMIN_* and skips the setup wizard.
    let admin = env_file("rocketchat-admin.env");
    for key in ["ADMIN_USERNAME", "ADMIN_PASS", "ADMIN_EMAIL"] {
        assert!(admin.get(key).is_some_and(|v| !v.is_empty()), "{key}");
    }
    let rocketchat = &all["rocketchat"];
    for name in ["rocketchat", "rocketchat-bootstrap"] {
        assert_eq!(
            s(&all[name]["env_file"][0]),
            "rocketchat-admin.env",
            "{name}"
        );
    }
    assert!(
        all["authgate"]["env_file"].is_null(),
        "authgate needs no admin password"
    );
    let rc_env = &rocketchat["environment"];
    assert_eq!(
        s(&rc_env["OVERWRITE_SETTING_Show_Setup_Wizard"]),
        "completed"
    );
    assert_eq!(s(&rc_env["CREATE_TOKENS_FOR_USERS"]), "true");
    assert!(s(&rc_env["MONGO_URL"]).ends_with("?replicaSet=rs0"));
    // MongoDB is a replica set before Rocket.Chat starts.
    let mongodb = &all["mongodb"];
    let command: Vec<&str> = mongodb["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert!(
        command.windows(2).any(|w| w == ["--replSet", "rs0"]),
        "{command:?}"
    );
    let probe: Vec<&str> = mongodb["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert!(
        probe.iter().any(|p| p.contains("rs.initiate(")),
        "{probe:?}"
    );
    assert_eq!(
        s(&rocketchat["depends_on"]["mongodb"]["condition"]),
        "service_healthy"
    );

    // The bootstrap runs the script in this folder against Rocket.Chat, before authgate.
    let bootstrap = &all["rocketchat-bootstrap"];
    let entrypoint: Vec<&str> = bootstrap["entrypoint"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(entrypoint[0], "/bin/sh");
    assert!(bind_mounts(bootstrap).iter().any(|(host, target)| {
        host.ends_with("rocketchat-bootstrap.sh") && target == entrypoint[1]
    }));
    assert_eq!(
        s(&all["authgate"]["depends_on"]["rocketchat-bootstrap"]["condition"]),
        "service_completed_successfully"
    );
    let rc_url = s(&bootstrap["environment"]["ROCKETCHAT_URL"]);
    assert_eq!(
        rc_url,
        s(&all["authgate"]["environment"]["AUTHGATE_UPSTREAM"])
    );
    assert_eq!(rc_url, format!("http://rocketchat:{}", s(&rc_env["PORT"])));

    // authgate reads the admin's id and token where the bootstrap leaves them.
    let out_dir = bootstrap_out_dir(&all);
    let config: toml::Table = toml::from_str(
        &std::fs::read_to_string(docker_dir().join("config.rocketchat.toml")).unwrap(),
    )
    .unwrap();
    let upstream = config["upstream"].as_table().unwrap();
    assert_eq!(upstream["mode"].as_str(), Some("rocketchat"));
    assert_eq!(
        upstream["admin_user_id_file"].as_str(),
        Some(format!("{out_dir}/admin-user-id").as_str())
    );
    assert_eq!(
        upstream["admin_token_file"].as_str(),
        Some(format!("{out_dir}/admin-token").as_str())
    );
    let (out, _root) = check_config_as_the_container_sees_it(
        &all["authgate"],
        &[
            (&format!("{out_dir}/admin-user-id"), "RcAdminId12345678\n"),
            (&format!("{out_dir}/admin-token"), "personal-access-token\n"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Before the bootstrap ran, the files are missing, and authgate says which.
    let (out, _root) = check_config_as_the_container_sees_it(&all["authgate"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("`upstream.admin_user_id_file`: cannot read"),
        "{err}"
    );
    assert!(
        err.contains("`upstream.admin_token_file`: cannot read"),
        "{err}"
    );

    // Someone can log in: the mounted users file holds the example user the README names.
    let users_host = bind_mounts(&all["authgate"])
        .into_iter()
        .find(|(_, target)| target == "/etc/authgate/users.toml")
        .expect("a users file")
        .0;
    let users: toml::Table =
        toml::from_str(&std::fs::read_to_string(&users_host).unwrap()).unwrap();
    let users = users["users"].as_array().unwrap();
    assert!(!users.is_empty());
    let readme = std::fs::read_to_string(docker_dir().join("README.md")).unwrap();
    for user in users {
        assert!(readme.contains(user["username"].as_str().unwrap()));
    }
    for step in [
        "rocketchat-admin.env",
        "rocketchat-bootstrap",
        "users.rocketchat.toml",
        "authgate hash-password",
        "docker compose -f docker/compose.rocketchat.yml up --build",
    ] {
        assert!(
            readme.contains(step),
            "docker/README.md does not mention {step}"
        );
    }
}

/// What the stand-in for Rocket.Chat received: (method, path, headers, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, http::HeaderMap, String)>>>;

const RC_ADMIN_ID: &str = "RcAdminId12345678";
const RC_LOGIN_TOKEN: &str = "admin-login-token";
const RC_PERSONAL_TOKEN: &str = "admin-personal-access-token";

/// Just enough of Rocket.Chat's REST API for the bootstrap: info, login with the admin's
/// password, personal access tokens, /me and logout; every request is recorded.
async fn recording_rocketchat(admin_user: String, admin_password: String) -> (String, Received) {
    use http_body_util::BodyExt;
    let received: Received = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = (received.clone(), admin_user, admin_password);
    support::upstream::serve_http1(
        listener,
        state,
        |(received, user, password), req| async move {
            let (parts, body) = req.into_parts();
            let body =
                String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
            };
            let session_is =
                |token: &str| header("x-user-id") == RC_ADMIN_ID && header("x-auth-token") == token;
            let path = parts.uri.path().to_string();
            let (status, answer) = match (parts.method.as_str(), path.as_str()) {
                ("GET", "/api/info") => (
                    200,
                    serde_json::json!({"version": "7.6.0", "success": true}),
                ),
                ("POST", "/api/v1/login") => {
                    let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
                    if sent == serde_json::json!({"user": user, "password": password}) {
                        (
                            200,
                            serde_json::json!({"status": "success", "data": {"userId": RC_ADMIN_ID, "authToken": RC_LOGIN_TOKEN, "me": {"_id": RC_ADMIN_ID, "username": user}}}),
                        )
                    } else {
                        (
                            401,
                            serde_json::json!({"status": "error", "error": "Unauthorized"}),
                        )
                    }
                }
                ("POST", "/api/v1/users.removePersonalAccessToken")
                    if session_is(RC_LOGIN_TOKEN) =>
                {
                    (
                        400,
                        serde_json::json!({"success": false, "error": "not found"}),
                    )
                }
                ("POST", "/api/v1/users.generatePersonalAccessToken")
                    if session_is(RC_LOGIN_TOKEN) =>
                {
                    (
                        200,
                        serde_json::json!({"token": RC_PERSONAL_TOKEN, "success": true}),
                    )
                }
                ("POST", "/api/v1/logout") if session_is(RC_LOGIN_TOKEN) => {
                    (200, serde_json::json!({"status": "success"}))
                }
                ("GET", "/api/v1/me") if session_is(RC_PERSONAL_TOKEN) => (
                    200,
                    serde_json::json!({"_id": RC_ADMIN_ID, "success": true}),
                ),
                _ => (
                    401,
                    serde_json::json!({"status": "error", "message": "You must be logged in to do this."}),
                ),
            };
            received.lock().unwrap().push((
                parts.method.to_string(),
                path,
                parts.headers.clone(),
                body,
            ));
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    answer.to_string(),
                )))
                .unwrap()
        },
    );
    (url, received)
}

fn run_bootstrap(
    rc_url: &str,
    out_dir: &Path,
    admin: &BTreeMap<String, String>,
) -> std::process::Output {
    let id = |flag: &str| {
        let out = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    Command::new(support::which("sh"))
        .arg(docker_dir().join("rocketchat-bootstrap.sh"))
        .env("ROCKETCHAT_URL", rc_url)
        .env("OUT_DIR", out_dir)
        .env("OUT_OWNER", format!("{}:{}", id("-u"), id("-g")))
        .env("ADMIN_USERNAME", &admin["ADMIN_USERNAME"])
        .env("ADMIN_PASS", &admin["ADMIN_PASS"])
        .env("WAIT_SECONDS", "10")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rocketchat_bootstrap_sh_leaves_the_admin_id_and_one_personal_access_token_for_authgate() {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let admin = env_file("rocketchat-admin.env");
    let (rc_url, received) =
        recording_rocketchat(admin["ADMIN_USERNAME"].clone(), admin["ADMIN_PASS"].clone()).await;
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("bootstrap");

    let (first, second) = tokio::task::spawn_blocking({
        let (rc_url, out_dir, admin) = (rc_url.clone(), out_dir.clone(), admin.clone());
        move || {
            let first = run_bootstrap(&rc_url, &out_dir, &admin);
            let second = run_bootstrap(&rc_url, &out_dir, &admin);
            (first, second)
        }
    })
    .await
    .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for (name, value) in [
        ("admin-user-id", RC_ADMIN_ID),
        ("admin-token", RC_PERSONAL_TOKEN),
    ] {
        let path = out_dir.join(name);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{value}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400, "{name}");
    }
    let calls = received.lock().unwrap().clone();
    let made: Vec<_> = calls
        .iter()
        .filter(|(_, path, _, _)| path == "/api/v1/users.generatePersonalAccessToken")
        .collect();
    assert_eq!(made.len(), 1, "one token for both runs");
    let (_, _, headers, body) = made[0];
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"tokenName": "authgate", "bypassTwoFactor": true})
    );
    let password_digest: String = sha2::Sha256::digest(admin["ADMIN_PASS"].as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(headers["x-2fa-method"], "password");
    assert_eq!(headers["x-2fa-code"], password_digest.as_str());
    assert!(
        calls.iter().any(|(_, path, _, _)| path == "/api/v1/logout"),
        "the login session stays open"
    );
    // The second run found the token working and changed nothing.
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stdout).contains("still works"));

    // authgate's config reads exactly these files.
    let all = rocketchat_services();
    let container_dir = bootstrap_out_dir(&all);
    let files: Vec<(String, String)> = ["admin-user-id", "admin-token"]
        .iter()
        .map(|n| {
            (
                format!("{container_dir}/{n}"),
                std::fs::read_to_string(out_dir.join(n)).unwrap(),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let (checked, root) = check_config_as_the_container_sees_it(&all["authgate"], &files);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let config = authgate::config::Config::load(
        &authgate::config::ConfigSource::from_file(&root.path().join("etc/authgate/config.toml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config.upstream.admin_user_id, RC_ADMIN_ID);
    assert_eq!(
        authgate::config::ExposeSecret::expose_secret(&config.upstream.admin_token),
        RC_PERSONAL_TOKEN
    );
}
