//! The gateway one configuration builds (`compose.rs`): the handler of each route kind, each
//! holding only what it uses (`handlers/proxy.rs`'s `Proxy`, `login_flow.rs`'s `LoginFlow`,
//! `tokens/`'s `Tokens`), and the shared dependencies the running service, the pipeline and the
//! realtime socket reach directly (configuration, session store, directories, upstream, the
//! upstream mode, metrics). The request pipeline is `pipeline.rs`.

use std::sync::Arc;

use crate::config::Config;
use crate::credentials::Credentials;
use crate::directory::Directories;
use crate::error::GatewayError;
use crate::forward::Upstream;
use crate::handlers::proxy::Proxy;
use crate::handlers::shared::SessionLookup;
use crate::login_flow::LoginFlow;
use crate::session::{DynSessionStore, Session};
use crate::telemetry::Metrics;
use crate::tokens::Tokens;
use crate::upstream_identity::UpstreamIdentity;

/// Everything built from one configuration. A reload builds a new one and swaps it in
/// (`service.rs`); the session store and the metrics carry over from one to the next.
pub struct Gateway {
    pub config: Arc<Config>,
    pub store: DynSessionStore,
    pub directories: Directories,
    pub upstream: Arc<Upstream>,
    /// How the upstream learns who the user is (`upstream.mode`).
    pub identity: Arc<UpstreamIdentity>,
    pub metrics: Metrics,
    /// Finding the live session a request's credentials name.
    pub sessions: SessionLookup,
    /// The handler of proxied requests.
    pub proxy: Proxy,
    /// The one way in, and the login doors' handler.
    pub login: LoginFlow,
    /// The token-management handler.
    pub tokens: Tokens,
}

impl Gateway {
    /// The live session the credentials name (see [`SessionLookup::find`]).
    pub(crate) async fn session_for(
        &self,
        creds: &Credentials,
    ) -> Result<Option<Arc<Session>>, GatewayError> {
        self.sessions.find(creds).await
    }
}

/// The realtime socket holds the whole gateway and logs in through it.
impl AsRef<LoginFlow> for Gateway {
    fn as_ref(&self) -> &LoginFlow {
        &self.login
    }
}

/// The realtime socket holds the whole gateway and manages tokens through it.
impl AsRef<Tokens> for Gateway {
    fn as_ref(&self) -> &Tokens {
        &self.tokens
    }
}
