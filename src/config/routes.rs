//! `[routes]`: which paths are served without a session, and what happens to anonymous requests.

use super::problem::{problem, ConfigProblem};
use super::raw;
use super::upstream::UpstreamMode;
use crate::route::rules::{canonical_path, covers_gateway_path};

#[derive(Debug, Clone)]
pub struct RoutesConfig {
    /// Exact canonical paths served without a session.
    pub public_exact: Vec<String>,
    /// Path prefixes (written `"/prefix/*"`) served without a session.
    pub public_prefixes: Vec<String>,
    /// Forward requests that carry no credentials at all, without identity (the upstream then
    /// decides). Only sensible when the upstream authenticates by itself (`rocketchat` mode).
    pub anonymous_forward: bool,
}

pub(super) fn validate_routes(
    raw: raw::RawRoutes,
    mode: UpstreamMode,
    problems: &mut Vec<ConfigProblem>,
) -> RoutesConfig {
    let mut public_exact = Vec::new();
    let mut public_prefixes = Vec::new();
    for (i, entry) in raw
        .public
        .unwrap_or_else(|| vec!["/api/info".into()])
        .into_iter()
        .enumerate()
    {
        let key = format!("routes.public[{i}]");
        let (path, is_prefix) = match entry.strip_suffix('*') {
            Some(p) => (p.to_string(), true),
            None => (entry.clone(), false),
        };
        match canonical_path(&path) {
            Ok(c) if !path.contains('*') && !path.contains('?') => {
                if covers_gateway_path(&c, is_prefix) {
                    problems.push(problem(&key, format!("`{entry}` covers a login, logout or realtime path"), "public routes cannot include the gateway's own endpoints; use a narrower path"));
                } else if is_prefix {
                    if c.ends_with('/') {
                        public_prefixes.push(c);
                    } else {
                        problems.push(problem(&key, format!("`{entry}`: a prefix must end in \"/*\""), "write prefixes like \"/assets/*\""));
                    }
                } else {
                    public_exact.push(c);
                }
            }
            _ => problems.push(problem(&key, format!("`{entry}` is not a plain absolute path"), "write \"/exact/path\" or \"/prefix/*\" (no query, no dot segments, no encoded characters)")),
        }
    }
    let anonymous_forward = match raw.anonymous.as_deref() {
        None => mode == UpstreamMode::RocketChat,
        Some("deny") => false,
        Some("forward") if mode == UpstreamMode::RocketChat => true,
        Some("forward") => {
            problems.push(problem("routes.anonymous", "\"forward\" needs an upstream that authenticates by itself", "use it only with upstream.mode = \"rocketchat\", or list public paths in routes.public"));
            false
        }
        Some(other) => {
            problems.push(problem(
                "routes.anonymous",
                format!("`{other}` is not a policy"),
                "use \"deny\" or \"forward\"",
            ));
            false
        }
    };
    RoutesConfig {
        public_exact,
        public_prefixes,
        anonymous_forward,
    }
}
