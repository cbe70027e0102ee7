//! The gateway one configuration builds: the dependencies every handler draws on (session
//! store, directories, second factor, regulation, upstream, the upstream mode, metrics) and the
//! few steps several handlers share (finding a live session, reading a login body). The request
//! pipeline is `pipeline.rs`; each route kind's handler is in `handlers/`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::credentials::Credentials;
use crate::directory::Directories;
use crate::error::{Dependency, GatewayError};
use crate::forward::Upstream;
use crate::regulation::Regulation;
use crate::session::{DynSessionStore, Session, StoreError};
use crate::telemetry::{ConnectionClose, Metrics};
use crate::totp::SecondFactor;
use crate::upstream_identity::UpstreamIdentity;

/// Everything built from one configuration. A reload builds a new one and swaps it in
/// (`service.rs`); the session store and the metrics carry over from one to the next.
pub struct Gateway {
    pub config: Arc<Config>,
    pub store: DynSessionStore,
    pub totp: SecondFactor,
    pub directories: Directories,
    pub upstream: Arc<Upstream>,
    pub regulation: Regulation,
    /// How the upstream learns who the user is (`upstream.mode`).
    pub identity: UpstreamIdentity,
    pub metrics: Metrics,
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        GatewayError::Unavailable(Dependency::SessionStore, e.to_string())
    }
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

impl Gateway {
    /// For requests that need a caller (logout, token management): the live session the
    /// credentials name, recorded as the request's user, or the contract's 401.
    pub(crate) async fn require_session(
        &self,
        creds: Option<Credentials>,
        facts: &mut crate::access::RequestFacts,
    ) -> Result<(Credentials, Arc<Session>), GatewayError> {
        let creds = creds.ok_or(GatewayError::NotLoggedIn)?;
        let session = self
            .session_for(&creds)
            .await?
            .ok_or(GatewayError::NotLoggedIn)?;
        facts.user_id = Some(creds.user_id.clone());
        Ok((creds, session))
    }

    /// The live session the credentials name, if the token belongs to that user id. A hot
    /// session comes from the store's memory without any I/O.
    pub(crate) async fn session_for(
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
        session.personal.is_none() || self.config.session.personal_access_tokens
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
