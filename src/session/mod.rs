//! Sessions: 43-character CSPRNG tokens whose SHA-256 hash is the only thing ever stored.
//!
//! Two stores implement [`SessionStore`]: `memory` (one instance) and `redis` (shared by every
//! instance, on one server, Sentinel or Cluster, with an in-process cache of hot sessions). Both
//! pass the same contract tests (`tests/session_store.rs`).
//!
//! Layout: `token` (tokens and their hashes) and `store` (the session record and the store
//! trait) are the leaves every other file here builds on; this file only declares, re-exports
//! and picks the configured store, so nothing below imports it back.

mod cache;
pub mod command;
mod invalidation;
mod memory;
mod redis_conn;
mod redis_scripts;
mod redis_store;
mod store;
mod token;

pub use cache::SessionCache;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;
pub use store::{
    user_agent, DynSessionStore, PersonalToken, Session, SessionOrigin, SessionStore, StoreError,
    MAX_USER_AGENT_CHARS, NEVER_EXPIRES_MS,
};
pub use token::{now_unix_ms, Token, TokenHash, UpstreamToken};

use std::sync::Arc;

use crate::config::{SessionConfig, StoreKind};

pub fn build_store(config: &SessionConfig) -> Result<DynSessionStore, StoreError> {
    Ok(match config.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Redis => Arc::new(RedisStore::from_config(config)?),
    })
}
