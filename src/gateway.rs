//! One request, end to end: check framing, canonicalise and classify the path, then answer
//! login/logout here or forward with the session's identity.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::access::RequestFacts;
use crate::config::Config;
use crate::directory::Directories;
use crate::error::{json_response, Body, Dependency, GatewayError, LOGGED_OUT_BODY};
use crate::forward::{self, Upstream};
use crate::login;
use crate::regulation::Regulation;
use crate::rocketchat::{settings, Bridge};
use crate::route::{self, Route, RouteKind};
use crate::session::{DynSessionStore, Session, StoreError, Token};
use crate::telemetry::{ConnectionClose, Metrics};
use crate::totp::SecondFactor;

/// Everything built from one configuration. A reload builds a new one and swaps it in
/// (`service.rs`); the session store and the metrics carry over from one to the next.
pub struct Gateway {
    pub config: Arc<Config>,
    pub store: DynSessionStore,
    pub totp: SecondFactor,
    pub directories: Directories,
    pub upstream: Arc<Upstream>,
    pub regulation: Regulation,
    /// The Rocket.Chat admin bridge, in `rocketchat` mode.
    pub bridge: Option<Bridge>,
    pub metrics: Metrics,
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        GatewayError::Unavailable(Dependency::SessionStore, e.to_string())
    }
}

/// The client's credentials, when it presented exactly one of each header.
pub(crate) struct Credentials {
    pub(crate) token: Token,
    pub(crate) user_id: String,
    /// From Rocket.Chat's `rc_uid` / `rc_token` cookies or query parameters, not the headers.
    from_cookies: bool,
}

/// Routes where browsers authenticate with cookies (`<img>` and download links send no headers).
fn is_cookie_route(canonical: &str) -> bool {
    let c = canonical.to_ascii_lowercase();
    c.starts_with("/file-upload/") || c.starts_with("/avatar/")
}

fn is_fetch(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// `CONNECT` and `TRACE` (and IIS's `TRACK`): refused with 405 everywhere.
fn is_refused_method(method: &Method) -> bool {
    method == Method::CONNECT || method == Method::TRACE || method.as_str() == "TRACK"
}

/// An `Authorization` header or an `access_token` query parameter: credentials Rocket.Chat
/// honours (OAuth apps, tokens minted inside Rocket.Chat) that authgate never issued. Rocket.Chat
/// drops a `Bearer ` prefix if there is one and takes the rest as a token, so any scheme counts.
fn carries_bearer_credentials(headers: &HeaderMap, query: Option<&str>) -> bool {
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
        for pair in value.split(';') {
            match pair.trim().split_once('=') {
                Some(("rc_uid", v)) => uid = Some(v.to_string()),
                Some(("rc_token", v)) => token = Some(v.to_string()),
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

fn credentials(headers: &HeaderMap) -> Result<Option<Credentials>, GatewayError> {
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

/// The most of an oversized login body read (and dropped) before the 413 is sent.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Reads and drops what is left of a body, up to `max` bytes and one second.
async fn drain(mut body: Incoming, max: usize) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > max {
                break;
            }
        }
    })
    .await;
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
    /// Decides one request. What it learns on the way (path, user, upstream time) goes into
    /// `facts` for the access line.
    pub async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        facts: &mut RequestFacts,
    ) -> Result<Response<Body>, GatewayError> {
        check_framing(req.headers())?;
        // A tunnel or an echo of the request (with its credentials) is never what a chat client
        // wants, on any route.
        if is_refused_method(req.method()) {
            return Box::pin(answer_locally(req, Err(GatewayError::MethodNotAllowed))).await;
        }
        let creds = credentials(req.headers())?;
        let route = route::route(req.uri().path(), req.uri().query(), &self.config.routes)
            .map_err(|_| GatewayError::BadRequest("The request path is not allowed."))?;
        if self.rocketchat_mode()
            && !self.config.upstream.allow_bearer_credentials
            && carries_bearer_credentials(req.headers(), req.uri().query())
        {
            return Box::pin(answer_locally(req, Err(GatewayError::NotLoggedIn))).await;
        }
        let creds = match creds {
            // Browsers send cookies and URL credentials only to fetch (`<img>`, download links).
            None if is_cookie_route(&route.path) && is_fetch(req.method()) => {
                cookie_credentials(req.headers(), req.uri().query())
            }
            other => other,
        };
        facts.path = Some(route.path.clone());
        // Every path but the proxied one is boxed, and the proxied one is awaited at one place:
        // a request's future is as large as its largest path, and it is moved (copied) whole
        // when the request starts.
        let authenticated = match route.kind {
            RouteKind::Login => return Box::pin(self.login(req, facts)).await,
            RouteKind::Logout => {
                let answer = Box::pin(self.logout(req.method(), creds, facts)).await;
                return Box::pin(answer_locally(req, answer)).await;
            }
            RouteKind::LoginMethod => {
                let anonymous = route.path.to_ascii_lowercase().contains("method.callanon");
                return Box::pin(self.login_method(req, facts, anonymous)).await;
            }
            RouteKind::Realtime if self.config.realtime.enabled => {
                return Box::pin(self.realtime(req, &route, facts, creds)).await;
            }
            RouteKind::Realtime => {
                return Box::pin(answer_locally(req, Err(GatewayError::RealtimeUnavailable))).await
            }
            RouteKind::Refused => {
                return Box::pin(answer_locally(req, Err(GatewayError::NotThroughGateway))).await
            }
            RouteKind::Public => None,
            // Token management is answered here: an upstream token must never reach a client.
            RouteKind::Protected if crate::tokens::is_token_route(&route.path) => {
                return Box::pin(self.token_route(req, &route, creds, facts)).await;
            }
            RouteKind::Protected => {
                let session = match &creds {
                    Some(c) => self.session_for(c).await?,
                    None => None,
                };
                match (session, creds) {
                    (Some(session), Some(creds)) => {
                        facts.user_id = Some(creds.user_id.clone());
                        Some((creds, session))
                    }
                    // No usable credentials: the upstream may decide, if it authenticates by itself.
                    // Stale cookies are stripped like any client credential.
                    (None, None) if self.config.routes.anonymous_forward => None,
                    (None, Some(c)) if c.from_cookies && self.config.routes.anonymous_forward => {
                        None
                    }
                    _ => {
                        return Box::pin(answer_locally(req, Err(GatewayError::NotLoggedIn))).await
                    }
                }
            }
        };
        if let (Some((creds, session)), true) = (&authenticated, self.rocketchat_mode()) {
            let session = Session::clone(session);
            return Box::pin(
                self.forward_with_rocketchat_token(req, &route, facts, creds, session),
            )
            .await;
        }
        // `trusted-headers` mode: the client's own credentials, checked, go up.
        let identity = authenticated.as_ref().map(|(creds, _)| forward::Identity {
            user_id: &creds.user_id,
            token: creds.token.as_str(),
            as_cookies: false,
        });
        self.forward(req, &route, facts, identity).await
    }

    /// The live session the credentials name, if the token belongs to that user id. A hot
    /// session comes from the store's memory without any I/O.
    pub(crate) async fn session_for(
        &self,
        creds: &Credentials,
    ) -> Result<Option<Arc<Session>>, GatewayError> {
        let found = if self.rocketchat_mode() {
            // Sessions are stored under the directory's user id; clients present Rocket.Chat's,
            // so the token alone finds the session (hot ones from memory, like `cached`).
            self.store.find(&creds.token.hash()).await?
        } else {
            match self.store.cached(&creds.user_id, &creds.token.digest()) {
                Some(s) => Some(s),
                None => self.store.get(&creds.user_id, &creds.token.hash()).await?,
            }
        };
        let Some(session) = found.filter(|s| self.usable(s)) else {
            return Ok(None);
        };
        let expected = session.client_user_id();
        let same_user = expected.len() == creds.user_id.len()
            && bool::from(expected.as_bytes().ct_eq(creds.user_id.as_bytes()));
        Ok(same_user.then_some(session))
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        facts: &mut RequestFacts,
        identity: Option<forward::Identity<'_>>,
    ) -> Result<Response<Body>, GatewayError> {
        forward::rewrite_request_headers(req.headers_mut(), identity.as_ref(), &facts.origin());
        let settings = match self.config.upstream.rewrite_public_settings {
            true => settings::answer_kind(&route.path),
            false => None,
        };
        if settings.is_some() {
            // The answer is rewritten, so it must come uncompressed.
            req.headers_mut().remove(header::ACCEPT_ENCODING);
        }
        // Replaces whatever the client sent: the upstream logs the same id as the gateway.
        req.headers_mut()
            .insert(forward::X_REQUEST_ID, facts.request_id.clone());
        let resp = match crate::ddp::rest_method_name(&route.path) {
            // A DDP call over REST: the method that runs is the one in the body, so the body is
            // read and checked against the URL before anything is sent.
            Some(url_method) => {
                let (parts, body) = req.into_parts();
                let bytes = Box::pin(crate::ddp::checked_method_call(body, &url_method)).await?;
                let started = Instant::now();
                let resp = Box::pin(self.upstream.send_buffered(
                    parts.method,
                    parts.headers,
                    bytes,
                    &route.forward,
                ))
                .await;
                facts.upstream = Some(started.elapsed());
                resp
            }
            None => {
                let started = Instant::now();
                let resp = self.upstream.send(req, &route.forward).await;
                facts.upstream = Some(started.elapsed());
                resp
            }
        };
        let resp = resp?;
        match settings {
            Some(kind) => Box::pin(settings::rewrite_response(resp, kind)).await,
            None => Ok(resp),
        }
    }

    /// Forwards without any identity (the client's identity headers are stripped).
    pub(crate) async fn forward_plain(
        &self,
        req: Request<Incoming>,
        route: &Route,
        facts: &mut RequestFacts,
    ) -> Result<Response<Body>, GatewayError> {
        self.forward(req, route, facts, None).await
    }

    /// `rocketchat` mode: the session's own Rocket.Chat token goes up, renewed once when
    /// Rocket.Chat refuses it on a request that can be sent again.
    async fn forward_with_rocketchat_token(
        &self,
        req: Request<Incoming>,
        route: &Route,
        facts: &mut RequestFacts,
        creds: &Credentials,
        mut session: Session,
    ) -> Result<Response<Body>, GatewayError> {
        let rc_token = self
            .upstream_token(&creds.token, &mut session, false)
            .await?;
        let replayable = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
            && !req.headers().contains_key(header::TRANSFER_ENCODING)
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v == "0");
        let replay = replayable.then(|| (req.method().clone(), req.headers().clone()));
        let user_id = session.client_user_id().to_string();
        let first = self
            .forward(
                req,
                route,
                facts,
                Some(forward::Identity {
                    user_id: &user_id,
                    token: &rc_token,
                    as_cookies: creds.from_cookies,
                }),
            )
            .await?;
        let Some((method, mut headers)) =
            replay.filter(|_| first.status() == StatusCode::UNAUTHORIZED)
        else {
            return Ok(first);
        };
        let fresh = self
            .upstream_token(&creds.token, &mut session, true)
            .await?;
        forward::rewrite_request_headers(
            &mut headers,
            Some(&forward::Identity {
                user_id: &user_id,
                token: &fresh,
                as_cookies: creds.from_cookies,
            }),
            &facts.origin(),
        );
        headers.insert(forward::X_REQUEST_ID, facts.request_id.clone());
        self.upstream
            .send_buffered(method, headers, Bytes::new(), &route.forward)
            .await
    }

    async fn logout(
        &self,
        method: &Method,
        creds: Option<Credentials>,
        facts: &mut RequestFacts,
    ) -> Result<Response<Body>, GatewayError> {
        if method != Method::POST && method != Method::GET {
            return Err(GatewayError::MethodNotAllowed);
        }
        let creds = creds.ok_or(GatewayError::NotLoggedIn)?;
        let session = self
            .session_for(&creds)
            .await?
            .ok_or(GatewayError::NotLoggedIn)?;
        facts.user_id = Some(creds.user_id.clone());
        if self
            .store
            .revoke(&session.user.id, &creds.token.hash())
            .await?
        {
            self.metrics.sessions_revoked(1);
        }
        Ok(json_response(StatusCode::OK, LOGGED_OUT_BODY))
    }

    /// The whole login body, at most `server.login_body_limit`. A larger one is answered 413
    /// without being parsed; up to `DRAIN_LIMIT` of it is read and dropped first, so the client
    /// (still sending) gets the answer instead of a reset connection.
    pub(crate) async fn read_login_body(
        &self,
        req: Request<Incoming>,
    ) -> Result<(HeaderMap, Bytes), GatewayError> {
        let limit = self.config.server.login_body_limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let (parts, mut body) = req.into_parts();
        if declared.is_some_and(|n| n > limit as u64) {
            if declared.is_some_and(|n| n <= DRAIN_LIMIT as u64) {
                drain(body, DRAIN_LIMIT).await;
            }
            return Err(GatewayError::LoginBodyTooLarge);
        }
        let mut buf = bytes::BytesMut::new();
        // A whole-body bound, not only a pause bound: a login body trickled in byte by byte
        // would otherwise hold its connection for hours.
        let deadline = tokio::time::sleep(self.config.server.login_body_timeout);
        tokio::pin!(deadline);
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = &mut deadline => {
                    self.metrics.connection_closed(ConnectionClose::LoginBodyTimeout);
                    return Err(GatewayError::LoginBodyTimeout);
                }
            };
            let Some(frame) = frame else { break };
            let frame = frame
                .map_err(|_| GatewayError::BadRequest("The request body could not be read."))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    drain(body, DRAIN_LIMIT).await;
                    return Err(GatewayError::LoginBodyTooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok((parts.headers, buf.freeze()))
    }

    async fn login(
        &self,
        req: Request<Incoming>,
        facts: &mut RequestFacts,
    ) -> Result<Response<Body>, GatewayError> {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let ip = facts.client_ip;
        let (headers, body) = self.read_login_body(req).await?;
        let kind = login::body_kind(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let header_code = headers.get("x-2fa-code").and_then(|v| v.to_str().ok());
        let opened = self
            .log_in(
                login::parse(kind, &body, header_code),
                ip,
                crate::session::user_agent(&headers),
                &facts.request_id,
            )
            .await?;
        facts.user_id = Some(opened.session.client_user_id().to_string());
        let answer = self
            .rest_login_answer(opened, &self.avatar_base(), ip)
            .await?;
        Ok(json_response(StatusCode::OK, answer))
    }

    /// Where `me.avatarUrl` points: the configured public URL, else the first listen address.
    /// Never the client's `Host`, which anyone can set to a page of their own.
    pub(crate) fn avatar_base(&self) -> String {
        if let Some(u) = &self.config.server.public_url {
            return u.clone();
        }
        let scheme = match self.config.server.tls {
            Some(_) => "https",
            None => "http",
        };
        match self.config.server.listen.first() {
            Some(addr) => format!("{scheme}://{addr}"),
            None => String::new(),
        }
    }
}
