//! What the upstream receives and how it gets there: the header rules (`headers.rs`) and the
//! exchange on pooled connections (`exchange.rs`), bodies streamed both ways.

mod exchange;
mod headers;

pub use exchange::Upstream;
pub use headers::{
    client_ip, ip_header_value, rewrite_request_headers, rewrite_response_headers, Identity,
    Origin, X_AUTH_TOKEN, X_REQUEST_ID, X_USER_ID,
};
