//! Directories answer "who is this, and is this their password?". The local users file is one;
//! LDAP is another. The first directory that knows a login decides it.

pub mod ldap;
pub mod local;
pub mod names;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::password::{Password, VerifyError};
use crate::regulation::gate::RegulationError;
pub use crate::regulation::gate::{LoginGate, OpenGate};
pub use names::fold;

/// What the client typed to name itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Username(String),
    Email(String),
}

impl Identity {
    pub fn as_str(&self) -> &str {
        match self {
            Identity::Username(s) | Identity::Email(s) => s,
        }
    }
}

/// The identity a session carries and `me` is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub id: String,
    pub username: String,
    pub name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    /// The directory that authenticated the user (`local`, `ldap`).
    pub directory: String,
}

/// A user whose password was verified.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub profile: UserProfile,
    /// Base32 TOTP secret when the user must give a second factor.
    pub totp_secret: Option<String>,
}

#[derive(Debug)]
pub enum AuthOutcome {
    Authenticated(Authenticated),
    /// Known to this directory, but the credentials are wrong or the account is disabled.
    Rejected,
    /// Not known here: the next directory may decide.
    UnknownUser,
}

/// Why a directory could not decide a login or a lookup (a wrong password is no error: it is
/// `AuthOutcome::Rejected`).
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The directory's server does not answer, or answers something unusable.
    #[error("{0}")]
    Unavailable(String),
    /// The password could not be verified (hashing busy or broken).
    #[error(transparent)]
    Password(#[from] VerifyError),
    /// The login gate refused the user it was asked about.
    #[error(transparent)]
    Refused(#[from] RegulationError),
}

#[async_trait]
pub trait Directory: Send + Sync {
    fn name(&self) -> &'static str;
    async fn authenticate(
        &self,
        identity: &Identity,
        password: &Password,
    ) -> Result<AuthOutcome, DirectoryError> {
        self.authenticate_gated(identity, password, &mut OpenGate)
            .await
    }
    /// `authenticate`, asking `gate` about the user found before checking the password.
    async fn authenticate_gated(
        &self,
        identity: &Identity,
        password: &Password,
        gate: &mut dyn LoginGate,
    ) -> Result<AuthOutcome, DirectoryError>;
    /// The current profile of a user this directory issued a session for, or None when the user
    /// is gone or disabled (their sessions must then stop working). It takes the session's whole
    /// profile because some directories derive the id one way (LDAP) and find users by name.
    async fn current_profile(
        &self,
        session: &UserProfile,
    ) -> Result<Option<UserProfile>, DirectoryError>;
    /// The user a login names, without any password check, for operator commands; `None` when
    /// this directory does not know the login (or does not look users up one by one).
    async fn find(&self, _login: &str) -> Result<Option<UserProfile>, DirectoryError> {
        Ok(None)
    }
    /// Like `current_profile`, with the user's second-factor secret: what a step-up check
    /// (token management) verifies a code against.
    async fn current_user(
        &self,
        session: &UserProfile,
    ) -> Result<Option<Authenticated>, DirectoryError>;
    /// Whether the directory can answer now (a remote one: its server is reachable).
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
    /// Every user who may log in now, by id, with a digest of their credentials (password hash,
    /// TOTP secret), for directories that hold their whole user list (the users file); `None`
    /// for directories that are asked per login (LDAP).
    fn active_users(&self) -> Option<Vec<(String, CredentialsDigest)>> {
        None
    }
}

pub type DynDirectory = Arc<dyn Directory>;

/// The configured directories in order.
#[derive(Clone)]
pub struct Directories {
    list: Vec<DynDirectory>,
}

impl Directories {
    pub fn new(list: Vec<DynDirectory>) -> Self {
        Self { list }
    }

    /// The first directory that knows the login decides it; the answer names that directory
    /// (None when no directory knows the login).
    pub async fn authenticate(
        &self,
        identity: &Identity,
        password: &Password,
        gate: &mut dyn LoginGate,
    ) -> (Option<&'static str>, Result<AuthOutcome, DirectoryError>) {
        for d in &self.list {
            match d.authenticate_gated(identity, password, gate).await {
                Ok(AuthOutcome::UnknownUser) => continue,
                // A wrong password never falls through to the next directory.
                decided => return (Some(d.name()), decided),
            }
        }
        (None, Ok(AuthOutcome::UnknownUser))
    }

    /// How many users may log in through the named directory, for directories that hold their
    /// whole user list (the users file); `None` for the others or when it is not configured.
    pub fn user_count(&self, name: &str) -> Option<usize> {
        self.list
            .iter()
            .find(|d| d.name() == name)
            .and_then(|d| d.active_users())
            .map(|users| users.len())
    }

    /// Each directory's own readiness check, for `/readyz`, to be run concurrently.
    pub fn ready(
        &self,
    ) -> Vec<(
        &'static str,
        impl std::future::Future<Output = Result<(), String>> + '_,
    )> {
        self.list.iter().map(|d| (d.name(), d.ready())).collect()
    }

    /// Users whose sessions must end since `previous`, among the directories that know their
    /// whole user list: those who could log in then but no longer can (removed or disabled),
    /// and those given a new password or TOTP secret.
    pub fn users_to_sign_out_since(&self, previous: &Directories) -> Vec<SignOut> {
        let now: std::collections::HashMap<String, CredentialsDigest> = self
            .list
            .iter()
            .filter_map(|d| d.active_users())
            .flatten()
            .collect();
        previous
            .list
            .iter()
            .filter_map(|d| d.active_users())
            .flatten()
            .filter_map(|(id, before)| match now.get(&id) {
                None => Some(SignOut::Gone(id)),
                Some(after) if *after != before => Some(SignOut::NewCredentials(id, *after)),
                Some(_) => None,
            })
            .collect()
    }

    pub async fn current_profile(
        &self,
        profile: &UserProfile,
    ) -> Result<Option<UserProfile>, DirectoryError> {
        match self.list.iter().find(|d| d.name() == profile.directory) {
            Some(d) => d.current_profile(profile).await,
            None => Ok(None),
        }
    }

    pub async fn current_user(
        &self,
        profile: &UserProfile,
    ) -> Result<Option<Authenticated>, DirectoryError> {
        match self.list.iter().find(|d| d.name() == profile.directory) {
            Some(d) => d.current_user(profile).await,
            None => Ok(None),
        }
    }
}

/// Why a user's sessions end at a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignOut {
    /// Removed or disabled: no session of theirs may be used again.
    Gone(String),
    /// A new password or TOTP secret: the sessions issued before it end.
    NewCredentials(String, CredentialsDigest),
}

/// SHA-256 over a user's stored credentials: compared across a reload, never shown.
pub type CredentialsDigest = [u8; 32];

/// The digest of `parts`, each length-prefixed so that no two different lists collide by
/// concatenation.
pub fn credentials_digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> CredentialsDigest {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

const ID_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";

/// A stable 17-character id in Rocket.Chat's `Random.id()` alphabet, derived from `seed`.
pub fn stable_user_id(namespace: &str, seed: &str) -> String {
    let digest = Sha256::digest(format!("authgate:{namespace}:{seed}").as_bytes());
    digest
        .iter()
        .take(17)
        .map(|b| ID_ALPHABET[*b as usize % ID_ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_joins_lookalike_and_case_spellings() {
        assert_eq!(fold("ａｄa"), "ada");
        assert_eq!(fold(" ADA "), "ada");
        assert_eq!(fold("\u{1d41a}\u{1d41d}\u{1d41a}"), "ada");
        assert_eq!(fold("Straße"), fold("STRASSE"));
        assert_eq!(fold("Frank@Example.org"), "frank@example.org");
    }

    #[test]
    fn stable_ids_have_rocket_chat_form() {
        let a = stable_user_id("local", "alice");
        assert_eq!(a.len(), 17);
        assert!(a.bytes().all(|b| ID_ALPHABET.contains(&b)));
        assert_eq!(a, stable_user_id("local", "alice"));
        assert_ne!(a, stable_user_id("local", "bob"));
    }
}
