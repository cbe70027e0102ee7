//! `[upstream]`: the chat backend, and how authgate tells it who the user is.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::problem::{count_or, duration_or, problem, ConfigProblem};
use super::raw::RawUpstream;
use super::secret::{secret, ExposeSecret, SecretString};

#[derive(Clone)]
pub struct UpstreamConfig {
    pub url: http::Uri,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub preserve_host: bool,
    pub mode: UpstreamMode,
    /// Rocket.Chat admin credentials (`rocketchat` mode).
    pub admin_user_id: String,
    pub admin_token: SecretString,
    /// `CREATE_TOKENS_FOR_USERS_SECRET`, for servers that require it.
    pub create_tokens_secret: Option<SecretString>,
    /// Rocket.Chat's `Accounts_LoginExpiration`: upstream tokens are renewed before it runs out.
    pub token_lifetime: Duration,
    /// Report `LDAP_Enable` (and the other login settings) so clients send plain passwords.
    pub rewrite_public_settings: bool,
    /// `rocketchat` mode: let `Authorization` and `?access_token=` through to Rocket.Chat,
    /// which reads them as OAuth tokens authgate never issued.
    pub allow_bearer_credentials: bool,
}

/// How authgate tells the upstream who the user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMode {
    /// The backend trusts `X-User-Id` / `X-Auth-Token` as injected by authgate.
    TrustedHeaders,
    /// A stock Rocket.Chat: authgate provisions users and swaps in tokens Rocket.Chat minted.
    RocketChat,
}

impl PartialEq for UpstreamConfig {
    // Secrets compare by value: a rotated admin token is a different upstream configuration.
    // Destructured, so a new field cannot be left out of the comparison.
    fn eq(&self, other: &Self) -> bool {
        let UpstreamConfig {
            url,
            timeout,
            connect_timeout,
            pool_idle_timeout,
            pool_max_idle_per_host,
            preserve_host,
            mode,
            admin_user_id,
            admin_token,
            create_tokens_secret,
            token_lifetime,
            rewrite_public_settings,
            allow_bearer_credentials,
        } = self;
        let exposed = |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
        *url == other.url
            && *timeout == other.timeout
            && *connect_timeout == other.connect_timeout
            && *pool_idle_timeout == other.pool_idle_timeout
            && *pool_max_idle_per_host == other.pool_max_idle_per_host
            && *preserve_host == other.preserve_host
            && *mode == other.mode
            && *admin_user_id == other.admin_user_id
            && admin_token.expose_secret() == other.admin_token.expose_secret()
            && exposed(create_tokens_secret) == exposed(&other.create_tokens_secret)
            && *token_lifetime == other.token_lifetime
            && *rewrite_public_settings == other.rewrite_public_settings
            && *allow_bearer_credentials == other.allow_bearer_credentials
    }
}

impl fmt::Debug for UpstreamConfig {
    // The admin token and the token-creation secret never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &self.url)
            .field("mode", &self.mode)
            .field("admin_user_id", &self.admin_user_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub(super) fn validate(
    raw: RawUpstream,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> UpstreamConfig {
    let url_text = raw.url.unwrap_or_else(|| "http://127.0.0.1:3000".into());
    let url = match url_text.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => {
            if u.path() != "/" && !u.path().is_empty() {
                problems.push(problem(
                    "upstream.url",
                    format!("`{url_text}` has a path"),
                    "give only scheme, host and port, e.g. \"http://127.0.0.1:3000\"",
                ));
            }
            u
        }
        Ok(u) if u.scheme_str() == Some("https") => {
            problems.push(problem(
                "upstream.url",
                format!("`{url_text}`: https upstreams are not supported yet"),
                "reach the backend over http on a private network or loopback",
            ));
            u
        }
        _ => {
            problems.push(problem(
                "upstream.url",
                format!("`{url_text}` is not an http URL"),
                "write the backend's URL, e.g. \"http://127.0.0.1:3000\"",
            ));
            http::Uri::from_static("http://127.0.0.1:3000")
        }
    };
    let mode = match raw.mode.as_deref().unwrap_or("trusted-headers") {
        "trusted-headers" => UpstreamMode::TrustedHeaders,
        "rocketchat" => UpstreamMode::RocketChat,
        other => {
            problems.push(problem(
                "upstream.mode",
                format!("`{other}` is not an upstream mode"),
                "use \"trusted-headers\" or \"rocketchat\"",
            ));
            UpstreamMode::TrustedHeaders
        }
    };
    let admin_token = secret(
        "upstream.admin_token",
        raw.admin_token,
        raw.admin_token_file.as_ref(),
        "AUTHGATE_UPSTREAM_ADMIN_TOKEN",
        base,
        problems,
    );
    let create_tokens_secret = secret(
        "upstream.create_tokens_secret",
        raw.create_tokens_secret,
        raw.create_tokens_secret_file.as_ref(),
        "AUTHGATE_UPSTREAM_CREATE_TOKENS_SECRET",
        base,
        problems,
    );
    // From a file too, so a bootstrap job that creates the admin can hand its id over.
    let admin_user_id = secret(
        "upstream.admin_user_id",
        raw.admin_user_id,
        raw.admin_user_id_file.as_ref(),
        "AUTHGATE_UPSTREAM_ADMIN_USER_ID",
        base,
        problems,
    )
    .map(|id| id.trim().to_string())
    .unwrap_or_default();
    if mode == UpstreamMode::RocketChat {
        if admin_user_id.is_empty() {
            problems.push(problem(
                "upstream.admin_user_id",
                "missing in rocketchat mode",
                "set admin_user_id, admin_user_id_file or AUTHGATE_UPSTREAM_ADMIN_USER_ID to the user id of a Rocket.Chat admin that may create users and tokens",
            ));
        }
        if admin_token.is_none() {
            problems.push(problem(
                "upstream.admin_token",
                "missing in rocketchat mode",
                "set admin_token, admin_token_file or AUTHGATE_UPSTREAM_ADMIN_TOKEN to a personal access token of that admin",
            ));
        }
    }
    UpstreamConfig {
        mode,
        admin_user_id,
        admin_token: SecretString::from(admin_token.unwrap_or_default()),
        create_tokens_secret: create_tokens_secret.map(SecretString::from),
        token_lifetime: duration_or(
            "upstream.token_lifetime",
            raw.token_lifetime.as_ref(),
            Duration::from_secs(90 * 86400),
            Duration::from_secs(60),
            problems,
        ),
        rewrite_public_settings: raw.rewrite_public_settings.unwrap_or(true),
        allow_bearer_credentials: raw.allow_bearer_credentials.unwrap_or(false),
        url,
        timeout: duration_or(
            "upstream.timeout",
            raw.timeout.as_ref(),
            Duration::from_secs(60),
            Duration::from_millis(1),
            problems,
        ),
        connect_timeout: duration_or(
            "upstream.connect_timeout",
            raw.connect_timeout.as_ref(),
            Duration::from_secs(5),
            Duration::from_millis(1),
            problems,
        ),
        pool_idle_timeout: duration_or(
            "upstream.pool_idle_timeout",
            raw.pool_idle_timeout.as_ref(),
            Duration::from_secs(4),
            Duration::from_millis(1),
            problems,
        ),
        pool_max_idle_per_host: count_or(
            "upstream.pool_max_idle_per_host",
            raw.pool_max_idle_per_host,
            512,
            0,
            1_000_000,
            problems,
        ),
        preserve_host: raw.preserve_host.unwrap_or(false),
    }
}
