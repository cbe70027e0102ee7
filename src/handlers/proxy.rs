//! The proxied request: forwarded with the identity the upstream mode gives a live session,
//! or without any (public routes, anonymous forwarding). Public settings are rewritten on the
//! way back, and a DDP call over REST is checked against its URL before it goes up.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Handled;
use crate::access::{Learned, RequestFacts};
use crate::credentials::Credentials;
use crate::ddp;
use crate::error::{Body, GatewayError};
use crate::forward::{self, Upstream};
use crate::rocketchat::settings;
use crate::route::Route;
use crate::session::{DynSessionStore, Session};
use crate::upstream_identity::{UpstreamCredential, UpstreamIdentity};

/// The handler of proxied requests, with what forwarding needs and nothing else.
#[derive(Clone)]
pub struct Proxy {
    pub upstream: Arc<Upstream>,
    /// How the upstream learns who the user is (`upstream.mode`).
    pub identity: Arc<UpstreamIdentity>,
    /// Where the sessions' upstream tokens are kept (and renewed ones written back).
    pub store: DynSessionStore,
    /// `upstream.rewrite_public_settings`.
    pub rewrite_public_settings: bool,
}

impl Proxy {
    /// Forwards with a live session: the upstream learns the user the way its mode says.
    pub(crate) async fn forward_authenticated(
        &self,
        req: Request<Incoming>,
        route: &Route,
        facts: &RequestFacts,
        creds: &Credentials,
        session: &Session,
    ) -> Handled {
        let credential = match self
            .identity
            .credential(self.store.as_ref(), creds, session)
            .await
        {
            Ok(credential) => credential,
            Err(e) => return e.into(),
        };
        if self.identity.renews_refused_tokens() {
            // Boxed: the renewing path is the larger future, and the plain one is the hot path.
            return Box::pin(self.forward_renewing(req, route, facts, creds, session, credential))
                .await;
        }
        self.forward(req, route, facts, Some(credential.forwarded()))
            .await
    }

    /// Forwards with the session's upstream token; a request the upstream refused with 401 is
    /// sent once more with a renewed token, when it can be sent again.
    async fn forward_renewing(
        &self,
        req: Request<Incoming>,
        route: &Route,
        facts: &RequestFacts,
        creds: &Credentials,
        session: &Session,
        credential: UpstreamCredential<'_>,
    ) -> Handled {
        let replay = is_replayable(&req).then(|| (req.method().clone(), req.headers().clone()));
        let first = self
            .forward(req, route, facts, Some(credential.forwarded()))
            .await;
        let answer = match (replay, first.answer) {
            (Some((method, headers)), Ok(refused))
                if refused.status() == StatusCode::UNAUTHORIZED =>
            {
                self.send_renewed(method, headers, route, facts, creds, session, refused)
                    .await
            }
            (_, answer) => answer,
        };
        Handled {
            answer,
            learned: first.learned,
        }
    }

    /// Sends a refused request again with a renewed upstream token (`refused` stands when the
    /// mode has none to renew).
    #[allow(clippy::too_many_arguments)]
    async fn send_renewed(
        &self,
        method: Method,
        mut headers: HeaderMap,
        route: &Route,
        facts: &RequestFacts,
        creds: &Credentials,
        session: &Session,
        refused: Response<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let mut session = Session::clone(session);
        let fresh = match self
            .identity
            .renew_refused(self.store.as_ref(), &creds.token, &mut session)
            .await
        {
            Some(fresh) => fresh?,
            None => return Ok(refused),
        };
        forward::rewrite_request_headers(
            &mut headers,
            Some(&forward::Identity {
                user_id: session.client_user_id(),
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

    /// Forwards without any identity (the client's identity headers are stripped).
    pub(crate) async fn forward_plain(
        &self,
        req: Request<Incoming>,
        route: &Route,
        facts: &RequestFacts,
    ) -> Handled {
        self.forward(req, route, facts, None).await
    }

    /// Forwards as `identity`; the time until the upstream's answer is returned for the access
    /// line whether the upstream answered or not.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        facts: &RequestFacts,
        identity: Option<forward::Identity<'_>>,
    ) -> Handled {
        forward::rewrite_request_headers(req.headers_mut(), identity.as_ref(), &facts.origin());
        let settings = match self.rewrite_public_settings {
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
        let (resp, upstream) = match ddp::rest_method_name(&route.path) {
            // A DDP call over REST: the method that runs is the one in the body, so the body is
            // read and checked against the URL before anything is sent.
            Some(url_method) => {
                let (parts, body) = req.into_parts();
                let bytes = match Box::pin(ddp::checked_method_call(body, &url_method)).await {
                    Ok(bytes) => bytes,
                    Err(e) => return e.into(),
                };
                let started = Instant::now();
                let resp = Box::pin(self.upstream.send_buffered(
                    parts.method,
                    parts.headers,
                    bytes,
                    &route.forward,
                ))
                .await;
                (resp, started.elapsed())
            }
            None => {
                let started = Instant::now();
                let resp = self.upstream.send(req, &route.forward).await;
                (resp, started.elapsed())
            }
        };
        let learned = Learned {
            user_id: None,
            upstream: Some(upstream),
        };
        let answer = match settings {
            None => resp,
            Some(kind) => match resp {
                Ok(resp) => Box::pin(settings::rewrite_response(resp, kind)).await,
                Err(e) => Err(e),
            },
        };
        Handled { answer, learned }
    }
}

/// A GET, HEAD or OPTIONS without a body: sending it twice changes nothing.
fn is_replayable(req: &Request<Incoming>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v == "0")
}
