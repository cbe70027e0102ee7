//! tracing setup. Secrets never reach a log line: tokens, passwords and codes are never fields.
//! The level can change on reload; the format is fixed for the life of the process.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

struct Installed {
    level: reload::Handle<EnvFilter, Registry>,
    /// AUTHGATE_LOG was set: it wins over `log.level`, on reload too.
    from_env: bool,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

pub fn init(config: &LogConfig) {
    let (filter, from_env) = match EnvFilter::try_from_env("AUTHGATE_LOG") {
        Ok(f) => (f, true),
        Err(_) => (EnvFilter::new(&config.level), false),
    };
    let (filter, level) = reload::Layer::new(filter);
    let json = (config.format == LogFormat::Json).then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let pretty = (config.format == LogFormat::Pretty).then(|| {
        fmt::layer()
            .with_ansi(colour_wanted())
            .with_writer(std::io::stderr)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(pretty)
        .try_init();
    if installed.is_ok() {
        let _ = INSTALLED.set(Installed { level, from_env });
    }
}

/// Colour codes only help a person at a terminal; in a file, a pipe or journald they are noise.
/// NO_COLOR (https://no-color.org) set to anything non-empty turns them off everywhere.
fn colour_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Applies a new `log.level`. Does nothing when logging was not set up here or AUTHGATE_LOG rules.
pub fn set_level(level: &str) {
    let Some(installed) = INSTALLED.get() else {
        return;
    };
    if installed.from_env {
        tracing::info!("log.level is not applied: AUTHGATE_LOG overrides it");
        return;
    }
    match EnvFilter::try_new(level) {
        Ok(f) => {
            if let Err(e) = installed.level.reload(f) {
                tracing::warn!(error = %e, "cannot change the log level");
            }
        }
        Err(e) => tracing::warn!(error = %e, "log.level is not a filter"),
    }
}
