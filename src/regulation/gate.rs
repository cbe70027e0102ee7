//! What regulation and the directories agree on: the gate a directory asks with the user it
//! resolved before checking a password, and why regulation refuses. A leaf, so the directories
//! can depend on it without depending on the counters behind it.

use async_trait::async_trait;

/// Which counter refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedBy {
    User,
    Ip,
}

/// Why regulation refused or could not decide an attempt.
#[derive(Debug, thiserror::Error)]
pub enum RegulationError {
    #[error("login blocked ({0:?})")]
    Blocked(BlockedBy),
    /// The counters could not be read or written: the attempt is refused, never let through.
    #[error("{0}")]
    Store(String),
}

/// Asked with the id of the user a login resolves to, after the directory found the user and
/// before it checks the password: regulation's per-user budget, whichever name was typed. An
/// error refuses the login with the password unchecked.
#[async_trait]
pub trait LoginGate: Send {
    async fn admit(&mut self, user_id: &str) -> Result<(), RegulationError>;
}

/// A gate that admits every user (checks outside a login, tests).
pub struct OpenGate;

#[async_trait]
impl LoginGate for OpenGate {
    async fn admit(&mut self, _user_id: &str) -> Result<(), RegulationError> {
        Ok(())
    }
}
