//! The steps several handlers take, each a small value built once per configuration: finding
//! the live session a request's credentials name ([`SessionLookup`]: the pipeline, logout,
//! token management, the realtime socket) and reading a login-sized body within its bounds
//! ([`LoginBody`]: the login doors and token management).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::credentials::Credentials;
use crate::error::GatewayError;
use crate::login::{body_kind, BodyKind};
use crate::session::{DynSessionStore, Session};
use crate::telemetry::{ConnectionClose, Metrics};
use crate::upstream_identity::UpstreamIdentity;

/// Finds the live session credentials name, the way the upstream mode looks sessions up.
#[derive(Clone)]
pub struct SessionLookup {
    pub store: DynSessionStore,
    pub identity: Arc<UpstreamIdentity>,
    /// `session.personal_access_tokens`: whether sessions of personal access tokens count.
    pub personal_access_tokens: bool,
}

impl SessionLookup {
    /// For requests that need a caller (logout, token management): the live session the
    /// credentials name, or the contract's 401.
    pub(crate) async fn require(
        &self,
        creds: Option<Credentials>,
    ) -> Result<(Credentials, Arc<Session>), GatewayError> {
        let creds = creds.ok_or(GatewayError::NotLoggedIn)?;
        let session = self.find(&creds).await?.ok_or(GatewayError::NotLoggedIn)?;
        Ok((creds, session))
    }

    /// The live session the credentials name, if the token belongs to that user id. A hot
    /// session comes from the store's memory without any I/O.
    pub(crate) async fn find(
        &self,
        creds: &Credentials,
    ) -> Result<Option<Arc<Session>>, GatewayError> {
        let found = self
            .identity
            .find_session(self.store.as_ref(), creds)
            .await?;
        let Some(session) = found.filter(|s| self.usable(s)) else {
            return Ok(None);
        };
        let expected = session.client_user_id();
        let same_user = expected.len() == creds.user_id.len()
            && bool::from(expected.as_bytes().ct_eq(creds.user_id.as_bytes()));
        Ok(same_user.then_some(session))
    }

    /// Whether a stored session may be used now: personal access tokens only while allowed.
    pub(crate) fn usable(&self, session: &Session) -> bool {
        session.personal.is_none() || self.personal_access_tokens
    }
}

/// The bounds of a login-sized request body (`server.login_body_limit`,
/// `server.login_body_timeout`).
#[derive(Clone)]
pub struct LoginBody {
    pub limit: usize,
    pub timeout: Duration,
    pub metrics: Metrics,
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

impl LoginBody {
    /// A login door's request: POST only, its body read within the bounds of [`Self::read`],
    /// and the kind of body its `Content-Type` names.
    pub(crate) async fn read_login(
        &self,
        req: Request<Incoming>,
    ) -> Result<(HeaderMap, Bytes, BodyKind), GatewayError> {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let (headers, body) = self.read(req).await?;
        let kind = body_kind(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        Ok((headers, body, kind))
    }

    /// The whole body, at most `limit`. A larger one is answered 413 without being parsed; up
    /// to `DRAIN_LIMIT` of it is read and dropped first, so the client (still sending) gets the
    /// answer instead of a reset connection.
    pub(crate) async fn read(
        &self,
        req: Request<Incoming>,
    ) -> Result<(HeaderMap, Bytes), GatewayError> {
        let limit = self.limit;
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
        let deadline = tokio::time::sleep(self.timeout);
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
}
