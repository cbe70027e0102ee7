//! One module per route kind authgate answers or forwards; each takes the gateway's shared
//! dependencies and the request, and none calls another's handler. The pipeline
//! (`pipeline.rs`) picks the handler; the realtime socket (`realtime.rs`) and token management
//! (`tokens/`) are handlers of their own outside this folder.

pub mod method_login;
pub mod proxy;
pub mod rest_login;
