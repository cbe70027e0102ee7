//! What the upstream receives and how it gets there: the header rules (`headers.rs`) and the
//! exchange on pooled connections (`exchange.rs`), bodies streamed both ways.

mod exchange;
mod headers;

pub use crate::access::{ip_header_value, Origin, X_REQUEST_ID};
pub use exchange::Upstream;
pub use headers::{
    client_ip, rewrite_request_headers, rewrite_response_headers, Identity, X_AUTH_TOKEN, X_USER_ID,
};
