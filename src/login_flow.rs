//! The one way in, whichever door a client uses (REST login, `method.callAnon/login`, a DDP
//! login frame): regulation, credentials, second factor, then a session, audited once. The
//! upstream mode adds its side to the session (`upstream_identity.rs`).

use std::net::IpAddr;
use std::time::Instant;

use http::HeaderValue;

use crate::directory::{AuthOutcome, Authenticated};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::login::{LoginRequest, Opened};
use crate::regulation::{self, Reservation, Settlement};
use crate::session::{Session, Token};
use crate::telemetry::NO_DIRECTORY;

/// Logs a client in. `None` is a body no login shape matched: the generic failure.
/// Counted (regulation, metrics) and audited once, whatever the entry point.
pub async fn log_in(
    gw: &Gateway,
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
    let outcome = match gw.regulation.reserve(regulated_name, ip).await {
        Err(e) => Err(e.into()),
        Ok(mut reservation) => {
            let outcome = match request {
                None => Err(GatewayError::LoginFailed),
                Some(request) => {
                    verify(
                        gw,
                        request,
                        (ip, user_agent),
                        &mut directory,
                        &mut reservation,
                    )
                    .await
                }
            };
            let settlement = match &outcome {
                Ok(_) => Settlement::Succeeded,
                Err(GatewayError::LoginFailed | GatewayError::TotpInvalid) => Settlement::Failed,
                Err(_) => Settlement::NotCounted,
            };
            let settled = gw.regulation.settle(reservation, settlement).await;
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
    gw.metrics.login(result, directory, started.elapsed());
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
    gw: &Gateway,
    request: LoginRequest,
    (ip, user_agent): (IpAddr, Option<&str>),
    directory: &mut Option<String>,
    reservation: &mut Reservation,
) -> Result<Opened, GatewayError> {
    match request {
        LoginRequest::Resume(token) => {
            let token = Token::from_client(&token);
            // Past the cache: the sealed upstream token may have been renewed elsewhere.
            let found = gw
                .store
                .find_uncached(&token.hash())
                .await?
                .filter(|s| gw.usable(s))
                .ok_or(GatewayError::LoginFailed)?;
            let mut session = Session::clone(&found);
            *directory = Some(session.user.directory.clone());
            let Some(profile) = gw.directories.current_profile(&session.user).await? else {
                // The user is gone or disabled: the session dies with them.
                let n = gw.store.revoke_user(&session.user.id).await?;
                gw.metrics.sessions_revoked(n);
                return Err(GatewayError::LoginFailed);
            };
            session.user = profile;
            gw.identity
                .refresh_on_resume(gw.store.as_ref(), &token, &mut session)
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
            let mut gate = gw.regulation.gate(reservation);
            let (decided_by, decided) = gw
                .directories
                .authenticate(&identity, &password, &mut gate)
                .await;
            *directory = decided_by.map(str::to_string);
            let AuthOutcome::Authenticated(user) = decided? else {
                return Err(GatewayError::LoginFailed);
            };
            // Only after the password: a wrong one is the generic 401 whatever the code.
            let totp_enabled = gw
                .totp
                .check(&user, code.as_deref(), gw.store.as_ref())
                .await?;
            let (token, session) = open_session(gw, &user, ip, user_agent).await?;
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
    gw: &Gateway,
    user: &Authenticated,
    ip: IpAddr,
    user_agent: Option<&str>,
) -> Result<(Token, Session), GatewayError> {
    let token = Token::generate();
    let mut session =
        Session::new(user.profile.clone(), gw.config.session.ttl).with_origin(ip, user_agent);
    gw.identity
        .open_upstream(&user.profile, &token, &mut session)
        .await?;
    gw.store.create(&token.hash(), &session).await?;
    gw.metrics.session_issued();
    Ok((token, session))
}
