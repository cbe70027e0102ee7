//! How the upstream learns who the user is: the one place the two upstream modes differ,
//! chosen once at startup (`upstream.mode`).
//!
//! - `trusted-headers`: the backend trusts authgate. A request goes up with the client's own
//!   checked token and user id; authgate builds the login answers itself; a socket is bound by
//!   the identity headers of its upgrade, or by a resume carrying authgate's token.
//! - `rocketchat`: Rocket.Chat keeps its own accounts and tokens. Each session carries a
//!   Rocket.Chat token, sealed with authgate's token, that is swapped in upstream and renewed
//!   when it nears its expiry or Rocket.Chat refuses it; login answers are Rocket.Chat's own
//!   answer to a resume with that token, with authgate's token put back.
//!
//! An enum rather than a trait object: the request path pays no dynamic call for it.

use std::borrow::Cow;
use std::net::IpAddr;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::config::{UpstreamConfig, UpstreamMode};
use crate::credentials::Credentials;
use crate::ddp;
use crate::directory::UserProfile;
use crate::error::GatewayError;
use crate::login::{self, Opened};
use crate::rocketchat::Bridge;
use crate::session::{now_unix_ms, Session, SessionStore, StoreError, Token};

// One per gateway: its size does not matter, and the bridge stays inline.
#[allow(clippy::large_enum_variant)]
pub enum UpstreamIdentity {
    TrustedHeaders,
    RocketChat(Bridge),
}

/// The identity a proxied request carries upstream.
pub struct UpstreamCredential<'a> {
    pub user_id: &'a str,
    pub token: Cow<'a, str>,
    /// Also as Rocket.Chat's `rc_uid` / `rc_token` cookies.
    pub as_cookies: bool,
}

impl UpstreamCredential<'_> {
    /// The identity headers (and cookies) the forwarded request carries.
    pub fn forwarded(&self) -> crate::forward::Identity<'_> {
        crate::forward::Identity {
            user_id: self.user_id,
            token: &self.token,
            as_cookies: self.as_cookies,
        }
    }
}

impl UpstreamIdentity {
    pub fn new(config: &UpstreamConfig) -> Self {
        match config.mode {
            UpstreamMode::TrustedHeaders => UpstreamIdentity::TrustedHeaders,
            UpstreamMode::RocketChat => UpstreamIdentity::RocketChat(Bridge::new(config)),
        }
    }

    /// Rocket.Chat honours credentials authgate never issued (`Authorization`, `access_token`:
    /// OAuth apps, tokens minted inside Rocket.Chat); a trusted-headers backend reads only the
    /// identity headers authgate writes.
    pub fn honours_foreign_credentials(&self) -> bool {
        matches!(self, UpstreamIdentity::RocketChat(_))
    }

    /// The stored session a client's token names (the caller checks the user id).
    pub(crate) async fn find_session(
        &self,
        store: &dyn SessionStore,
        creds: &Credentials,
    ) -> Result<Option<std::sync::Arc<Session>>, StoreError> {
        match self {
            // Sessions are stored under the directory's user id; clients present Rocket.Chat's,
            // so the token alone finds the session (hot ones from memory, like `cached`).
            UpstreamIdentity::RocketChat(_) => store.find(&creds.token.hash()).await,
            UpstreamIdentity::TrustedHeaders => {
                match store.cached(&creds.user_id, &creds.token.digest()) {
                    Some(s) => Ok(Some(s)),
                    None => store.get(&creds.user_id, &creds.token.hash()).await,
                }
            }
        }
    }

    /// A new session's upstream side, before it is stored: in `rocketchat` mode the user is
    /// provisioned in Rocket.Chat and a Rocket.Chat token is sealed into the session.
    pub async fn open_upstream(
        &self,
        profile: &UserProfile,
        token: &Token,
        session: &mut Session,
    ) -> Result<(), GatewayError> {
        if let UpstreamIdentity::RocketChat(bridge) = self {
            let rc_user_id = bridge.provision(profile).await?;
            let rc_token = bridge.create_token(&rc_user_id).await?;
            session.upstream = Some(token.seal(&rc_user_id, &rc_token));
        }
        Ok(())
    }

    /// A session made from an existing one (a new token, a personal access token): in
    /// `rocketchat` mode a Rocket.Chat token of the same Rocket.Chat user, sealed with the new
    /// token, so the new session is forwarded like any other.
    pub async fn extend_upstream(
        &self,
        from: &Session,
        token: &Token,
        session: &mut Session,
    ) -> Result<(), GatewayError> {
        let UpstreamIdentity::RocketChat(bridge) = self else {
            return Ok(());
        };
        let upstream = from.upstream.as_ref().ok_or(GatewayError::NotLoggedIn)?;
        let rc_token = bridge.create_token(&upstream.user_id).await?;
        session.upstream = Some(token.seal(&upstream.user_id, &rc_token));
        Ok(())
    }

    /// A resumed session's upstream token, renewed if it nears its expiry (the renewal is
    /// stored).
    pub async fn refresh_on_resume(
        &self,
        store: &dyn SessionStore,
        token: &Token,
        session: &mut Session,
    ) -> Result<(), GatewayError> {
        if let UpstreamIdentity::RocketChat(bridge) = self {
            upstream_token(bridge, store, token, session, false).await?;
        }
        Ok(())
    }

    /// What a proxied request with a live session carries upstream.
    pub(crate) async fn credential<'a>(
        &self,
        store: &dyn SessionStore,
        creds: &'a Credentials,
        session: &'a Session,
    ) -> Result<UpstreamCredential<'a>, GatewayError> {
        match self {
            // The client's own credentials, checked, go up.
            UpstreamIdentity::TrustedHeaders => Ok(UpstreamCredential {
                user_id: &creds.user_id,
                token: Cow::Borrowed(creds.token.as_str()),
                as_cookies: false,
            }),
            // Boxed: the bridge's exchange would otherwise sit in every proxied request's future.
            UpstreamIdentity::RocketChat(bridge) => {
                let mut renewed = Session::clone(session);
                let rc_token = Box::pin(upstream_token(
                    bridge,
                    store,
                    &creds.token,
                    &mut renewed,
                    false,
                ))
                .await?;
                Ok(UpstreamCredential {
                    user_id: session.client_user_id(),
                    token: Cow::Owned(rc_token),
                    as_cookies: creds.from_cookies,
                })
            }
        }
    }

    /// True when a request the upstream refused with 401 is worth sending again with a fresh
    /// upstream token (only Rocket.Chat drops tokens of sessions authgate still holds).
    pub fn renews_refused_tokens(&self) -> bool {
        matches!(self, UpstreamIdentity::RocketChat(_))
    }

    /// A fresh upstream token after the upstream refused the session's one; `None` when the
    /// mode has none to renew.
    pub async fn renew_refused(
        &self,
        store: &dyn SessionStore,
        token: &Token,
        session: &mut Session,
    ) -> Option<Result<String, GatewayError>> {
        match self {
            UpstreamIdentity::TrustedHeaders => None,
            UpstreamIdentity::RocketChat(bridge) => {
                Some(upstream_token(bridge, store, token, session, true).await)
            }
        }
    }

    /// A socket in `trusted-headers` mode is bound to the live session its upgrade carries;
    /// Rocket.Chat learns a socket's user only from a DDP login.
    pub fn binds_sockets_by_headers(&self) -> bool {
        matches!(self, UpstreamIdentity::TrustedHeaders)
    }

    /// The `login` frame a socket login becomes upstream: a resume with the upstream's token
    /// (and, for a backend that trusts authgate, the user id, as identity headers carry it).
    pub async fn socket_resume(
        &self,
        store: &dyn SessionStore,
        opened: &mut Opened,
        id: &Value,
    ) -> Result<Value, GatewayError> {
        match self {
            UpstreamIdentity::TrustedHeaders => Ok(ddp::checked_resume(
                id,
                opened.token.as_str(),
                Some(opened.session.client_user_id()),
            )),
            UpstreamIdentity::RocketChat(bridge) => {
                let rc_token =
                    upstream_token(bridge, store, &opened.token, &mut opened.session, false)
                        .await?;
                Ok(ddp::checked_resume(id, &rc_token, None))
            }
        }
    }

    /// The REST login answer: built here in `trusted-headers` mode, or Rocket.Chat's own resume
    /// answer with authgate's token put back in `rocketchat` mode.
    pub async fn rest_login_answer(
        &self,
        store: &dyn SessionStore,
        mut opened: Opened,
        avatar_base: &str,
        ip: IpAddr,
    ) -> Result<String, GatewayError> {
        let bridge = match self {
            UpstreamIdentity::TrustedHeaders => {
                let me = login::me(&opened.session.user, avatar_base, opened.totp_enabled);
                return Ok(login::success_body(
                    opened.session.client_user_id(),
                    opened.token.as_str(),
                    me,
                ));
            }
            UpstreamIdentity::RocketChat(bridge) => bridge,
        };
        let mut answer = resume_upstream(
            bridge,
            store,
            &mut opened,
            "/api/v1/login",
            |t| json!({"resume": t}),
            ip,
        )
        .await?;
        if answer["status"] != json!("success")
            || answer["data"]["userId"].as_str() != Some(opened.session.client_user_id())
        {
            return Err(GatewayError::UpstreamUnreachable(
                "the upstream resume login did not succeed".into(),
            ));
        }
        answer["data"]["authToken"] = json!(opened.token.as_str());
        Ok(answer.to_string())
    }

    /// The result frame of a successful DDP login over REST: built here in `trusted-headers`
    /// mode; in `rocketchat` mode Rocket.Chat's own answer to a resume with its token,
    /// authgate's token put back.
    pub async fn login_result_frame(
        &self,
        store: &dyn SessionStore,
        mut opened: Opened,
        id: &Value,
        anonymous: bool,
        ip: IpAddr,
    ) -> Result<Value, GatewayError> {
        let bridge = match self {
            UpstreamIdentity::TrustedHeaders => {
                let kind = if opened.resumed { "resume" } else { "password" };
                let result = json!({"id": opened.session.client_user_id(), "token": opened.token.as_str(), "tokenExpires": {"$date": opened.session.expires_ms}, "type": kind});
                return Ok(ddp::result_frame(id, result));
            }
            UpstreamIdentity::RocketChat(bridge) => bridge,
        };
        let path = if anonymous {
            "/api/v1/method.callAnon/login"
        } else {
            "/api/v1/method.call/login"
        };
        let frame_for = |t: &str| {
            let call =
                json!({"msg": "method", "id": id, "method": "login", "params": [{"resume": t}]});
            json!({"message": call.to_string()})
        };
        let answer = resume_upstream(bridge, store, &mut opened, path, frame_for, ip).await?;
        let mut frame: Value = answer["message"]
            .as_str()
            .and_then(|m| serde_json::from_str(m).ok())
            .ok_or_else(|| {
                GatewayError::UpstreamUnreachable("the upstream login answer has no frame".into())
            })?;
        if frame["result"]["id"].as_str() != Some(opened.session.client_user_id()) {
            return Err(GatewayError::UpstreamUnreachable(
                "the upstream resume login did not succeed".into(),
            ));
        }
        frame["result"]["token"] = json!(opened.token.as_str());
        Ok(frame)
    }
}

/// The Rocket.Chat token behind a session, renewed when it nears Rocket.Chat's own expiry
/// (or when `force`, after the upstream refused it); the renewal is stored.
async fn upstream_token(
    bridge: &Bridge,
    store: &dyn SessionStore,
    token: &Token,
    session: &mut Session,
    force: bool,
) -> Result<String, GatewayError> {
    let sealed = session.upstream.as_ref().ok_or(GatewayError::NotLoggedIn)?;
    let opened = token.open(sealed).ok_or(GatewayError::NotLoggedIn)?;
    let renew_after = sealed.obtained_ms + (bridge.token_lifetime.as_millis() as u64) * 9 / 10;
    if !force && now_unix_ms() < renew_after {
        return Ok(opened);
    }
    let rc_user_id = sealed.user_id.clone();
    let fresh = bridge.create_token(&rc_user_id).await?;
    session.upstream = Some(token.seal(&rc_user_id, &fresh));
    if !store.replace(&token.hash(), session).await? {
        // Logged out while the token was being renewed: the session stays ended.
        return Err(GatewayError::NotLoggedIn);
    }
    Ok(fresh)
}

/// Continues a login upstream as a resume with the session's Rocket.Chat token, so
/// Rocket.Chat builds the answer its clients expect; retried once with a fresh token.
async fn resume_upstream(
    bridge: &Bridge,
    store: &dyn SessionStore,
    opened: &mut Opened,
    path: &str,
    body_for: impl Fn(&str) -> Value,
    ip: IpAddr,
) -> Result<Value, GatewayError> {
    let mut force = false;
    loop {
        let rc_token =
            upstream_token(bridge, store, &opened.token, &mut opened.session, force).await?;
        let (status, answer) = bridge
            .call(
                Method::POST,
                path,
                Some(&body_for(&rc_token)),
                None,
                Some(ip),
            )
            .await?;
        if status.is_success() {
            return Ok(answer);
        }
        if status != StatusCode::UNAUTHORIZED || force {
            return Err(GatewayError::UpstreamUnreachable(format!(
                "{path} resume answered {status}"
            )));
        }
        force = true;
    }
}
