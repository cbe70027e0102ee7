//! What a client presented as its identity: authgate's token and user id in the
//! `X-Auth-Token` / `X-User-Id` headers, or (on file and avatar fetches) in Rocket.Chat's
//! `rc_uid` / `rc_token` cookies or query parameters, and the foreign credentials
//! (`Authorization`, `access_token`) authgate never issued.

use http::{header, HeaderMap, Method};

use crate::error::GatewayError;
use crate::forward;
use crate::route;
use crate::session::Token;

/// The client's credentials, when it presented exactly one of each header.
pub(crate) struct Credentials {
    pub(crate) token: Token,
    pub(crate) user_id: String,
    /// From Rocket.Chat's `rc_uid` / `rc_token` cookies or query parameters, not the headers.
    pub(crate) from_cookies: bool,
}

/// Routes where browsers authenticate with cookies (`<img>` and download links send no headers).
pub(crate) fn is_cookie_route(canonical: &str) -> bool {
    let c = canonical.to_ascii_lowercase();
    c.starts_with("/file-upload/") || c.starts_with("/avatar/")
}

pub(crate) fn is_fetch(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// An `Authorization` header or an `access_token` query parameter: credentials Rocket.Chat
/// honours (OAuth apps, tokens minted inside Rocket.Chat) that authgate never issued. Rocket.Chat
/// drops a `Bearer ` prefix if there is one and takes the rest as a token, so any scheme counts.
pub(crate) fn carries_bearer_credentials(headers: &HeaderMap, query: Option<&str>) -> bool {
    headers.contains_key(header::AUTHORIZATION) || route::has_access_token_param(query)
}

/// `rc_uid` / `rc_token` from the cookies, else from the query string.
pub(crate) fn cookie_credentials(headers: &HeaderMap, query: Option<&str>) -> Option<Credentials> {
    let mut uid = None;
    let mut token = None;
    for value in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for cookie in cookie::Cookie::split_parse(value).flatten() {
            match cookie.name() {
                "rc_uid" => uid = Some(cookie.value().to_string()),
                "rc_token" => token = Some(cookie.value().to_string()),
                _ => {}
            }
        }
    }
    if uid.is_none() || token.is_none() {
        let params: Vec<(String, String)> =
            serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
        for (k, v) in params {
            match k.as_str() {
                "rc_uid" => uid = Some(v),
                "rc_token" => token = Some(v),
                _ => {}
            }
        }
    }
    match (uid, token) {
        (Some(u), Some(t)) if !u.is_empty() && !t.is_empty() => Some(Credentials {
            token: Token::from_client(&t),
            user_id: u,
            from_cookies: true,
        }),
        _ => None,
    }
}

fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
) -> Result<Option<&'a str>, GatewayError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(GatewayError::BadRequest(
            "Repeated credential headers are not allowed.",
        ));
    }
    Ok(first.and_then(|v| v.to_str().ok()))
}

pub(crate) fn credentials(headers: &HeaderMap) -> Result<Option<Credentials>, GatewayError> {
    let token = single_header(headers, &forward::X_AUTH_TOKEN)?;
    let user_id = single_header(headers, &forward::X_USER_ID)?;
    Ok(match (token, user_id) {
        (Some(t), Some(u)) if !t.is_empty() && !u.is_empty() => Some(Credentials {
            token: Token::from_client(t),
            user_id: u.to_string(),
            from_cookies: false,
        }),
        _ => None,
    })
}
