//! One module per route kind authgate answers or forwards; each handler is a value built once
//! per configuration (`compose.rs`) holding only the dependencies it uses, and none calls
//! another's handler. The pipeline (`pipeline.rs`) picks the handler and calls it; the realtime
//! socket (`realtime.rs`) and token management (`tokens/`) are handlers of their own outside
//! this folder. `shared.rs` holds the steps several handlers take (finding a live session,
//! reading a login body).

pub mod method_login;
pub mod proxy;
pub mod rest_login;
pub mod shared;

use http::Response;

use crate::access::Learned;
use crate::error::{Body, GatewayError};

/// A handler's answer, or the error the pipeline turns into one, with what the handler learned
/// on the way (the user, the upstream time), kept for the access line whatever the outcome.
pub struct Handled {
    pub answer: Result<Response<Body>, GatewayError>,
    pub learned: Learned,
}

impl Handled {
    /// An answer that learned nothing.
    pub fn plain(answer: Result<Response<Body>, GatewayError>) -> Self {
        Self {
            answer,
            learned: Learned::default(),
        }
    }

    /// An answer given as `user_id` (when known).
    pub fn as_user(user_id: Option<String>, answer: Result<Response<Body>, GatewayError>) -> Self {
        Self {
            answer,
            learned: Learned::user(user_id),
        }
    }
}

impl From<GatewayError> for Handled {
    fn from(e: GatewayError) -> Self {
        Self::plain(Err(e))
    }
}
