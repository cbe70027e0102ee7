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
use crate::regulation::Regulation;
use crate::route::{self, Route, RouteKind};
use crate::session::{DynSessionStore, Session, StoreError, Token};
use crate::totp::SecondFactor;

pub struct Gateway {
    pub config: Arc<Config>,
    pub store: DynSessionStore,
    pub totp: SecondFactor,
    pub directories: Directories,
    pub upstream: Upstream,
    pub regulation: Regulation,
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

/// The most of an unread request body the gateway reads and drops before answering it itself.
const DISCARD_LIMIT: usize = 64 * 1024;

/// Reads and drops a small request body before answering locally: hyper closes a connection
/// whose request body was left unread, and a client that already sent its next request on it
/// would see the connection drop. Larger or slower bodies are left; the connection then closes.
async fn answer_locally(
    req: Request<Incoming>,
    answer: Result<Response<Body>, GatewayError>,
) -> Result<Response<Body>, GatewayError> {
    let body = Limited::new(req.into_body(), DISCARD_LIMIT);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), body.collect()).await;
    answer
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
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(GatewayError::BadRequest(
            "Repeated Host headers are not allowed.",
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
            RouteKind::Logout => {
                let answer = self.logout(req.method(), creds).await;
                answer_locally(req, answer).await
            }
            RouteKind::LoginMethod => {
                answer_locally(req, Err(GatewayError::LoginMethodNotSupported)).await
            }
            RouteKind::Realtime => {
                answer_locally(req, Err(GatewayError::RealtimeUnavailable)).await
            }
            RouteKind::Public => self.forward(req, &route, peer, None).await,
            RouteKind::Protected => {
                if req.method() == Method::CONNECT {
                    return answer_locally(req, Err(GatewayError::MethodNotAllowed)).await;
                }
                let session = match &creds {
                    Some(c) => self.session_for(c).await?,
                    None => None,
                };
                match (session, creds) {
                    (Some(_), Some(creds)) => self.forward(req, &route, peer, Some(&creds)).await,
                    _ => answer_locally(req, Err(GatewayError::NotLoggedIn)).await,
                }
            }
        }
    }

    /// The live session the credentials name, if the token belongs to that user id. A hot
    /// session comes from the store's memory without any I/O.
    async fn session_for(&self, creds: &Credentials) -> Result<Option<Arc<Session>>, GatewayError> {
        let session = match self.store.cached(&creds.user_id, &creds.token.digest()) {
            Some(s) => s,
            None => match self.store.get(&creds.user_id, &creds.token.hash()).await? {
                Some(s) => s,
                None => return Ok(None),
            },
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
        self.store
            .revoke(&creds.user_id, &creds.token.hash())
            .await?;
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
        peer: SocketAddr,
    ) -> Result<Response<Body>, GatewayError> {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let ip = forward::client_ip(
            peer.ip(),
            req.headers(),
            &self.config.server.trusted_proxies,
        );
        let (headers, body) = self.read_login_body(req).await?;
        let kind = login::body_kind(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let header_code = headers.get("x-2fa-code").and_then(|v| v.to_str().ok());
        let request = login::parse(kind, &body, header_code);
        let login_name = match &request {
            Some(LoginRequest::Password { identity, .. }) => Some(identity.as_str().to_string()),
            _ => None,
        };
        // Blocked attempts are refused before any password is checked, with the right password too.
        let checked = self.regulation.check(login_name.as_deref(), ip).await;
        let outcome = match (checked, request) {
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(GatewayError::LoginFailed),
            (Ok(()), Some(request)) => self.attempt(request, &self.avatar_base(&headers)).await,
        };
        match &outcome {
            Err(GatewayError::LoginFailed | GatewayError::TotpInvalid) => {
                self.regulation.failed(login_name.as_deref(), ip).await?
            }
            Ok(_) => {
                if let Some(name) = &login_name {
                    self.regulation.succeeded(name).await?;
                }
            }
            Err(_) => {}
        }
        let result = match &outcome {
            Ok(_) => "success",
            Err(GatewayError::LoginFailed) => "bad-credentials",
            Err(GatewayError::TotpRequired) => "totp-required",
            Err(GatewayError::TotpInvalid) => "totp-invalid",
            Err(GatewayError::LoginBlocked(_)) => "blocked",
            Err(_) => "dependency-error",
        };
        tracing::info!(target: "authgate::audit", login = login_name.as_deref().unwrap_or("-"), client_ip = %ip, outcome = result, "login attempt");
        outcome
    }

    /// One login attempt that passed regulation: resume a session, or check credentials.
    async fn attempt(
        &self,
        request: LoginRequest,
        avatar_base: &str,
    ) -> Result<Response<Body>, GatewayError> {
        match request {
            LoginRequest::Resume(token) => {
                let token = Token::from_client(&token);
                let session = self
                    .store
                    .find(&token.hash())
                    .await?
                    .ok_or(GatewayError::LoginFailed)?;
                let Some(profile) = self.directories.current_profile(&session.user).await? else {
                    // The user is gone or disabled: the session dies with them.
                    self.store.revoke_user(&session.user.id).await?;
                    return Err(GatewayError::LoginFailed);
                };
                let me = login::me(&profile, avatar_base, false);
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
                let me = login::me(&user.profile, avatar_base, totp_enabled);
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
