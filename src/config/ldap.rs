//! `[directory.ldap]` and `[directory] order`: the raw keys, presets, and their validation into
//! [`LdapDirectoryConfig`]. Like the rest of the config, every problem is collected with its key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::problem::{count_or, duration_or, problem, resolve_path, ConfigProblem};
use super::secret::{secret, ExposeSecret, SecretString};

mod presets;

pub use presets::LdapPreset;

#[derive(Debug, Default, Deserialize)]
pub struct RawLdapDirectory {
    pub preset: Option<String>,
    pub url: Option<String>,
    pub starttls: Option<bool>,
    pub ca_file: Option<String>,
    pub timeout: Option<String>,
    pub pool_size: Option<i64>,
    pub bind_dn: Option<String>,
    pub bind_password: Option<SecretString>,
    pub bind_password_file: Option<String>,
    pub user_base: Option<String>,
    pub user_filter: Option<String>,
    pub group_base: Option<String>,
    pub group_filter: Option<String>,
    pub roles: Option<BTreeMap<String, Vec<String>>>,
    pub attributes: Option<RawLdapAttributes>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLdapAttributes {
    pub id: Option<String>,
    pub username: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub totp_secret: Option<String>,
}

/// Which entry attributes make up a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapAttributes {
    pub id: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub totp_secret: Option<String>,
}

impl LdapAttributes {
    /// Binary ids (Active Directory's objectGUID, objectSid) are hex-encoded before hashing.
    pub fn id_is_binary(&self) -> bool {
        ["objectGUID", "objectSid"]
            .iter()
            .any(|b| b.eq_ignore_ascii_case(&self.id))
    }
}

#[derive(Clone)]
pub struct LdapDirectoryConfig {
    pub preset: LdapPreset,
    pub url: String,
    pub starttls: bool,
    /// DER certificates from `ca_file`; empty means the system's roots.
    pub ca_certs: Vec<Vec<u8>>,
    pub timeout: Duration,
    pub pool_size: usize,
    /// Empty: search anonymously.
    pub bind_dn: String,
    pub bind_password: SecretString,
    pub user_base: String,
    pub user_filter: String,
    pub group_base: Option<String>,
    pub group_filter: String,
    /// Role name and the group DNs that grant it.
    pub roles: Vec<(String, Vec<String>)>,
    pub attributes: LdapAttributes,
}

impl fmt::Debug for LdapDirectoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapDirectoryConfig")
            .field("preset", &self.preset)
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("ca_certs", &self.ca_certs.len())
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &self.bind_password)
            .field("user_base", &self.user_base)
            .field("user_filter", &self.user_filter)
            .field("group_base", &self.group_base)
            .field("group_filter", &self.group_filter)
            .field("roles", &self.roles)
            .field("attributes", &self.attributes)
            .finish()
    }
}

const KEY: &str = "directory.ldap";

fn key(k: &str) -> String {
    format!("{KEY}.{k}")
}

/// The `{name}` placeholders in a filter template, in order.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    out
}

/// Fills `{name}` placeholders in one pass, so a value that itself contains `{dn}` stays literal.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let value = after.find('}').and_then(|end| {
            let name = &after[1..end];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v, end))
        });
        match value {
            Some((v, end)) => {
                out.push_str(v);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn check_filter(
    k: &str,
    template: &str,
    allowed: &[&str],
    required: &[&str],
    problems: &mut Vec<ConfigProblem>,
) {
    let names = placeholders(template);
    for n in &names {
        if !allowed.contains(n) {
            problems.push(problem(
                &key(k),
                format!("unknown placeholder `{{{n}}}`"),
                format!(
                    "use only {}",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if !required.iter().any(|r| names.contains(r)) {
        problems.push(problem(
            &key(k),
            format!(
                "`{template}` has no {} placeholder, so it would match the same entries for everyone",
                required
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            "put the placeholder where the value belongs, e.g. (uid={login})",
        ));
    }
    let sample: Vec<(&str, &str)> = allowed.iter().map(|a| (*a, "x")).collect();
    // Parentheses are required (RFC 4515), so the filter can be nested in `(&...)`.
    let t = template.trim();
    if !(t.starts_with('(') && t.ends_with(')')) || ldap3::parse_filter(fill(t, &sample)).is_err() {
        problems.push(problem(
            &key(k),
            format!("`{template}` is not an LDAP filter (RFC 4515)"),
            "write a parenthesised filter, e.g. (&(objectClass=inetOrgPerson)(uid={login}))",
        ));
    }
}

fn looks_like_dn(s: &str) -> bool {
    s.contains('=') && !s.trim().is_empty()
}

/// An attribute description: a name (letters, digits, '-') or a numeric OID.
fn valid_attribute(a: &str) -> bool {
    let name = a.starts_with(|c: char| c.is_ascii_alphabetic())
        && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !a.is_empty() && a.chars().all(|c| c.is_ascii_digit() || c == '.');
    name || oid
}

/// Checks an `ldap://` or `ldaps://` URL with a host and nothing after the port.
fn check_url(url: &str) -> Result<(), String> {
    let scheme_ok = url.starts_with("ldap://") || url.starts_with("ldaps://");
    let parsed = url.parse::<http::Uri>().ok();
    match parsed {
        Some(u)
            if scheme_ok
                && u.host().is_some_and(|h| !h.is_empty())
                && matches!(u.path(), "" | "/")
                && u.query().is_none()
                && u.authority().is_some_and(|a| !a.as_str().contains('@')) =>
        {
            Ok(())
        }
        _ if !scheme_ok => Err(format!("`{url}` is not an ldap:// or ldaps:// URL")),
        _ => Err(format!("`{url}` is not a plain ldap URL")),
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    let mut roots = rustls_ldap::RootCertStore::empty();
    for c in &certs {
        roots
            .add(&rustls_ldap::Certificate(c.clone()))
            .map_err(|e| format!("{} holds an unusable certificate: {e}", path.display()))?;
    }
    Ok(certs)
}

fn bind_password(
    raw: &RawLdapDirectory,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> SecretString {
    let inline = raw
        .bind_password
        .as_ref()
        .map(|p| p.expose_secret().to_owned());
    let env = "AUTHGATE_DIRECTORY_LDAP_BIND_PASSWORD";
    let password = secret(
        &key("bind_password"),
        inline,
        raw.bind_password_file.as_ref(),
        env,
        base,
        problems,
    );
    SecretString::from(password.unwrap_or_default())
}

pub(super) fn validate_ldap(
    raw: RawLdapDirectory,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> LdapDirectoryConfig {
    let preset = match raw.preset.as_deref() {
        None => LdapPreset::OpenLdap,
        Some(p) => LdapPreset::parse(p).unwrap_or_else(|| {
            problems.push(problem(
                &key("preset"),
                format!("`{p}` is not a preset"),
                "use \"openldap\", \"active-directory\", \"freeipa\" or \"lldap\"",
            ));
            LdapPreset::OpenLdap
        }),
    };
    let d = preset.defaults();
    let url = raw
        .url
        .clone()
        .unwrap_or_else(|| "ldap://127.0.0.1:389".into());
    if let Err(why) = check_url(&url) {
        problems.push(problem(
            &key("url"),
            why,
            "write ldap://host[:port] (plain or with starttls = true) or ldaps://host[:port]",
        ));
    }
    let ldaps = url.starts_with("ldaps://");
    let starttls = raw.starttls.unwrap_or(false);
    if starttls && ldaps {
        problems.push(problem(
            &key("starttls"),
            "starttls = true with an ldaps:// URL",
            "use either ldaps:// or ldap:// with starttls = true",
        ));
    }
    let mut ca_certs = Vec::new();
    if let Some(f) = &raw.ca_file {
        if !ldaps && !starttls {
            problems.push(problem(
                &key("ca_file"),
                "ca_file is set but the connection does not use TLS",
                "use an ldaps:// URL or starttls = true, or remove ca_file",
            ));
        }
        match read_ca_file(&resolve_path(base, f)) {
            Ok(c) => ca_certs = c,
            Err(why) => problems.push(problem(
                &key("ca_file"),
                why,
                "point it at the PEM file of the CA that signed the LDAP server's certificate",
            )),
        }
    }
    let bind_dn = raw.bind_dn.clone().unwrap_or_default().trim().to_string();
    let bind_password = bind_password(&raw, base, problems);
    if !bind_dn.is_empty() && bind_password.expose_secret().is_empty() {
        problems.push(problem(
            &key("bind_password"),
            "bind_dn is set without a password (an empty password makes an unauthenticated bind)",
            "set bind_password, bind_password_file or AUTHGATE_DIRECTORY_LDAP_BIND_PASSWORD",
        ));
    }
    if bind_dn.is_empty() && !bind_password.expose_secret().is_empty() {
        problems.push(problem(
            &key("bind_dn"),
            "a bind password is set without bind_dn",
            "name the service account, e.g. bind_dn = \"cn=authgate,ou=services,dc=example,dc=org\"",
        ));
    }
    let user_base = raw.user_base.clone().unwrap_or_default().trim().to_string();
    if !looks_like_dn(&user_base) {
        problems.push(problem(
            &key("user_base"),
            if user_base.is_empty() {
                "missing".to_string()
            } else {
                format!("`{user_base}` is not a DN")
            },
            "name the subtree holding the users, e.g. user_base = \"ou=people,dc=example,dc=org\"",
        ));
    }
    let user_filter = raw
        .user_filter
        .clone()
        .unwrap_or_else(|| d.user_filter.into());
    check_filter(
        "user_filter",
        &user_filter,
        &["login"],
        &["login"],
        problems,
    );
    let group_filter = raw
        .group_filter
        .clone()
        .unwrap_or_else(|| d.group_filter.into());
    let group_vars = ["dn", "login", "username"];
    check_filter(
        "group_filter",
        &group_filter,
        &group_vars,
        &group_vars,
        problems,
    );
    let group_base = raw
        .group_base
        .clone()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty());
    if let Some(g) = &group_base {
        if !looks_like_dn(g) {
            problems.push(problem(
                &key("group_base"),
                format!("`{g}` is not a DN"),
                "name the subtree holding the groups, e.g. \"ou=groups,dc=example,dc=org\"",
            ));
        }
    }
    let mut roles = Vec::new();
    for (role, dns) in raw.roles.clone().unwrap_or_default() {
        let k = key(&format!("roles.{role}"));
        if role.trim().is_empty() || role.chars().any(char::is_whitespace) {
            problems.push(problem(
                &k,
                format!("`{role}` is not a usable role name"),
                "use a name without spaces, e.g. admin",
            ));
        }
        if dns.is_empty() {
            problems.push(problem(
                &k,
                "no group DN given",
                "list the groups whose members get this role",
            ));
        }
        for dn in &dns {
            if !looks_like_dn(dn) {
                problems.push(problem(
                    &k,
                    format!("`{dn}` is not a DN"),
                    "write full group DNs, e.g. \"cn=chat-admins,ou=groups,dc=example,dc=org\"",
                ));
            }
        }
        roles.push((role, dns));
    }
    if !roles.is_empty() && group_base.is_none() {
        problems.push(problem(
            &key("group_base"),
            "roles are mapped from groups but group_base is missing",
            "name the subtree holding the groups, e.g. group_base = \"ou=groups,dc=example,dc=org\"",
        ));
    }
    let a = raw.attributes.as_ref();
    let mut attribute = |name: &str, value: Option<&String>, default: &str| {
        let v = value
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| default.to_string());
        if !valid_attribute(&v) {
            problems.push(problem(
                &key(&format!("attributes.{name}")),
                format!("`{v}` is not an attribute name"),
                "write an attribute type such as uid, mail or entryUUID",
            ));
        }
        v
    };
    let attributes = LdapAttributes {
        id: attribute("id", a.and_then(|a| a.id.as_ref()), d.id),
        username: attribute("username", a.and_then(|a| a.username.as_ref()), d.username),
        name: attribute("name", a.and_then(|a| a.name.as_ref()), d.name),
        email: attribute("email", a.and_then(|a| a.email.as_ref()), d.email),
        totp_secret: a
            .and_then(|a| a.totp_secret.as_ref())
            .map(|t| attribute("totp_secret", Some(t), "")),
    };
    LdapDirectoryConfig {
        preset,
        url,
        starttls,
        ca_certs,
        timeout: duration_or(
            &key("timeout"),
            raw.timeout.as_ref(),
            Duration::from_secs(5),
            Duration::from_millis(10),
            problems,
        ),
        pool_size: count_or(&key("pool_size"), raw.pool_size, 4, 1, 256, problems),
        bind_dn,
        bind_password,
        user_base,
        user_filter,
        group_base,
        group_filter,
        roles,
        attributes,
    }
}

#[cfg(test)]
mod tests;
