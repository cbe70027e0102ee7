//! Token management as Rocket.Chat clients do it: "log out other clients", "remove other
//! tokens", a new token for the caller, and personal access tokens (bots' `X-User-Id` /
//! `X-Auth-Token`). authgate answers all of them itself, in both upstream modes, over REST
//! (`rest.rs`), REST `method.call` and the WebSocket (`methods.rs`): forwarded, they would make
//! or return Rocket.Chat tokens, which must never reach a client, and leave authgate's sessions
//! alive.
//!
//! A personal access token is a session of its own kind: stored hashed like any session, named,
//! without expiry until removed, shown once, listed without its secret, refused everywhere while
//! `session.personal_access_tokens` is off, and created only after the second-factor check
//! Rocket.Chat applies (a TOTP user sends a code, unless the calling token bypasses it).

pub mod methods;
pub mod rest;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::directory::Directories;
use crate::error::GatewayError;
use crate::handlers::shared::{LoginBody, SessionLookup};
use crate::regulation::{Regulation, Settlement};
use crate::session::{PersonalToken, Session, StoreError, Token, TokenHash};
use crate::telemetry::Metrics;
use crate::totp::SecondFactor;

/// The token-management handler, built once per configuration: sessions to list, create and
/// revoke, and the second-factor step-up (directories, TOTP, regulation) some calls require.
pub struct Tokens {
    /// The session store and the upstream mode; `personal_access_tokens` says whether
    /// personal access tokens are allowed.
    pub sessions: SessionLookup,
    pub directories: Directories,
    pub regulation: Arc<Regulation>,
    pub totp: Arc<SecondFactor>,
    pub metrics: Metrics,
    /// `session.ttl`: how long a fresh token lives.
    pub session_ttl: Duration,
    /// The bounds of a request body, as for a login body.
    pub body: LoginBody,
}

/// The REST endpoints this module answers, as compared: lower case, no trailing slash.
const REST_ENDPOINTS: [(&str, Operation); 7] = [
    ("/api/v1/users.logout", Operation::LogoutUser),
    (
        "/api/v1/users.logoutotherclients",
        Operation::LogoutOtherClients,
    ),
    (
        "/api/v1/users.removeothertokens",
        Operation::RemoveOtherTokens,
    ),
    (
        "/api/v1/users.generatepersonalaccesstoken",
        Operation::Generate,
    ),
    (
        "/api/v1/users.regeneratepersonalaccesstoken",
        Operation::Regenerate,
    ),
    ("/api/v1/users.removepersonalaccesstoken", Operation::Remove),
    ("/api/v1/users.getpersonalaccesstokens", Operation::List),
];

/// The DDP methods this module answers (Meteor's and Rocket.Chat's names).
const METHODS: [(&str, Operation); 6] = [
    ("logoutOtherClients", Operation::LogoutOtherClients),
    ("removeOtherTokens", Operation::RemoveOtherTokens),
    ("getNewToken", Operation::GetNewToken),
    ("personalAccessTokens:generateToken", Operation::Generate),
    (
        "personalAccessTokens:regenerateToken",
        Operation::Regenerate,
    ),
    ("personalAccessTokens:removeToken", Operation::Remove),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `users.logout`: every token of the user, the caller's own included.
    LogoutUser,
    LogoutOtherClients,
    RemoveOtherTokens,
    GetNewToken,
    Generate,
    Regenerate,
    Remove,
    List,
}

impl Operation {
    /// The Rocket.Chat method name its errors carry in `details.method`.
    fn method_name(self) -> &'static str {
        match self {
            Operation::Generate => "personalAccessTokens:generateToken",
            Operation::Regenerate => "personalAccessTokens:regenerateToken",
            Operation::Remove => "personalAccessTokens:removeToken",
            Operation::LogoutOtherClients => "logoutOtherClients",
            Operation::RemoveOtherTokens => "removeOtherTokens",
            Operation::GetNewToken => "getNewToken",
            Operation::List => "users.getPersonalAccessTokens",
            Operation::LogoutUser => "users.logout",
        }
    }

    fn is_personal(self) -> bool {
        matches!(
            self,
            Operation::Generate | Operation::Regenerate | Operation::Remove | Operation::List
        )
    }
}

/// A path without its trailing slashes; the endpoint tables are compared with it without case.
fn comparable(path: &str) -> &str {
    path.trim_end_matches('/')
}

/// The operation a DDP method name asks for. Method names are compared without case so that
/// no spelling of one slips past to the upstream.
pub fn method_operation(name: &str) -> Option<Operation> {
    let name = name.replace('/', ":");
    METHODS
        .iter()
        .find(|(m, _)| m.eq_ignore_ascii_case(&name))
        .map(|(_, op)| *op)
}

/// True for the REST endpoints and `method.call[Anon]/<method>` URLs this module answers.
pub fn is_token_route(canonical: &str) -> bool {
    let c = comparable(canonical);
    REST_ENDPOINTS
        .iter()
        .any(|(p, _)| p.eq_ignore_ascii_case(c))
        || crate::ddp::rest_method_name(canonical).is_some_and(|m| method_operation(&m).is_some())
}

fn rest_operation(canonical: &str) -> Option<Operation> {
    let c = comparable(canonical);
    REST_ENDPOINTS
        .iter()
        .find(|(p, _)| p.eq_ignore_ascii_case(c))
        .map(|(_, op)| *op)
}

/// The session a call is made with, and its token.
pub(crate) struct Caller {
    pub token: Token,
    pub session: Arc<Session>,
}

/// One call, whichever transport it came by.
#[derive(Debug, Default)]
pub(crate) struct Call {
    pub token_name: Option<String>,
    pub bypass_two_factor: bool,
    /// The second-factor code and its method (`X-2fa-Code` / `X-2fa-Method`, or DDP's
    /// `{twoFactorCode, twoFactorMethod}` last parameter).
    pub code: Option<String>,
    pub code_method: Option<String>,
    /// `users.logout`'s `userId`: whose tokens to end (the caller's when absent).
    pub user_id: Option<String>,
}

/// A personal access token as its owner sees it listed.
pub(crate) struct Listed {
    pub created_ms: u64,
    pub token: PersonalToken,
}

pub(crate) enum Outcome {
    /// A new session of the caller (its token shown to the caller).
    Fresh {
        token: Token,
        expires_ms: u64,
    },
    Done,
    /// A new personal access token, shown this once.
    Secret(Token),
    Listed(Vec<Listed>),
    /// Every token of this user (the id the client knows) has ended.
    LoggedOut(String),
}

pub(crate) enum Refusal {
    /// REST: Rocket.Chat's 400 `The 'tokenName' param is required`.
    NameRequired,
    /// A `Meteor.Error` the Rocket.Chat method throws.
    Meteor {
        error: &'static str,
        reason: &'static str,
        method: &'static str,
    },
    Gateway(GatewayError),
}

impl From<GatewayError> for Refusal {
    fn from(e: GatewayError) -> Self {
        Refusal::Gateway(e)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Gateway(e.into())
    }
}

/// Runs one token-management call for `caller`.
pub(crate) async fn manage_tokens(
    tokens: &Tokens,
    caller: &Caller,
    op: Operation,
    call: Call,
    ip: IpAddr,
) -> Result<Outcome, Refusal> {
    if op.is_personal() && !tokens.sessions.personal_access_tokens {
        return Err(Refusal::Meteor {
            error: "error-personal-access-tokens-are-current-disabled",
            reason: "Personal Access Tokens are currently disabled",
            method: op.method_name(),
        });
    }
    match op {
        Operation::LogoutUser => {
            // Ending another user's sessions is the operator's `sessions revoke`, not a
            // client's: Rocket.Chat's own answer to a caller without the permission.
            let own = caller.session.client_user_id();
            if call.user_id.as_deref().is_some_and(|id| id != own) {
                return Err(Refusal::Meteor {
                    error: "error-not-allowed",
                    reason: "Not allowed",
                    method: op.method_name(),
                });
            }
            let revoked = tokens
                .sessions
                .store
                .revoke_user(&caller.session.user.id)
                .await?;
            tokens.metrics.sessions_revoked(revoked);
            tracing::info!(
                target: "authgate::audit",
                user_id = own,
                revoked,
                "every session ended (users.logout)"
            );
            Ok(Outcome::LoggedOut(own.to_string()))
        }
        Operation::LogoutOtherClients => {
            let (token, session) = fresh_session(tokens, caller).await?;
            revoke_other_sessions(tokens, caller, Some(&token.hash())).await?;
            Ok(Outcome::Fresh {
                token,
                expires_ms: session.expires_ms,
            })
        }
        Operation::RemoveOtherTokens => {
            revoke_other_sessions(tokens, caller, None).await?;
            Ok(Outcome::Done)
        }
        Operation::GetNewToken => {
            let (token, session) = fresh_session(tokens, caller).await?;
            Ok(Outcome::Fresh {
                token,
                expires_ms: session.expires_ms,
            })
        }
        Operation::List => {
            let mut listed: Vec<Listed> = personal_tokens(tokens, caller)
                .await?
                .into_iter()
                .filter_map(|(_, s)| {
                    s.personal.clone().map(|token| Listed {
                        created_ms: s.created_ms,
                        token,
                    })
                })
                .collect();
            listed.sort_by_key(|l| l.created_ms);
            Ok(Outcome::Listed(listed))
        }
        Operation::Generate | Operation::Regenerate | Operation::Remove => {
            step_up(tokens, caller, &call, ip).await?;
            let name = call
                .token_name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or(Refusal::NameRequired)?;
            change_personal_token(tokens, caller, op, &name, call.bypass_two_factor).await
        }
    }
}

async fn change_personal_token(
    tokens: &Tokens,
    caller: &Caller,
    op: Operation,
    name: &str,
    bypass_two_factor: bool,
) -> Result<Outcome, Refusal> {
    let user_id = caller.session.user.id.clone();
    let existing = personal_tokens(tokens, caller)
        .await?
        .into_iter()
        .find(|(_, s)| s.personal.as_ref().is_some_and(|p| p.name == name));
    let bypass_two_factor = match (op, &existing) {
        (Operation::Generate, Some(_)) => {
            return Err(Refusal::Meteor {
                error: "error-token-already-exists",
                reason: "A token with this name already exists",
                method: op.method_name(),
            })
        }
        (Operation::Generate, None) => bypass_two_factor,
        (_, None) => {
            return Err(Refusal::Meteor {
                error: "error-token-does-not-exists",
                reason: "Token does not exist",
                method: op.method_name(),
            })
        }
        (_, Some((hash, old))) => {
            if tokens.sessions.store.revoke(&user_id, hash).await? {
                tokens.metrics.sessions_revoked(1);
            }
            old.personal.as_ref().is_some_and(|p| p.bypass_two_factor)
        }
    };
    tracing::info!(
        target: "authgate::audit",
        user_id = caller.session.client_user_id(),
        token_name = name,
        action = op.method_name(),
        "personal access token"
    );
    if op == Operation::Remove {
        return Ok(Outcome::Done);
    }
    let token = Token::generate();
    let session = Session::personal(caller.session.user.clone(), &token, name, bypass_two_factor);
    store_new_session(tokens, caller, &token, session).await?;
    Ok(Outcome::Secret(token))
}

async fn personal_tokens(
    tokens: &Tokens,
    caller: &Caller,
) -> Result<Vec<(TokenHash, Arc<Session>)>, GatewayError> {
    let mut all = tokens
        .sessions
        .store
        .list_user(&caller.session.user.id)
        .await?;
    all.retain(|(_, s)| s.personal.is_some());
    Ok(all)
}

/// A new ordinary session for the caller's user (in `rocketchat` mode with its own
/// Rocket.Chat token).
async fn fresh_session(tokens: &Tokens, caller: &Caller) -> Result<(Token, Session), GatewayError> {
    let token = Token::generate();
    let session = Session::new(caller.session.user.clone(), tokens.session_ttl);
    let session = store_new_session(tokens, caller, &token, session).await?;
    Ok((token, session))
}

/// Gives a new session of the caller's user its upstream side (in `rocketchat` mode its own
/// Rocket.Chat token) and stores it under `token`.
async fn store_new_session(
    tokens: &Tokens,
    caller: &Caller,
    token: &Token,
    mut session: Session,
) -> Result<Session, GatewayError> {
    tokens
        .sessions
        .identity
        .extend_upstream(&caller.session, token, &mut session)
        .await?;
    tokens
        .sessions
        .store
        .create(&token.hash(), &session)
        .await?;
    tokens.metrics.session_issued();
    Ok(session)
}

/// Ends every ordinary session of the caller's user but the caller's own (and `keep`), on
/// every instance (each revocation is announced; sockets on them close). Personal access
/// tokens stay, as in Rocket.Chat.
async fn revoke_other_sessions(
    tokens: &Tokens,
    caller: &Caller,
    keep: Option<&TokenHash>,
) -> Result<usize, GatewayError> {
    let user_id = &caller.session.user.id;
    let own = caller.token.hash();
    let mut revoked = 0;
    for (hash, session) in tokens.sessions.store.list_user(user_id).await? {
        if session.personal.is_some() || hash == own || Some(&hash) == keep {
            continue;
        }
        if tokens.sessions.store.revoke(user_id, &hash).await? {
            revoked += 1;
        }
    }
    tokens.metrics.sessions_revoked(revoked);
    tracing::info!(
        target: "authgate::audit",
        user_id = caller.session.client_user_id(),
        revoked,
        "other sessions ended"
    );
    Ok(revoked)
}

/// Rocket.Chat's `twoFactorRequired`: a user with a second factor sends a current code,
/// unless the calling token is a personal access token made with `bypassTwoFactor`. Wrong
/// codes count as failed logins of the user, so a stolen session cannot guess codes freely.
async fn step_up(
    tokens: &Tokens,
    caller: &Caller,
    call: &Call,
    ip: IpAddr,
) -> Result<(), GatewayError> {
    if caller
        .session
        .personal
        .as_ref()
        .is_some_and(|p| p.bypass_two_factor)
    {
        return Ok(());
    }
    let user = tokens
        .directories
        .current_user(&caller.session.user)
        .await?
        .ok_or(GatewayError::NotLoggedIn)?;
    let login = Some(user.profile.username.as_str());
    // Codes are guesses like passwords: each takes its place in the user's and the IP's
    // counters before it is checked.
    let mut reservation = tokens.regulation.reserve(login, ip).await?;
    tokens
        .regulation
        .reserve_user(&mut reservation, &user.profile.id)
        .await?;
    // authgate's only second factor is TOTP; a code of another method cannot satisfy it.
    let code = call.code.as_deref().filter(|c| !c.is_empty()).filter(|_| {
        call.code_method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case("totp"))
    });
    let checked = tokens
        .totp
        .check(&user, code, tokens.sessions.store.as_ref())
        .await;
    // A right code proves the second factor, not the password: it clears no counter.
    let settlement = match &checked {
        Err(crate::totp::TotpError::Invalid) => Settlement::Failed,
        _ => Settlement::NotCounted,
    };
    tokens.regulation.settle(reservation, settlement).await?;
    checked.map(|_| ()).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_token_route_is_answered_here() {
        for path in [
            "/api/v1/users.logoutOtherClients",
            "/API/V1/USERS.LOGOUTOTHERCLIENTS/",
            "/api/v1/users.removeOtherTokens",
            "/api/v1/users.generatePersonalAccessToken",
            "/api/v1/users.regeneratePersonalAccessToken",
            "/api/v1/users.removePersonalAccessToken",
            "/api/v1/users.getPersonalAccessTokens",
            "/api/v1/method.call/logoutOtherClients",
            "/api/v1/method.callAnon/removeOtherTokens",
            "/api/v1/method.call/getNewToken",
            "/api/v1/method.call/personalAccessTokens:generateToken",
            "/api/v1/method.call/PERSONALACCESSTOKENS:REMOVETOKEN",
            "/api/v1/method.call/personalAccessTokens/regenerateToken",
        ] {
            assert!(is_token_route(path), "{path}");
        }
        for path in [
            "/api/v1/users.info",
            "/api/v1/method.call/sendMessage",
            "/api/v1/users.logoutOtherClientsX",
        ] {
            assert!(!is_token_route(path), "{path}");
        }
    }

    #[test]
    fn personal_tokens_keep_only_their_last_characters_and_never_expire() {
        let token = Token::generate();
        let profile = crate::directory::UserProfile {
            id: "u1".into(),
            username: "alice".into(),
            name: "Alice".into(),
            email: None,
            roles: vec!["user".into()],
            directory: "local".into(),
        };
        let session = Session::personal(profile, &token, "bot", false);
        let personal = session.personal.clone().unwrap();
        assert_eq!(personal.last_token_part, &token.as_str()[37..]);
        assert!(!serde_json::to_string(&session)
            .unwrap()
            .contains(token.as_str()));
        assert_eq!(session.time_to_live_ms(crate::session::now_unix_ms()), None);
        assert!(session.is_live(crate::session::now_unix_ms()));
    }
}
