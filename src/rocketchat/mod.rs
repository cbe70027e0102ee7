//! The bridge to a stock Rocket.Chat (`upstream.mode = "rocketchat"`): Rocket.Chat accepts only
//! tokens it minted, so authgate provisions each user through the admin REST API, obtains a
//! login token for them (`users.createToken`) and swaps it in on every forwarded request.

pub mod settings;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{json, Value};

use crate::config::{ExposeSecret, UpstreamConfig};
use crate::directory::UserProfile;
use crate::error::GatewayError;

/// Largest upstream answer the bridge reads (user documents, login bodies, DDP frames).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

pub struct Bridge {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    host: HeaderValue,
    admin_user_id: String,
    admin_token: String,
    create_tokens_secret: Option<String>,
    timeout: Duration,
    pub token_lifetime: Duration,
}

fn upstream_error(what: &str, detail: impl std::fmt::Display) -> GatewayError {
    GatewayError::UpstreamUnreachable(format!("{what}: {detail}"))
}

/// Rocket.Chat insists on an email address; directory users without one get a placeholder in
/// the reserved `.invalid` domain, which can never receive mail.
fn email_for(profile: &UserProfile) -> String {
    profile
        .email
        .clone()
        .unwrap_or_else(|| format!("{}@authgate.invalid", profile.username))
}

/// A password for the Rocket.Chat account that nobody learns: logins only ever go through authgate.
fn unknowable_password() -> String {
    crate::session::Token::generate().as_str().to_string()
}

impl Bridge {
    pub fn new(config: &UpstreamConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .build(connector);
        let authority = config
            .url
            .authority()
            .expect("validated upstream URL")
            .as_str()
            .to_string();
        Self {
            client,
            base: format!("http://{authority}"),
            host: HeaderValue::from_str(&authority).expect("authority is a valid header value"),
            admin_user_id: config.admin_user_id.clone(),
            admin_token: config.admin_token.expose_secret().to_owned(),
            create_tokens_secret: config
                .create_tokens_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            timeout: config.timeout,
            token_lifetime: config.token_lifetime,
        }
    }

    /// One JSON call to Rocket.Chat; `auth` is (user id, token) for authenticated endpoints.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: Option<(&str, &str)>,
        client_ip: Option<IpAddr>,
    ) -> Result<(StatusCode, Value), GatewayError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::HOST, self.host.clone());
        if let Some((uid, tok)) = auth {
            req = req.header("x-user-id", uid).header("x-auth-token", tok);
        }
        if let Some(ip) = client_ip {
            req = req
                .header("x-real-ip", ip.to_string())
                .header("x-forwarded-for", ip.to_string());
        }
        let bytes = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| upstream_error(path, e))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| GatewayError::UpstreamTimeout)?
            .map_err(|e| upstream_error(path, e))?;
        let status = resp.status();
        let collected = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| upstream_error(path, e))?;
        let bytes = collected.to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| upstream_error(path, e))?
        };
        Ok((status, value))
    }

    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), GatewayError> {
        self.call(
            method,
            path,
            body,
            Some((&self.admin_user_id, &self.admin_token)),
            None,
        )
        .await
    }

    /// The Rocket.Chat user for a directory profile, created on first login and kept in step
    /// (name, email, roles, active) on later ones. Returns the Rocket.Chat user id.
    pub async fn provision(&self, profile: &UserProfile) -> Result<String, GatewayError> {
        let query = serde_urlencoded::to_string([("username", profile.username.as_str())])
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let (status, found) = self
            .admin(Method::GET, &format!("/api/v1/users.info?{query}"), None)
            .await?;
        let email = email_for(profile);
        if status.is_success() && found["success"] == json!(true) {
            let user = &found["user"];
            let id = user["_id"]
                .as_str()
                .ok_or_else(|| upstream_error("users.info", "no _id"))?
                .to_string();
            let current_email = user["emails"][0]["address"].as_str().unwrap_or_default();
            let mut roles: Vec<String> = user["roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            let mut wanted_roles = profile.roles.clone();
            wanted_roles.sort();
            let in_step = user["name"].as_str() == Some(profile.name.as_str())
                && current_email.eq_ignore_ascii_case(&email)
                && roles == wanted_roles
                && user["active"] == json!(true);
            if !in_step {
                let data = json!({"userId": id, "data": {"name": profile.name, "email": email, "roles": profile.roles, "active": true, "verified": true}});
                let (status, answer) = self
                    .admin(Method::POST, "/api/v1/users.update", Some(&data))
                    .await?;
                if !status.is_success() {
                    return Err(upstream_error("users.update", answer));
                }
            }
            return Ok(id);
        }
        if status.is_server_error()
            || status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
        {
            return Err(upstream_error("users.info", format!("{status} {found}")));
        }
        let create = json!({
            "username": profile.username, "name": profile.name, "email": email, "password": unknowable_password(),
            "roles": profile.roles, "active": true, "verified": true, "joinDefaultChannels": true,
            "requirePasswordChange": false, "sendWelcomeEmail": false,
        });
        let (status, created) = self
            .admin(Method::POST, "/api/v1/users.create", Some(&create))
            .await?;
        match created["user"]["_id"].as_str() {
            Some(id) if status.is_success() => Ok(id.to_string()),
            _ => Err(upstream_error(
                "users.create",
                format!("{status} {created}"),
            )),
        }
    }

    /// A fresh Rocket.Chat login token for a user.
    pub async fn create_token(&self, rc_user_id: &str) -> Result<String, GatewayError> {
        let mut body = json!({"userId": rc_user_id});
        if let Some(secret) = &self.create_tokens_secret {
            body["secret"] = json!(secret);
        }
        let (status, answer) = self
            .admin(Method::POST, "/api/v1/users.createToken", Some(&body))
            .await?;
        match answer["data"]["authToken"].as_str() {
            Some(t) if status.is_success() => Ok(t.to_string()),
            _ => Err(upstream_error("users.createToken", status)),
        }
    }
}
