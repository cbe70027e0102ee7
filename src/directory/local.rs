//! The local users file (`[[users]]` entries; the README's "Users file" section).

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    credentials_digest, fold, stable_user_id, AuthOutcome, Authenticated, CredentialsDigest,
    Directory, Identity, LoginGate, UserProfile,
};
use crate::config::{ConfigProblem, LocalDirectoryConfig};
use crate::directory::DirectoryError;
use crate::dummy_hash::{dummy_for, HashCost};
use crate::password::{check_hash_format, Password, Prehash, Verifier};

const ENTRY_KEYS: &str =
    "id, username, name, email, password_hash, password_prehash, roles, active, totp_secret";

#[derive(Debug, Deserialize)]
struct RawUser {
    id: Option<String>,
    username: String,
    name: Option<String>,
    email: Option<String>,
    password_hash: String,
    password_prehash: Option<String>,
    roles: Option<Vec<String>>,
    active: Option<bool>,
    totp_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LocalUser {
    pub profile: UserProfile,
    pub password_hash: String,
    pub password_prehash: Prehash,
    pub active: bool,
    pub totp_secret: Option<String>,
}

pub struct LocalDirectory {
    users: Vec<LocalUser>,
    by_username: HashMap<String, usize>,
    by_email: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    verifier: Verifier,
    /// Derived from the users' hashes (see `dummy_hash`), so it follows every reload.
    dummy: Option<(String, HashCost)>,
}

fn problem(
    file: &Path,
    key: String,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigProblem {
    ConfigProblem {
        key: format!("{}: {key}", file.display()),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The `[[users]]` entries that have the right shape, by index. Every entry is read on its own,
/// so one entry's unknown key or wrong type is reported next to the other entries' problems.
fn read_entries(
    path: &Path,
    text: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<(usize, RawUser)> {
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            problems.push(problem(
                path,
                "users".into(),
                e.message().to_string(),
                "correct the TOML syntax",
            ));
            return Vec::new();
        }
    };
    let mut entries = Vec::new();
    for (key, value) in table {
        if key != "users" {
            problems.push(problem(
                path,
                key,
                "unknown key",
                "the file holds only [[users]] entries",
            ));
            continue;
        }
        let toml::Value::Array(list) = value else {
            problems.push(problem(
                path,
                key,
                "not a list of entries",
                "write each user as a [[users]] table",
            ));
            continue;
        };
        for (i, entry) in list.into_iter().enumerate() {
            let name = entry
                .get("username")
                .and_then(toml::Value::as_str)
                .map(|n| format!(" (user `{n}`)"))
                .unwrap_or_default();
            let mut unknown = Vec::new();
            let parsed: Result<RawUser, _> =
                serde_ignored::deserialize(entry, |field| unknown.push(field.to_string()));
            for field in unknown {
                problems.push(problem(
                    path,
                    format!("users[{i}].{field}{name}"),
                    "unknown key",
                    format!("remove it or correct its spelling; an entry takes {ENTRY_KEYS}"),
                ));
            }
            match parsed {
                Ok(u) => entries.push((i, u)),
                Err(e) => problems.push(problem(
                    path,
                    format!("users[{i}]{name}"),
                    e.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
                    format!("each [[users]] entry takes {ENTRY_KEYS}, as strings (roles: a list, active: true/false)"),
                )),
            }
        }
    }
    entries
}

/// Reads and validates a users file, reporting every problem.
pub fn load_users(config: &LocalDirectoryConfig) -> Result<Vec<LocalUser>, Vec<ConfigProblem>> {
    let path = config.users_file.as_path();
    if config.missing_is_empty && !path.exists() {
        tracing::warn!(file = %path.display(), "no users file; the embedded default config runs with no users");
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigProblem {
            key: "directory.local.users_file".into(),
            problem: format!("cannot read {}: {e}", path.display()),
            fix: "create the file (it may hold no users) or correct the path; relative paths resolve against the config file's folder".into(),
        }]
    })?;
    let mut problems = Vec::new();
    let entries = read_entries(path, &text, &mut problems);
    let mut seen_names = HashMap::new();
    let mut seen_emails = HashMap::new();
    let mut seen_ids = HashMap::new();
    let mut users = Vec::new();
    for (i, u) in entries {
        let username = u.username.trim().to_string();
        let key = |field: &str| format!("users[{i}].{field} (user `{username}`)");
        if username.is_empty()
            || username.contains('@')
            || username.chars().any(char::is_whitespace)
        {
            problems.push(problem(
                path,
                key("username"),
                format!("`{username}` is not a usable username"),
                "use a name without spaces or '@'",
            ));
        }
        if let Some(prev) = seen_names.insert(fold(&username), i) {
            problems.push(problem(
                path,
                key("username"),
                format!("`{username}` repeats users[{prev}] (names match case-insensitively)"),
                "give every user a distinct username",
            ));
        }
        if let Err(why) = check_hash_format(&u.password_hash) {
            problems.push(problem(
                path,
                key("password_hash"),
                why,
                "generate one with `authgate hash-password`",
            ));
        }
        let email = u
            .email
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty());
        if let Some(e) = &email {
            if !e.contains('@') {
                problems.push(problem(
                    path,
                    key("email"),
                    format!("`{e}` is not an email address"),
                    "write name@domain or leave it out",
                ));
            }
            if let Some(prev) = seen_emails.insert(fold(e), i) {
                problems.push(problem(
                    path,
                    key("email"),
                    format!("`{e}` repeats users[{prev}]"),
                    "give every user a distinct email",
                ));
            }
        }
        // Seeded with the plain lower-case name, as before logins were compared in caseless
        // form, so existing users keep their ids (and sessions).
        let id =
            u.id.unwrap_or_else(|| stable_user_id("local", &username.trim().to_lowercase()));
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            problems.push(problem(
                path,
                key("id"),
                format!("`{id}` is not a usable id"),
                "use letters, digits, '.', '_' or '-' (or leave it out to derive one)",
            ));
        }
        if let Some(prev) = seen_ids.insert(id.clone(), i) {
            problems.push(problem(
                path,
                key("id"),
                format!("`{id}` repeats users[{prev}]"),
                "give every user a distinct id",
            ));
        }
        let totp_secret = u
            .totp_secret
            .map(|s| s.trim().replace(' ', "").to_uppercase())
            .filter(|s| !s.is_empty());
        if let Some(s) = &totp_secret {
            if let Err(why) = crate::totp::secret_problem(s) {
                problems.push(problem(path, key("totp_secret"), why, "use a base32 secret of at least 128 bits (26+ characters), e.g. from `authgate totp enroll`"));
            }
        }
        let password_prehash = match u.password_prehash.as_deref() {
            None => Prehash::None,
            Some("sha256") => Prehash::Sha256,
            Some(other) => {
                problems.push(problem(
                    path,
                    key("password_prehash"),
                    format!("`{other}` is not a prehash"),
                    "use \"sha256\" (Rocket.Chat's bcrypt over the SHA-256 hex) or leave it out",
                ));
                Prehash::None
            }
        };
        let roles = u.roles.unwrap_or_else(|| vec!["user".into()]);
        users.push(LocalUser {
            profile: UserProfile {
                id,
                name: u.name.unwrap_or_else(|| username.clone()),
                username,
                email,
                roles,
                directory: "local".into(),
            },
            password_hash: u.password_hash,
            password_prehash,
            active: u.active.unwrap_or(true),
            totp_secret,
        });
    }
    if problems.is_empty() {
        Ok(users)
    } else {
        Err(problems)
    }
}

impl LocalDirectory {
    pub fn new(users: Vec<LocalUser>, verifier: Verifier) -> Self {
        let mut by_username = HashMap::new();
        let mut by_email = HashMap::new();
        let mut by_id = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            by_username.insert(fold(&u.profile.username), i);
            if let Some(e) = &u.profile.email {
                by_email.insert(fold(e), i);
            }
            by_id.insert(u.profile.id.clone(), i);
        }
        let dummy = dummy_for(users.iter().map(|u| u.password_hash.as_str()));
        Self {
            users,
            by_username,
            by_email,
            by_id,
            verifier,
            dummy,
        }
    }

    /// The parameters unknown users are verified with (None: the verifier's own dummy).
    pub fn dummy_cost(&self) -> Option<&HashCost> {
        self.dummy.as_ref().map(|(_, cost)| cost)
    }

    fn find(&self, identity: &Identity) -> Option<&LocalUser> {
        let idx = match identity {
            Identity::Username(u) => self.by_username.get(&fold(u)),
            Identity::Email(e) => self.by_email.get(&fold(e)),
        };
        idx.map(|&i| &self.users[i])
    }
}

#[async_trait]
impl Directory for LocalDirectory {
    fn name(&self) -> &'static str {
        "local"
    }

    fn active_users(&self) -> Option<Vec<(String, CredentialsDigest)>> {
        Some(
            self.users
                .iter()
                .filter(|u| u.active)
                .map(|u| {
                    let prehash = match u.password_prehash {
                        Prehash::None => "",
                        Prehash::Sha256 => "sha256",
                    };
                    let totp = u.totp_secret.as_deref().unwrap_or("");
                    let digest = credentials_digest([u.password_hash.as_str(), prehash, totp]);
                    (u.profile.id.clone(), digest)
                })
                .collect(),
        )
    }

    async fn authenticate_gated(
        &self,
        identity: &Identity,
        password: &Password,
        gate: &mut dyn LoginGate,
    ) -> Result<AuthOutcome, DirectoryError> {
        let user = self.find(identity);
        if let Some(u) = user {
            gate.admit(&u.profile.id).await?;
        }
        // Unknown users are verified against a dummy hash with the parameters most users have,
        // so they cost what a wrong password costs.
        let stored = match (user, &self.dummy) {
            (Some(u), _) => Some((u.password_hash.as_str(), u.password_prehash)),
            (None, Some((dummy, _))) => Some((dummy.as_str(), Prehash::None)),
            (None, None) => None,
        };
        let ok = self.verifier.verify(password, stored).await? && user.is_some();
        Ok(match user {
            None => AuthOutcome::UnknownUser,
            Some(u) if ok && u.active => AuthOutcome::Authenticated(Authenticated {
                profile: u.profile.clone(),
                totp_secret: u.totp_secret.clone(),
            }),
            Some(_) => AuthOutcome::Rejected,
        })
    }

    async fn current_profile(
        &self,
        session: &UserProfile,
    ) -> Result<Option<UserProfile>, DirectoryError> {
        Ok(self
            .by_id
            .get(&session.id)
            .map(|&i| &self.users[i])
            .filter(|u| u.active)
            .map(|u| u.profile.clone()))
    }

    async fn current_user(
        &self,
        session: &UserProfile,
    ) -> Result<Option<Authenticated>, DirectoryError> {
        Ok(self
            .by_id
            .get(&session.id)
            .map(|&i| &self.users[i])
            .filter(|u| u.active)
            .map(|u| Authenticated {
                profile: u.profile.clone(),
                totp_secret: u.totp_secret.clone(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::password::HashPriority;

    fn argon2_hash(m: u32, t: u32) -> String {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let params = argon2::Params::new(m, t, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"pw", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    /// Loads a users file the way start and reload do.
    fn directory_from(dir: &Path, hashes: &[String]) -> LocalDirectory {
        let mut text = String::new();
        for (i, h) in hashes.iter().enumerate() {
            text.push_str(&format!(
                "[[users]]\nusername = \"user{i}\"\npassword_hash = \"{h}\"\n"
            ));
        }
        let path = dir.join("users.toml");
        std::fs::write(&path, text).unwrap();
        let config = LocalDirectoryConfig {
            users_file: path,
            missing_is_empty: false,
            watch: Duration::ZERO,
        };
        let users = load_users(&config).unwrap_or_else(|p| panic!("{p:?}"));
        let verifier = Verifier::new(1, Duration::from_secs(5), HashPriority::Normal);
        LocalDirectory::new(users, verifier)
    }

    #[tokio::test]
    async fn the_dummy_hash_follows_the_users_file_at_load_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        // Imported from Rocket.Chat: mostly bcrypt.
        let bcrypt5 = || bcrypt::hash("pw", 5).unwrap();
        let first = directory_from(dir.path(), &[bcrypt5(), argon2_hash(256, 1), bcrypt5()]);
        assert_eq!(first.dummy_cost(), Some(&HashCost::Bcrypt { cost: 5 }));
        let unknown = Identity::Username("nobody".into());
        let outcome = first
            .authenticate(&unknown, &Password::Plain("pw".into()))
            .await
            .unwrap();
        assert!(matches!(outcome, AuthOutcome::UnknownUser), "{outcome:?}");

        // Reloaded with hashes made by another tool.
        let second = directory_from(
            dir.path(),
            &[argon2_hash(512, 3), bcrypt5(), argon2_hash(512, 3)],
        );
        assert!(
            matches!(
                second.dummy_cost(),
                Some(HashCost::Argon2 {
                    memory_kib: 512,
                    passes: 3,
                    ..
                })
            ),
            "{:?}",
            second.dummy_cost()
        );
        // The dummy's own password never logs an unknown user in.
        let outcome = second
            .authenticate(
                &unknown,
                &Password::Plain("authgate dummy password for unknown users".into()),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, AuthOutcome::UnknownUser), "{outcome:?}");
    }
}
