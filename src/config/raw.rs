//! The config file as written by an operator: every field optional, no semantics yet.
//! `super::validate` turns it into the typed `Config` and reports every problem at once.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub server: Option<RawServer>,
    pub upstream: Option<RawUpstream>,
    pub session: Option<super::session::RawSession>,
    pub directory: Option<RawDirectory>,
    pub routes: Option<RawRoutes>,
    pub regulation: Option<super::regulation::RawRegulation>,
    pub log: Option<super::ops::RawLog>,
    pub totp: Option<RawTotp>,
    pub realtime: Option<RawRealtime>,
    pub metrics: Option<super::ops::RawMetrics>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRealtime {
    pub enabled: Option<bool>,
    pub revocation_check: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<OneOrMany>,
    pub public_url: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub first_byte_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub login_body_timeout: Option<String>,
    pub h2_preface_timeout: Option<String>,
    pub max_header_bytes: Option<i64>,
    pub max_connections: Option<i64>,
    pub login_body_limit: Option<i64>,
    pub shutdown_grace: Option<String>,
    pub worker_threads: Option<i64>,
    pub password_hash_concurrency: Option<i64>,
    pub login_queue_timeout: Option<String>,
    pub password_hash_priority: Option<String>,
    pub shutdown_delay: Option<String>,
    pub tls: Option<super::ops::RawTls>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle_per_host: Option<i64>,
    pub preserve_host: Option<bool>,
    pub mode: Option<String>,
    pub admin_user_id: Option<String>,
    pub admin_user_id_file: Option<String>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<String>,
    pub create_tokens_secret: Option<String>,
    pub create_tokens_secret_file: Option<String>,
    pub token_lifetime: Option<String>,
    pub rewrite_public_settings: Option<bool>,
    pub allow_bearer_credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawDirectory {
    pub order: Option<Vec<String>>,
    pub local: Option<RawLocalDirectory>,
    pub ldap: Option<super::ldap::RawLdapDirectory>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLocalDirectory {
    pub users_file: Option<String>,
    pub watch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRoutes {
    pub public: Option<Vec<String>>,
    pub anonymous: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTotp {
    pub issuer: Option<String>,
    pub digits: Option<i64>,
    pub period: Option<String>,
    pub algorithm: Option<String>,
    pub skew: Option<i64>,
    pub secrets_file: Option<String>,
}
