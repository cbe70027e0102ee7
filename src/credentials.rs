//! What a client presented as its identity: authgate's token and user id in the
//! `X-Auth-Token` / `X-User-Id` headers, or (on file and avatar fetches) in Rocket.Chat's
//! `rc_uid` / `rc_token` cookies or query parameters, and the foreign credentials
//! (`Authorization`, `access_token`) authgate never issued.

use http::{header, HeaderMap, HeaderValue, Method};

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
pub(crate) fn carries_bearer_credentials(has_authorization: bool, query: Option<&str>) -> bool {
    has_authorization || route::has_access_token_param(query)
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

/// The values a request carried of one credential header, as [`RequestHeaders`] saw them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Presented<'a> {
    first: Option<&'a HeaderValue>,
    repeated: bool,
}

impl<'a> Presented<'a> {
    fn see(&mut self, value: &'a HeaderValue) {
        if self.first.is_some() {
            self.repeated = true;
        } else {
            self.first = Some(value);
        }
    }

    /// The one value given, as text; repeated headers are refused.
    fn single(self) -> Result<Option<&'a str>, GatewayError> {
        if self.repeated {
            return Err(GatewayError::BadRequest(
                "Repeated credential headers are not allowed.",
            ));
        }
        Ok(self.first.and_then(|v| v.to_str().ok()))
    }
}

/// What the checks before routing read from a request's headers, gathered in one walk over
/// them. A hashed lookup per name cost more (custom names such as `X-Auth-Token` hash byte by
/// byte), and a request carries few headers.
#[derive(Default)]
pub(crate) struct RequestHeaders<'a> {
    pub(crate) transfer_encoding: bool,
    pub(crate) first_content_length: Option<&'a HeaderValue>,
    /// A later `Content-Length` differs from the first.
    pub(crate) conflicting_content_length: bool,
    pub(crate) hosts: usize,
    pub(crate) authorization: bool,
    token: Presented<'a>,
    user_id: Presented<'a>,
}

impl<'a> RequestHeaders<'a> {
    pub(crate) fn read(headers: &'a HeaderMap) -> Self {
        let mut seen = RequestHeaders::default();
        for (name, value) in headers {
            if name == header::HOST {
                seen.hosts += 1;
            } else if name == header::CONTENT_LENGTH {
                match seen.first_content_length {
                    None => seen.first_content_length = Some(value),
                    Some(first) => seen.conflicting_content_length |= first != value,
                }
            } else if name == header::TRANSFER_ENCODING {
                seen.transfer_encoding = true;
            } else if name == header::AUTHORIZATION {
                seen.authorization = true;
            } else if name == forward::X_AUTH_TOKEN {
                seen.token.see(value);
            } else if name == forward::X_USER_ID {
                seen.user_id.see(value);
            }
        }
        seen
    }

    /// The client's credentials, when it presented exactly one of each header.
    pub(crate) fn credentials(&self) -> Result<Option<Credentials>, GatewayError> {
        let token = self.token.single()?;
        let user_id = self.user_id.single()?;
        Ok(match (token, user_id) {
            (Some(t), Some(u)) if !t.is_empty() && !u.is_empty() => Some(Credentials {
                token: Token::from_client(t),
                user_id: u.to_string(),
                from_cookies: false,
            }),
            _ => None,
        })
    }
}
