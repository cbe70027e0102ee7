//! The one way in, whichever door a client uses (REST login, `method.callAnon/login`, a DDP
//! login frame): regulation, credentials, second factor, then a session, audited once. The
//! upstream mode adds its side to the session (`upstream_identity.rs`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::directory::{AuthOutcome, Authenticated, Directories};
use crate::error::GatewayError;
use crate::handlers::shared::{LoginBody, SessionLookup};
use crate::login::{LoginRequest, Opened};
use crate::regulation::{self, Regulation, Reservation, Settlement};
use crate::session::{Session, Token};
use crate::telemetry::{Metrics, NO_DIRECTORY};
use crate::totp::SecondFactor;

/// The login service, built once per configuration: what logging in needs, and what the
/// login doors (`handlers/rest_login.rs`, `handlers/method_login.rs`) need around it.
pub struct LoginFlow {
    pub regulation: Arc<Regulation>,
    pub directories: Directories,
    pub totp: Arc<SecondFactor>,
    /// The session store and the upstream mode, as sessions are found and opened.
    pub sessions: SessionLookup,
    pub metrics: Metrics,
    /// `session.ttl`.
    pub session_ttl: Duration,
    /// The bounds of a login body.
    pub body: LoginBody,
    /// Where `me.avatarUrl` points: the configured public URL, else the first listen address.
    /// Never the client's `Host`, which anyone can set to a page of their own.
    pub avatar_base: String,
}

impl LoginFlow {
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
            Err(e) => Err(e.into()),
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
                settled.map_err(GatewayError::from).and(outcome)
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
                    .sessions
                    .store
                    .find_uncached(&token.hash())
                    .await?
                    .filter(|s| self.sessions.usable(s))
                    .ok_or(GatewayError::LoginFailed)?;
                let mut session = Session::clone(&found);
                *directory = Some(session.user.directory.clone());
                let Some(profile) = self.directories.current_profile(&session.user).await? else {
                    // The user is gone or disabled: the session dies with them.
                    let n = self.sessions.store.revoke_user(&session.user.id).await?;
                    self.metrics.sessions_revoked(n);
                    return Err(GatewayError::LoginFailed);
                };
                session.user = profile;
                self.sessions
                    .identity
                    .refresh_on_resume(self.sessions.store.as_ref(), &token, &mut session)
                    .await?;
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
                    .check(&user, code.as_deref(), self.sessions.store.as_ref())
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
            Session::new(user.profile.clone(), self.session_ttl).with_origin(ip, user_agent);
        self.sessions
            .identity
            .open_upstream(&user.profile, &token, &mut session)
            .await?;
        self.sessions.store.create(&token.hash(), &session).await?;
        self.metrics.session_issued();
        Ok((token, session))
    }
}
