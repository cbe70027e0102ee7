//! Command-line and environment overrides of the config file (`serve --listen`,
//! `AUTHGATE_LISTEN`, `AUTHGATE_UPSTREAM`), so a container or a unit file can move the listener
//! and point at the backend without copying the file. They replace the file's values before
//! validation, so they are checked exactly as the file's keys are, and a problem names the
//! override it came from.

use super::problem::ConfigProblem;
use super::raw::{OneOrMany, RawConfig};

/// Values that win over the config file. Empty: the file decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    /// Replaces `server.listen` when non-empty.
    pub listen: Vec<String>,
    /// Replaces `upstream.url`.
    pub upstream_url: Option<String>,
}

/// The override flags and variables, as problems name them.
const LISTEN_ORIGIN: &str = "--listen/AUTHGATE_LISTEN";
const UPSTREAM_ORIGIN: &str = "--upstream/AUTHGATE_UPSTREAM";

impl ConfigOverrides {
    pub(super) fn apply(&self, raw: &mut RawConfig) {
        if !self.listen.is_empty() {
            let server = raw.server.get_or_insert_with(Default::default);
            server.listen = Some(OneOrMany::Many(self.listen.clone()));
        }
        if let Some(url) = &self.upstream_url {
            raw.upstream.get_or_insert_with(Default::default).url = Some(url.clone());
        }
    }

    /// Renames the keys of problems found in overridden values, so the operator looks at the
    /// flag or variable rather than at a file that is not in use for that key.
    pub(super) fn attribute(&self, problems: &mut [ConfigProblem]) {
        for p in problems {
            let origin = match p.key.as_str() {
                "server.listen" if !self.listen.is_empty() => LISTEN_ORIGIN,
                "upstream.url" if self.upstream_url.is_some() => UPSTREAM_ORIGIN,
                _ => continue,
            };
            p.key = format!("{origin}, overriding {}", p.key);
        }
    }
}
