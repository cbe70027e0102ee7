//! One request, end to end: check framing, canonicalise and classify the path, then answer
//! login/logout here or forward with the session's identity.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::directory::Directories;
use crate::error::{json_response, Body, Dependency, GatewayError, LOGGED_OUT_BODY};
use crate::forward::{self, Upstream};
use crate::login::{self, LoginRequest};
use crate::route::{self, Route, RouteKind};
use crate::session::{DynSessionStore, Session, StoreError, Token};
use crate::totp::SecondFactor;

pub struct Gateway {
    pub config: Arc<Config>,
    pub store: DynSessionStore,
    pub totp: SecondFactor,
    pub directories: Directories,
    pub upstream: Upstream,
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        GatewayError::Unavailable(Dependency::SessionStore, e.to_string())
    }
}

/// The client's credentials, when it presented exactly one of each header.
struct Credentials {
    token: Token,
    user_id: String,
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, GatewayError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(GatewayError::BadRequest(
            "Repeated credential headers are not allowed.",
        ));
    }
    Ok(first.and_then(|v| v.to_str().ok()))
}

fn credentials(headers: &HeaderMap) -> Result<Option<Credentials>, GatewayError> {
    let token = single_header(headers, "x-auth-token")?;
    let user_id = single_header(headers, "x-user-id")?;
    Ok(match (token, user_id) {
        (Some(t), Some(u)) if !t.is_empty() && !u.is_empty() => Some(Credentials {
            token: Token::from_client(t),
            user_id: u.to_string(),
        }),
        _ => None,
    })
}

/// Requests whose framing could be read two ways are refused before anything else.
fn check_framing(headers: &HeaderMap) -> Result<(), GatewayError> {
    let te = headers.contains_key(header::TRANSFER_ENCODING);
    let mut cls = headers.get_all(header::CONTENT_LENGTH).iter();
    let first_cl = cls.next();
    if te && first_cl.is_some() {
        return Err(GatewayError::BadRequest(
            "Content-Length and Transfer-Encoding together are not allowed.",
        ));
    }
    if let Some(first) = first_cl {
        if cls.any(|v| v != first) {
            return Err(GatewayError::BadRequest(
                "Conflicting Content-Length headers.",
            ));
        }
    }
    Ok(())
}

impl Gateway {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        match self.dispatch(req, peer).await {
            Ok(resp) => resp,
            Err(e) => {
                match &e {
                    GatewayError::Unavailable(dep, why) => {
                        tracing::warn!(?dep, %why, "dependency unavailable")
                    }
                    GatewayError::UpstreamUnreachable(why) => {
                        tracing::warn!(%why, "upstream unreachable")
                    }
                    GatewayError::Internal(why) => tracing::error!(%why, "internal error"),
                    _ => {}
                }
                e.into_response()
            }
        }
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, GatewayError> {
        check_framing(req.headers())?;
        let creds = credentials(req.headers())?;
        let route = route::route(req.uri().path(), req.uri().query(), &self.config.routes)
            .map_err(|_| GatewayError::BadRequest("The request path is not allowed."))?;
        match route.kind {
            RouteKind::Login => self.login(req, peer).await,
            RouteKind::Logout => self.logout(req.method(), creds).await,
            RouteKind::LoginMethod => Err(GatewayError::LoginMethodNotSupported),
            RouteKind::Realtime => Err(GatewayError::RealtimeUnavailable),
            RouteKind::Public => self.forward(req, &route, peer, None).await,
            RouteKind::Protected => {
                if req.method() == Method::CONNECT {
                    return Err(GatewayError::MethodNotAllowed);
                }
                let creds = creds.ok_or(GatewayError::NotLoggedIn)?;
                self.session_for(&creds)
                    .await?
                    .ok_or(GatewayError::NotLoggedIn)?;
                self.forward(req, &route, peer, Some(&creds)).await
            }
        }
    }

    /// The live session the credentials name, if the token belongs to that user id.
    async fn session_for(&self, creds: &Credentials) -> Result<Option<Session>, GatewayError> {
        let Some(session) = self.store.get(&creds.token.hash()).await? else {
            return Ok(None);
        };
        let same_user = session.user.id.len() == creds.user_id.len()
            && bool::from(session.user.id.as_bytes().ct_eq(creds.user_id.as_bytes()));
        Ok(same_user.then_some(session))
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        peer: SocketAddr,
        creds: Option<&Credentials>,
    ) -> Result<Response<Body>, GatewayError> {
        let trusted = &self.config.server.trusted_proxies;
        let client = forward::client_ip(peer.ip(), req.headers(), trusted);
        let peer_trusted = trusted.iter().any(|n| n.contains(&peer.ip()));
        let identity = creds.map(|c| forward::Identity {
            user_id: &c.user_id,
            token: c.token.as_str(),
        });
        forward::rewrite_request_headers(
            req.headers_mut(),
            identity.as_ref(),
            client,
            peer.ip(),
            peer_trusted,
        );
        self.upstream.send(req, &route.forward).await
    }

    async fn logout(
        &self,
        method: &Method,
        creds: Option<Credentials>,
    ) -> Result<Response<Body>, GatewayError> {
        if method != Method::POST && method != Method::GET {
            return Err(GatewayError::MethodNotAllowed);
        }
        let creds = creds.ok_or(GatewayError::NotLoggedIn)?;
        self.session_for(&creds)
            .await?
            .ok_or(GatewayError::NotLoggedIn)?;
        self.store.revoke(&creds.token.hash()).await?;
        Ok(json_response(StatusCode::OK, LOGGED_OUT_BODY))
    }

    async fn read_login_body(
        &self,
        req: Request<Incoming>,
    ) -> Result<(HeaderMap, Bytes), GatewayError> {
        let limit = self.config.server.login_body_limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(GatewayError::LoginBodyTooLarge);
        }
        let (parts, body) = req.into_parts();
        let bytes = Limited::new(body, limit).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                GatewayError::LoginBodyTooLarge
            } else {
                GatewayError::BadRequest("The request body could not be read.")
            }
        })?;
        Ok((parts.headers, bytes.to_bytes()))
    }

    async fn login(
        &self,
        req: Request<Incoming>,
        _peer: SocketAddr,
    ) -> Result<Response<Body>, GatewayError> {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let (headers, body) = self.read_login_body(req).await?;
        let kind = login::body_kind(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let header_code = headers.get("x-2fa-code").and_then(|v| v.to_str().ok());
        let avatar_base = self.avatar_base(&headers);
        match login::parse(kind, &body, header_code).ok_or(GatewayError::LoginFailed)? {
            LoginRequest::Resume(token) => {
                let token = Token::from_client(&token);
                let session = self
                    .store
                    .get(&token.hash())
                    .await?
                    .ok_or(GatewayError::LoginFailed)?;
                let Some(profile) = self.directories.current_profile(&session.user).await? else {
                    // The user is gone or disabled: the session dies with them.
                    self.store.revoke_user(&session.user.id).await?;
                    return Err(GatewayError::LoginFailed);
                };
                let me = login::me(&profile, &avatar_base, false);
                Ok(json_response(
                    StatusCode::OK,
                    login::success_body(&profile.id, token.as_str(), me),
                ))
            }
            LoginRequest::Password {
                identity,
                password,
                code,
            } => {
                let user = self
                    .directories
                    .authenticate(&identity, &password)
                    .await?
                    .ok_or(GatewayError::LoginFailed)?;
                // Only after the password: a wrong one is the generic 401 whatever the code.
                let totp_enabled = self
                    .totp
                    .check(&user, code.as_deref(), self.store.as_ref())
                    .await?;
                let token = Token::generate();
                let session = Session::new(user.profile.clone(), self.config.session.ttl);
                self.store.create(&token.hash(), &session).await?;
                tracing::info!(user = %user.profile.username, directory = %user.profile.directory, "login succeeded");
                let me = login::me(&user.profile, &avatar_base, totp_enabled);
                Ok(json_response(
                    StatusCode::OK,
                    login::success_body(&user.profile.id, token.as_str(), me),
                ))
            }
        }
    }

    fn avatar_base(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.config.server.public_url {
            return u.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && !h.contains(['/', '"', '\\']));
        match host {
            Some(h) => format!("http://{h}"),
            None => String::new(),
        }
    }
}
