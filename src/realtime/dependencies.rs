//! What the realtime socket uses ([`Realtime`]), apart from the code that uses it, so the
//! socket's modules can name it without referring back to their parent.

use std::sync::Arc;
use std::time::Duration;

use crate::forward::Upstream;
use crate::handlers::proxy::Proxy;
use crate::handlers::shared::SessionLookup;
use crate::login_flow::LoginFlow;
use crate::session::DynSessionStore;
use crate::tokens::Tokens;
use crate::upstream_identity::UpstreamIdentity;

/// What the realtime socket uses, built once per configuration (`compose.rs`). A socket's task
/// holds it until the socket closes, so a socket keeps the configuration it was opened under.
pub struct Realtime {
    /// SockJS's `/info` is a plain proxied request.
    pub proxy: Proxy,
    pub upstream: Arc<Upstream>,
    pub identity: Arc<UpstreamIdentity>,
    pub store: DynSessionStore,
    pub sessions: SessionLookup,
    /// DDP `login` frames take the one way in.
    pub login: Arc<LoginFlow>,
    /// The token methods a socket may call.
    pub tokens: Arc<Tokens>,
    /// How often a socket checks that its session still stands (`realtime.revocation_check`).
    pub revocation_check: Duration,
    pub rewrite_public_settings: bool,
}
