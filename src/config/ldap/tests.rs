use super::*;
use crate::config::DirectoryKind;

fn load(
    text: &str,
    base_dir: &std::path::Path,
) -> Result<crate::config::Config, crate::config::ConfigError> {
    crate::config::Config::load(&crate::config::ConfigSource {
        name: "test".into(),
        text: text.into(),
        base_dir: base_dir.to_path_buf(),
        embedded: false,
    })
}

#[test]
fn fill_is_single_pass() {
    assert_eq!(
        fill(
            "(&(member={dn})(uid={login}))",
            &[("dn", "{login}"), ("login", "a\\2a")]
        ),
        "(&(member={login})(uid=a\\2a))"
    );
    assert_eq!(fill("(x={unknown})", &[("login", "v")]), "(x={unknown})");
    assert_eq!(placeholders("(&(a={dn})(b={login}))"), vec!["dn", "login"]);
}

/// The commented LDAP reference in config.toml, uncommented, is a valid config.
#[test]
fn the_reference_ldap_section_is_valid() {
    let is_key = |l: &str| {
        l.starts_with("[directory")
            || l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    };
    let full = crate::config::EMBEDDED_DEFAULT;
    let start = full
        .find("# Directories are asked")
        .expect("directory docs");
    let end = full.find("\n[routes]").expect("routes");
    let text: String = full[start..end]
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_key(rest) => rest,
            _ => l,
        })
        // Files that do not exist here, and the file alternative to bind_password.
        .filter(|l| !l.starts_with("ca_file") && !l.starts_with("bind_password_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.contains("\n[directory.ldap]\n") && text.contains("\norder = "));
    let source = crate::config::ConfigSource {
        name: "uncommented config.toml".into(),
        text,
        base_dir: std::path::PathBuf::from("."),
        embedded: false,
    };
    let config = crate::config::Config::load(&source).unwrap_or_else(|e| panic!("{e}"));
    let ldap = config.directory.ldap.expect("ldap section");
    assert_eq!(ldap.roles.len(), 1);
    assert_eq!(
        ldap.attributes.totp_secret.as_deref(),
        Some("authgateTotpSecret")
    );
    assert_eq!(
        config.directory.order,
        [DirectoryKind::Local, DirectoryKind::Ldap]
    );
    // As checked in, only the local directory is configured.
    let plain =
        crate::config::Config::load(&crate::config::ConfigSource::embedded_default()).unwrap();
    assert!(plain.directory.ldap.is_none());
    assert_eq!(plain.directory.order, [DirectoryKind::Local]);
}

#[test]
fn urls() {
    assert!(check_url("ldap://127.0.0.1:389").is_ok());
    assert!(check_url("ldaps://ldap.example.org").is_ok());
    assert!(check_url("ldaps://ldap.example.org/").is_ok());
    assert!(check_url("http://ldap.example.org").is_err());
    assert!(check_url("ldapi:///var/run/slapd.sock").is_err());
    assert!(check_url("ldap://").is_err());
    assert!(check_url("ldap://h/dc=example?uid").is_err());
}

#[test]
fn every_preset_has_valid_filters_and_attributes() {
    for p in [
        LdapPreset::OpenLdap,
        LdapPreset::ActiveDirectory,
        LdapPreset::FreeIpa,
        LdapPreset::Lldap,
    ] {
        let d = p.defaults();
        let mut problems = Vec::new();
        check_filter(
            "user_filter",
            d.user_filter,
            &["login"],
            &["login"],
            &mut problems,
        );
        check_filter(
            "group_filter",
            d.group_filter,
            &["dn", "login", "username"],
            &["dn", "login", "username"],
            &mut problems,
        );
        assert!(problems.is_empty(), "{p:?}: {problems:?}");
        for a in [d.id, d.username, d.name, d.email] {
            assert!(valid_attribute(a), "{a}");
        }
    }
    let ad = LdapPreset::ActiveDirectory.defaults();
    let attrs = LdapAttributes {
        id: ad.id.into(),
        username: ad.username.into(),
        name: ad.name.into(),
        email: ad.email.into(),
        totp_secret: None,
    };
    assert!(attrs.id_is_binary());
}

#[test]
fn config_problems_name_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let local = "[directory.local]\nusers_file = \"users.toml\"\n";
    let cases: &[(&str, &[&str])] = &[
        ("[directory.ldap]\nuser_base = \"ou=people,dc=x\"\npreset = \"novell\"\n", &["directory.ldap.preset"]),
        ("[directory.ldap]\nurl = \"ldap://h\"\n", &["directory.ldap.user_base"]),
        ("[directory.ldap]\nurl = \"http://h\"\nuser_base = \"dc=x\"\n", &["directory.ldap.url"]),
        ("[directory.ldap]\nurl = \"ldapi:///run/slapd\"\nuser_base = \"dc=x\"\n", &["directory.ldap.url"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\nuser_filter = \"(uid=alice)\"\n", &["directory.ldap.user_filter"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\nuser_filter = \"(uid={user})\"\n", &["directory.ldap.user_filter"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\nuser_filter = \"uid={login}\"\n", &["directory.ldap.user_filter"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\ngroup_filter = \"(member={dm})\"\n", &["directory.ldap.group_filter"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\nbind_dn = \"cn=svc,dc=x\"\n", &["directory.ldap.bind_password"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\nbind_password_file = \"missing.secret\"\nbind_dn = \"cn=a\"\n", &["directory.ldap.bind_password_file"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\nstarttls = true\nurl = \"ldaps://h\"\n", &["directory.ldap.starttls"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\nca_file = \"users.toml\"\n", &["directory.ldap.ca_file"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\ntimeout = \"soon\"\npool_size = 0\n", &["directory.ldap.timeout", "directory.ldap.pool_size"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\n[directory.ldap.roles]\nadmin = [\"cn=admins,dc=x\"]\n", &["directory.ldap.group_base"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\ngroup_base = \"dc=x\"\n[directory.ldap.roles]\nadmin = [\"admins\"]\n", &["directory.ldap.roles.admin"]),
        ("[directory.ldap]\nuser_base = \"dc=x\"\n[directory.ldap.attributes]\nid = \"entry UUID\"\n", &["directory.ldap.attributes.id"]),
        ("[directory]\norder = [\"ldap\", \"ad\"]\n", &["directory.order[0]", "directory.order[1]", "directory.order"]),
    ];
    for (extra, keys) in cases {
        let text = format!("{local}{extra}");
        let err = load(&text, dir.path()).expect_err(extra);
        let found: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for k in *keys {
            assert!(
                found
                    .iter()
                    .any(|f| f == k || f.starts_with(&format!("{k} "))),
                "{extra}: want {k}, got {found:?}"
            );
        }
        assert!(err.problems.iter().all(|p| !p.fix.is_empty()));
    }
    // Unknown keys inside the section are reported too.
    let err = load(
        &format!(
            "{local}[directory.ldap]\nuser_base = \"dc=x\"\nsearch_filter = \"(uid={{login}})\"\n"
        ),
        dir.path(),
    )
    .unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.key.ends_with("search_filter") && p.problem == "unknown key"),
        "{err}"
    );
    // LDAP alone is a complete directory configuration, and the presets load.
    for preset in ["openldap", "active-directory", "freeipa", "lldap"] {
        let text = format!("[directory.ldap]\npreset = \"{preset}\"\nurl = \"ldaps://dc.example.org\"\nbind_dn = \"cn=svc,dc=x\"\nbind_password = \"pw\"\nuser_base = \"dc=x\"\n");
        let c = load(&text, dir.path()).unwrap_or_else(|e| panic!("{preset}: {e}"));
        let ldap = c.directory.ldap.unwrap();
        assert_eq!(c.directory.order.len(), 1);
        if preset == "active-directory" {
            assert_eq!(ldap.attributes.id, "objectGUID");
            assert_eq!(ldap.attributes.username, "sAMAccountName");
            assert!(ldap.user_filter.contains("sAMAccountName={login}"));
        }
    }
    // The bind password never shows in Debug output.
    let text = format!("{local}[directory.ldap]\nbind_dn = \"cn=svc,dc=x\"\nbind_password = \"hunter2-secret\"\nuser_base = \"dc=x\"\n");
    let c = load(&text, dir.path()).unwrap();
    assert!(!format!("{c:?}").contains("hunter2-secret"));
}
