//! The one way in, whichever door a client uses (REST login, `method.callAnon/login`, a DDP
//! login frame): regulation, credentials, second factor, then a session, audited once. In
//! `rocketchat` mode a session also carries the Rocket.Chat token authgate swaps in upstream.

use std::net::IpAddr;
use std::time::Instant;

use http::HeaderValue;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::config::UpstreamMode;
use crate::directory::{AuthOutcome, Authenticated};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::login::LoginRequest;
use crate::regulation::{self, Reservation, Settlement};
use crate::session::{now_unix_ms, Session, Token};
use crate::telemetry::NO_DIRECTORY;

/// A session a login opened or resumed.
pub struct Opened {
    pub token: Token,
    pub session: Session,
    pub resumed: bool,
    pub totp_enabled: bool,
}

impl Gateway {
    pub fn rocketchat_mode(&self) -> bool {
        self.config.upstream.mode == UpstreamMode::RocketChat
    }

    /// Logs a client in. `None` is a body no login shape matched: the generic failure.
    /// Counted (regulation, metrics) and audited once, whatever the entry point.
    pub async fn log_in(
        &self,
        request: Option<LoginRequest>,
        ip: IpAddr,
        user_agent: Option<&str>,
        request_id: &HeaderValue,
    ) -> Result<Opened, GatewayError> {
        let started = Instant::now();
        let mut login_name = match &request {
            Some(LoginRequest::Password { identity, .. }) => Some(identity.as_str().to_string()),
            _ => None,
        };
        // A name no directory may be asked about fails like an unusable body, counted per IP.
        let request = match &login_name {
            Some(name) if !regulation::acceptable_login(name) => {
                login_name = Some(format!("{name:?}"));
                None
            }
            _ => request,
        };
        let regulated_name = request.as_ref().and(login_name.as_deref());
        let mut directory = None;
        // Each attempt takes its place in the counters before anything is verified, so blocked
        // attempts are refused unchecked (the right password too) and bursts cannot overrun them.
        let outcome = match self.regulation.reserve(regulated_name, ip).await {
            Err(e) => Err(e),
            Ok(mut reservation) => {
                let outcome = match request {
                    None => Err(GatewayError::LoginFailed),
                    Some(request) => {
                        self.verify(request, (ip, user_agent), &mut directory, &mut reservation)
                            .await
                    }
                };
                let settlement = match &outcome {
                    Ok(_) => Settlement::Succeeded,
                    Err(GatewayError::LoginFailed | GatewayError::TotpInvalid) => {
                        Settlement::Failed
                    }
                    Err(_) => Settlement::NotCounted,
                };
                let settled = self.regulation.settle(reservation, settlement).await;
                settled.and(outcome)
            }
        };
        let result = match &outcome {
            Ok(_) => "success",
            Err(GatewayError::LoginFailed) => "bad_credentials",
            Err(GatewayError::TotpRequired) => "totp_required",
            Err(GatewayError::TotpInvalid) => "totp_invalid",
            Err(GatewayError::LoginBlocked(_)) => "blocked",
            Err(_) => "dependency_error",
        };
        let directory = directory.as_deref().unwrap_or(NO_DIRECTORY);
        self.metrics.login(result, directory, started.elapsed());
        let kind = match &outcome {
            Ok(o) if o.resumed => "resume",
            _ => "password",
        };
        tracing::info!(
            target: "authgate::audit",
            request_id = request_id.to_str().unwrap_or("-"),
            login = login_name.as_deref().unwrap_or("-"),
            user_id = outcome.as_ref().map(|o| o.session.client_user_id()).unwrap_or("-"),
            directory,
            kind,
            outcome = result,
            client_ip = %ip,
            "login attempt"
        );
        outcome
    }

    /// `directory` is set to the directory that decided, as soon as one did.
    async fn verify(
        &self,
        request: LoginRequest,
        (ip, user_agent): (IpAddr, Option<&str>),
        directory: &mut Option<String>,
        reservation: &mut Reservation,
    ) -> Result<Opened, GatewayError> {
        match request {
            LoginRequest::Resume(token) => {
                let token = Token::from_client(&token);
                // Past the cache: the sealed upstream token may have been renewed elsewhere.
                let found = self
                    .store
                    .find_uncached(&token.hash())
                    .await?
                    .filter(|s| self.usable(s))
                    .ok_or(GatewayError::LoginFailed)?;
                let mut session = Session::clone(&found);
                *directory = Some(session.user.directory.clone());
                let Some(profile) = self.directories.current_profile(&session.user).await? else {
                    // The user is gone or disabled: the session dies with them.
                    let n = self.store.revoke_user(&session.user.id).await?;
                    self.metrics.sessions_revoked(n);
                    return Err(GatewayError::LoginFailed);
                };
                session.user = profile;
                if self.rocketchat_mode() {
                    self.upstream_token(&token, &mut session, false).await?;
                }
                Ok(Opened {
                    token,
                    session,
                    resumed: true,
                    totp_enabled: false,
                })
            }
            LoginRequest::Password {
                identity,
                password,
                code,
            } => {
                // The user the directory resolves is counted too, whatever name was typed; a
                // user over the limit is refused before the password is checked.
                let mut gate = self.regulation.gate(reservation);
                let (decided_by, decided) = self
                    .directories
                    .authenticate(&identity, &password, &mut gate)
                    .await;
                *directory = decided_by.map(str::to_string);
                let AuthOutcome::Authenticated(user) = decided? else {
                    return Err(GatewayError::LoginFailed);
                };
                // Only after the password: a wrong one is the generic 401 whatever the code.
                let totp_enabled = self
                    .totp
                    .check(&user, code.as_deref(), self.store.as_ref())
                    .await?;
                let (token, session) = self.open_session(&user, ip, user_agent).await?;
                Ok(Opened {
                    token,
                    session,
                    resumed: false,
                    totp_enabled,
                })
            }
        }
    }

    async fn open_session(
        &self,
        user: &Authenticated,
        ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Result<(Token, Session), GatewayError> {
        let token = Token::generate();
        let mut session =
            Session::new(user.profile.clone(), self.config.session.ttl).with_origin(ip, user_agent);
        if let Some(bridge) = &self.bridge {
            let rc_user_id = bridge.provision(&user.profile).await?;
            let rc_token = bridge.create_token(&rc_user_id).await?;
            session.upstream = Some(token.seal(&rc_user_id, &rc_token));
        }
        self.store.create(&token.hash(), &session).await?;
        self.metrics.session_issued();
        Ok((token, session))
    }

    /// The Rocket.Chat token behind a session, renewed when it nears Rocket.Chat's own expiry
    /// (or when `force`, after the upstream refused it); the renewal is stored.
    pub async fn upstream_token(
        &self,
        token: &Token,
        session: &mut Session,
        force: bool,
    ) -> Result<String, GatewayError> {
        let bridge = self
            .bridge
            .as_ref()
            .ok_or_else(|| GatewayError::Internal("no upstream bridge".into()))?;
        let sealed = session.upstream.as_ref().ok_or(GatewayError::NotLoggedIn)?;
        let opened = token.open(sealed).ok_or(GatewayError::NotLoggedIn)?;
        let renew_after = sealed.obtained_ms + (bridge.token_lifetime.as_millis() as u64) * 9 / 10;
        if !force && now_unix_ms() < renew_after {
            return Ok(opened);
        }
        let rc_user_id = sealed.user_id.clone();
        let fresh = bridge.create_token(&rc_user_id).await?;
        session.upstream = Some(token.seal(&rc_user_id, &fresh));
        self.store.create(&token.hash(), session).await?;
        Ok(fresh)
    }

    /// Continues a login upstream as a resume with the session's Rocket.Chat token, so
    /// Rocket.Chat builds the answer its clients expect; retried once with a fresh token.
    pub async fn resume_upstream(
        &self,
        opened: &mut Opened,
        path: &str,
        body_for: impl Fn(&str) -> Value,
        ip: IpAddr,
    ) -> Result<Value, GatewayError> {
        let bridge = self
            .bridge
            .as_ref()
            .ok_or_else(|| GatewayError::Internal("no upstream bridge".into()))?;
        let mut force = false;
        loop {
            let rc_token = self
                .upstream_token(&opened.token, &mut opened.session, force)
                .await?;
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

    /// The REST login answer: built here in `trusted-headers` mode, or Rocket.Chat's own resume
    /// answer with authgate's token put back in `rocketchat` mode.
    pub async fn rest_login_answer(
        &self,
        mut opened: Opened,
        avatar_base: &str,
        ip: IpAddr,
    ) -> Result<String, GatewayError> {
        if !self.rocketchat_mode() {
            let me = crate::login::me(&opened.session.user, avatar_base, opened.totp_enabled);
            return Ok(crate::login::success_body(
                opened.session.client_user_id(),
                opened.token.as_str(),
                me,
            ));
        }
        let mut answer = self
            .resume_upstream(&mut opened, "/api/v1/login", |t| json!({"resume": t}), ip)
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
}
