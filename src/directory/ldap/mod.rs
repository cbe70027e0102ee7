//! The LDAP directory (`[directory.ldap]`): search-then-bind.
//!
//! A service-bound connection finds the user's entry with `user_filter` (the login escaped per
//! RFC 4515, exactly one entry or nothing); the password is then checked by binding as that
//! entry's DN on a bind-only connection; groups found with `group_filter` map to roles. Every LDAP
//! fault (unreachable, refused, silent, TLS) is a 503, never a credential failure.

mod account_state;
mod entry;
mod pool;

use async_trait::async_trait;
use ldap3::{ldap_escape, SearchEntry};

use super::{
    stable_user_id, AuthOutcome, Authenticated, Directory, Identity, LoginGate, UserProfile,
};
use crate::config::{fill_placeholders as fill, LdapDirectoryConfig};
use crate::directory::DirectoryError;
use crate::password::Password;
use account_state::Moment;
use entry::{first_text, values};
use pool::{unavailable, BindOutcome, Pool};

pub struct LdapDirectory {
    config: LdapDirectoryConfig,
    pool: Pool,
    /// The attributes every user search asks for (`entryUUID` is operational: it must be named).
    attrs: Vec<String>,
    /// Role name and its group DNs, normalised for comparison.
    roles: Vec<(String, Vec<String>)>,
}

enum Lookup {
    Nobody,
    One(Box<SearchEntry>),
    Ambiguous,
}

/// What an entry says about its user, before groups.
struct EntryIdentity {
    id: String,
    username: String,
    name: String,
    email: Option<String>,
    totp_secret: Option<String>,
}

/// DNs compare case-insensitively and ignoring spaces around `,` `=` `+` (RFC 4514 allows them).
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut escaped = false;
    let mut skip_spaces = true;
    for c in dn.chars() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                out.push(c);
                escaped = true;
                skip_spaces = false;
            }
            ',' | '=' | '+' => {
                while out.ends_with(' ') && !out.ends_with("\\ ") {
                    out.pop();
                }
                out.push(c);
                skip_spaces = true;
            }
            ' ' if skip_spaces => {}
            _ => {
                out.extend(c.to_lowercase());
                skip_spaces = false;
            }
        }
    }
    while out.ends_with(' ') && !out.ends_with("\\ ") {
        out.pop();
    }
    out
}

/// The value the user id is derived from. Binary ids are hex-encoded; text ids are lower-cased
/// so a server that changes the case of a UUID does not change the user.
fn id_seed(entry: &SearchEntry, attr: &str, binary: bool) -> Option<String> {
    if binary {
        let bin = entry
            .bin_attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
            .flat_map(|(_, v)| v.iter())
            .find(|v| !v.is_empty())
            .map(|v| crate::hex::encode(v));
        // A binary value that happens to be valid UTF-8 lands among the text attributes.
        return bin.or_else(|| {
            values(entry, attr)
                .find(|v| !v.is_empty())
                .map(|v| crate::hex::encode(v.as_bytes()))
        });
    }
    first_text(entry, attr).map(|v| v.to_lowercase())
}

fn is_loopback_url(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

impl LdapDirectory {
    /// Builds the directory without contacting the server: authgate starts while LDAP is down.
    pub fn new(config: LdapDirectoryConfig) -> Result<LdapDirectory, String> {
        if config.url.starts_with("ldap://") && !config.starttls && !is_loopback_url(&config.url) {
            tracing::warn!(url = %config.url, "LDAP without TLS: passwords cross the network in clear; use ldaps:// or starttls = true");
        }
        let a = &config.attributes;
        let mut attrs = vec![
            a.id.clone(),
            a.username.clone(),
            a.name.clone(),
            a.email.clone(),
        ];
        attrs.extend(a.totp_secret.clone());
        attrs.extend(account_state::ATTRIBUTES.map(str::to_string));
        let roles = config
            .roles
            .iter()
            .map(|(role, dns)| (role.clone(), dns.iter().map(|d| normalize_dn(d)).collect()))
            .collect();
        Ok(LdapDirectory {
            pool: Pool::new(&config)?,
            config,
            attrs,
            roles,
        })
    }

    async fn lookup(&self, filter: &str) -> Result<Lookup, DirectoryError> {
        // Size limit 2: one entry is the user, a second one makes the login ambiguous.
        let (mut entries, result) = self
            .pool
            .search(&self.config.user_base, filter, &self.attrs, 2)
            .await?;
        match result.rc {
            0 => {}
            4 => return Ok(Lookup::Ambiguous),
            _ => return Err(unavailable(self.search_failure(&result))),
        }
        Ok(match entries.len() {
            0 => Lookup::Nobody,
            1 => Lookup::One(Box::new(entries.remove(0))),
            _ => Lookup::Ambiguous,
        })
    }

    /// Why a search of the user base that did not succeed cannot serve logins.
    fn search_failure(&self, result: &ldap3::LdapResult) -> String {
        match result.rc {
            32 => format!(
                "directory.ldap.user_base `{}` does not exist on the LDAP server",
                self.config.user_base
            ),
            rc => format!("LDAP user search answered result {rc} ({})", result.text),
        }
    }

    fn user_filter(&self, login: &str) -> String {
        fill(&self.config.user_filter, &[("login", &ldap_escape(login))])
    }

    fn identity_of(&self, entry: &SearchEntry) -> Result<EntryIdentity, String> {
        let a = &self.config.attributes;
        let seed = id_seed(entry, &a.id, a.id_is_binary())
            .ok_or_else(|| format!("the entry has no `{}` (directory.ldap.attributes.id)", a.id))?;
        let username = first_text(entry, &a.username).ok_or_else(|| {
            format!(
                "the entry has no `{}` (directory.ldap.attributes.username)",
                a.username
            )
        })?;
        let totp_secret = match &a.totp_secret {
            None => None,
            Some(attr) => match first_text(entry, attr) {
                None => None,
                Some(s) => {
                    let s = s.replace(' ', "").to_uppercase();
                    // An unusable secret refuses the login rather than skipping the second factor.
                    crate::totp::secret_problem(&s)
                        .map_err(|why| format!("its `{attr}` is unusable: {why}"))?;
                    Some(s)
                }
            },
        };
        Ok(EntryIdentity {
            id: stable_user_id("ldap", &seed),
            name: first_text(entry, &a.name).unwrap_or_else(|| username.clone()),
            email: first_text(entry, &a.email),
            username,
            totp_secret,
        })
    }

    /// Roles: `user`, plus each configured role one of whose groups the user is in.
    async fn roles_of(
        &self,
        dn: &str,
        login: &str,
        username: &str,
    ) -> Result<Vec<String>, DirectoryError> {
        let mut roles = vec!["user".to_string()];
        let Some(base) = self
            .config
            .group_base
            .as_deref()
            .filter(|_| !self.roles.is_empty())
        else {
            return Ok(roles);
        };
        let filter = fill(
            &self.config.group_filter,
            &[
                ("dn", &ldap_escape(dn)),
                ("login", &ldap_escape(login)),
                ("username", &ldap_escape(username)),
            ],
        );
        // "1.1": no attributes, the DNs are all that is needed.
        let (entries, result) = self
            .pool
            .search(base, &filter, &["1.1".to_string()], 0)
            .await?;
        match result.rc {
            0 => {}
            4 => {
                tracing::warn!(user = %username, "LDAP group search hit the server's size limit; roles may be incomplete")
            }
            32 => {
                return Err(unavailable(format!(
                    "directory.ldap.group_base `{base}` does not exist on the LDAP server"
                )))
            }
            rc => {
                return Err(unavailable(format!(
                    "LDAP group search answered result {rc} ({})",
                    result.text
                )))
            }
        }
        let groups: Vec<String> = entries.iter().map(|e| normalize_dn(&e.dn)).collect();
        for (role, dns) in &self.roles {
            if dns.iter().any(|d| groups.contains(d)) && !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        Ok(roles)
    }

    fn profile(&self, who: EntryIdentity, roles: Vec<String>) -> UserProfile {
        UserProfile {
            id: who.id,
            username: who.username,
            name: who.name,
            email: who.email,
            roles,
            directory: "ldap".into(),
        }
    }
}

#[async_trait]
impl Directory for LdapDirectory {
    fn name(&self) -> &'static str {
        "ldap"
    }

    /// Ready when the service account can search the user base, as every login does: connect,
    /// bind, and find the base (a base that does not exist fails every login).
    async fn ready(&self) -> Result<(), String> {
        let _slot = self.pool.slot().await.map_err(|e| e.to_string())?;
        let no_attributes = ["1.1".to_string()];
        let (_, result) = self
            .pool
            .search(&self.config.user_base, "(objectClass=*)", &no_attributes, 1)
            .await
            .map_err(|e| e.to_string())?;
        match result.rc {
            // 4: more entries than the size limit of one, which is the usual answer.
            0 | 4 => Ok(()),
            _ => Err(self.search_failure(&result)),
        }
    }

    async fn authenticate_gated(
        &self,
        identity: &Identity,
        password: &Password,
        gate: &mut dyn LoginGate,
    ) -> Result<AuthOutcome, DirectoryError> {
        // Before any LDAP call: a DN with an empty password is an unauthenticated bind, which
        // many servers (Active Directory among them) answer with success (RFC 4513 5.1.2).
        // Whitespace-only passwords are real passwords and go through unchanged.
        if password.is_empty() {
            return Ok(AuthOutcome::Rejected);
        }
        let login = identity.as_str();
        if login.is_empty() {
            return Ok(AuthOutcome::UnknownUser);
        }
        let _slot = self.pool.slot().await?;
        let entry = match self.lookup(&self.user_filter(login)).await? {
            Lookup::Nobody => return Ok(AuthOutcome::UnknownUser),
            Lookup::Ambiguous => {
                tracing::warn!(login = %login.escape_debug(), "the login matches more than one LDAP entry; refusing it (check directory.ldap.user_filter)");
                return Ok(AuthOutcome::Rejected);
            }
            Lookup::One(e) => e,
        };
        let identity = self.identity_of(&entry);
        // Before the bind, so that a user over budget costs the server no password check (nor
        // a bad-password count of its own).
        if let Ok(who) = &identity {
            gate.admit(&who.id).await?;
        }
        // Meteor's pre-hashed password form cannot be checked with a bind.
        let Password::Plain(plain) = password else {
            return Ok(AuthOutcome::Rejected);
        };
        if self.pool.bind(&entry.dn, plain).await? != BindOutcome::Accepted {
            return Ok(AuthOutcome::Rejected);
        }
        // A server that does not enforce the account's state itself (or a replica that has
        // not caught up) must not let in an account its entry marks as unusable.
        if let Some(why) = account_state::refusal(&entry, Moment::AfterBind) {
            tracing::info!(dn = ?entry.dn, why, "LDAP account cannot log in");
            return Ok(AuthOutcome::Rejected);
        }
        let who = match identity {
            Ok(w) => w,
            Err(why) => {
                tracing::warn!(dn = %entry.dn.escape_debug(), %why, "LDAP entry cannot log in");
                return Ok(AuthOutcome::Rejected);
            }
        };
        let roles = self.roles_of(&entry.dn, login, &who.username).await?;
        let totp_secret = who.totp_secret.clone();
        Ok(AuthOutcome::Authenticated(Authenticated {
            profile: self.profile(who, roles),
            totp_secret,
        }))
    }

    /// The profile of the entry a login names, without checking any password: for operator
    /// commands that must tell a real LDAP user from a typo.
    async fn find(&self, login: &str) -> Result<Option<UserProfile>, DirectoryError> {
        if login.is_empty() {
            return Ok(None);
        }
        let _slot = self.pool.slot().await?;
        let Lookup::One(entry) = self.lookup(&self.user_filter(login)).await? else {
            return Ok(None);
        };
        let Ok(who) = self.identity_of(&entry) else {
            return Ok(None);
        };
        let roles = self.roles_of(&entry.dn, login, &who.username).await?;
        Ok(Some(self.profile(who, roles)))
    }

    async fn current_profile(
        &self,
        session: &UserProfile,
    ) -> Result<Option<UserProfile>, DirectoryError> {
        Ok(self.current_user(session).await?.map(|u| u.profile))
    }

    async fn current_user(
        &self,
        session: &UserProfile,
    ) -> Result<Option<Authenticated>, DirectoryError> {
        if session.directory != self.name() || session.username.is_empty() {
            return Ok(None);
        }
        let _slot = self.pool.slot().await?;
        // The id is a one-way hash, so the user is found by name and must still have that id:
        // a renamed, deleted or re-created entry ends the session.
        let filter = format!(
            "(&{}({}={}))",
            self.user_filter(&session.username),
            self.config.attributes.username,
            ldap_escape(session.username.as_str())
        );
        let Lookup::One(entry) = self.lookup(&filter).await? else {
            return Ok(None);
        };
        let who = match self.identity_of(&entry) {
            Ok(w) if w.id == session.id => w,
            _ => return Ok(None),
        };
        // Expired, locked out or disabled: the server would refuse a bind, so the session ends.
        if let Some(why) = account_state::refusal(&entry, Moment::Revalidation) {
            tracing::info!(dn = ?entry.dn, why, "LDAP account can no longer log in; ending its sessions");
            return Ok(None);
        }
        let roles = self
            .roles_of(&entry.dn, &session.username, &who.username)
            .await?;
        let totp_secret = who.totp_secret.clone();
        Ok(Some(Authenticated {
            profile: self.profile(who, roles),
            totp_secret,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn dns_compare_loosely() {
        assert_eq!(
            normalize_dn("CN=Chat-Admins, OU=Groups ,dc=Example,dc=org"),
            "cn=chat-admins,ou=groups,dc=example,dc=org"
        );
        assert_eq!(normalize_dn("cn=a\\, b,dc=x"), "cn=a\\, b,dc=x");
        assert_eq!(normalize_dn("cn=trailing\\ ,dc=x"), "cn=trailing\\ ,dc=x");
    }

    #[test]
    fn binary_ids_are_hex_encoded_wherever_they_land() {
        let guid = vec![0x10u8, 0xff, 0x00, 0x7a];
        let mut e = SearchEntry {
            dn: "cn=x".into(),
            attrs: HashMap::new(),
            bin_attrs: HashMap::from([("objectGUID".to_string(), vec![guid])]),
        };
        assert_eq!(id_seed(&e, "objectguid", true).as_deref(), Some("10ff007a"));
        e.bin_attrs.clear();
        e.attrs.insert("objectGUID".into(), vec!["AB".into()]);
        assert_eq!(id_seed(&e, "objectGUID", true).as_deref(), Some("4142"));
        e.attrs.insert("entryUUID".into(), vec!["5F3C-AB".into()]);
        assert_eq!(id_seed(&e, "entryuuid", false).as_deref(), Some("5f3c-ab"));
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("ldap://127.0.0.1:389"));
        assert!(is_loopback_url("ldap://localhost"));
        assert!(!is_loopback_url("ldap://ldap.example.org:389"));
    }
}
