//! The gateway one configuration builds (`compose.rs`): the handler of each route kind, each
//! holding only what it uses (`handlers/proxy.rs`'s `Proxy`, `login_flow.rs`'s `LoginFlow`,
//! `tokens/`'s `Tokens`, `realtime.rs`'s `Realtime`), and the shared dependencies the running
//! service and the pipeline reach directly (configuration, session store, directories,
//! upstream, the upstream mode, metrics). The request pipeline is `pipeline.rs`.

use std::sync::Arc;

use crate::config::Config;
use crate::directory::Directories;
use crate::forward::Upstream;
use crate::handlers::proxy::Proxy;
use crate::handlers::shared::SessionLookup;
use crate::login_flow::LoginFlow;
use crate::realtime::Realtime;
use crate::session::DynSessionStore;
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
    pub login: Arc<LoginFlow>,
    /// The token-management handler.
    pub tokens: Arc<Tokens>,
    /// The realtime socket's handler (it shares the login and token handlers).
    pub realtime: Arc<Realtime>,
}
