//! Prometheus metrics. Every series is registered once, when the gateway starts, and the request
//! path only touches pre-resolved handles (atomic adds, no label lookups or allocations). With
//! `[metrics]` off every handle is a no-op.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Login outcomes, as the audit line and the `outcome` label spell them.
pub const LOGIN_OUTCOMES: [&str; 6] = [
    "success",
    "bad_credentials",
    "totp_required",
    "totp_invalid",
    "blocked",
    "dependency_error",
];
/// The `directory` label when no directory decided (unknown everywhere, unusable body, blocked).
pub const NO_DIRECTORY: &str = "none";
const DIRECTORIES: [&str; 3] = ["local", "ldap", NO_DIRECTORY];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Seconds; from a cache hit on a proxied request up to a slow LDAP login.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static METADATA: Metadata<'static> = Metadata::new("authgate", Level::INFO, None);

/// Why the gateway closed a client connection on its own (`reason` label of
/// `authgate_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClose {
    /// Nothing arrived within `server.first_byte_timeout` of the accept.
    FirstByteTimeout,
    /// A request head was not whole within `server.header_read_timeout` of its first byte.
    HeaderTimeout,
    /// A request body paused longer than `server.body_read_timeout`.
    BodyTimeout,
    /// A login body was not whole within `server.login_body_timeout`.
    LoginBodyTimeout,
    /// The HTTP/2 preface and first SETTINGS were not whole within `server.h2_preface_timeout`.
    H2PrefaceTimeout,
    /// No request in progress for `server.idle_timeout` (HTTP/1 keep-alive or HTTP/2).
    IdleTimeout,
    /// The TLS handshake did not finish within `server.header_read_timeout`.
    TlsHandshakeTimeout,
    /// A request the framing guard could not follow; the connection ends after its answer.
    UnfollowedFraming,
}

impl ConnectionClose {
    pub const ALL: [ConnectionClose; 8] = [
        Self::FirstByteTimeout,
        Self::HeaderTimeout,
        Self::BodyTimeout,
        Self::LoginBodyTimeout,
        Self::H2PrefaceTimeout,
        Self::IdleTimeout,
        Self::TlsHandshakeTimeout,
        Self::UnfollowedFraming,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::FirstByteTimeout => "first_byte_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::BodyTimeout => "body_timeout",
            Self::LoginBodyTimeout => "login_body_timeout",
            Self::H2PrefaceTimeout => "h2_preface_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::TlsHandshakeTimeout => "tls_handshake_timeout",
            Self::UnfollowedFraming => "unfollowed_framing",
        }
    }
}

/// Where an upstream request failed.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamFailure {
    Unreachable,
    Timeout,
}

struct Handles {
    recorder: Option<PrometheusRecorder>,
    prometheus: Option<PrometheusHandle>,
    logins: Vec<(&'static str, &'static str, Counter)>,
    login_seconds: Histogram,
    requests: [Counter; 5],
    proxied: [Counter; 5],
    proxied_seconds: Histogram,
    upstream_unreachable: Counter,
    upstream_timeout: Counter,
    sessions_issued: Counter,
    sessions_revoked: Counter,
    in_flight: Gauge,
    reloads_ok: Counter,
    reloads_failed: Counter,
    connections_closed: [Counter; 8],
}

#[derive(Clone)]
pub struct Metrics {
    h: Arc<Handles>,
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::from_static_parts(k, v))
        .collect();
    Key::from_parts(name, labels)
}

fn class_index(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
}

impl Metrics {
    /// Handles that record nothing (`[metrics]` off).
    pub fn disabled() -> Self {
        Self::with(None)
    }

    pub fn enabled() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        Self::with(Some(recorder))
    }

    fn with(recorder: Option<PrometheusRecorder>) -> Self {
        let r = recorder.as_ref();
        let counter = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            r.map_or(Counter::noop(), |r| {
                r.register_counter(&key(name, labels), &METADATA)
            })
        };
        let histogram = |name: &'static str| {
            r.map_or(Histogram::noop(), |r| {
                r.register_histogram(&key(name, &[]), &METADATA)
            })
        };
        if let Some(r) = r {
            describe(r);
        }
        let mut logins = Vec::new();
        for outcome in LOGIN_OUTCOMES {
            for directory in DIRECTORIES {
                let c = counter(
                    "authgate_logins_total",
                    &[("outcome", outcome), ("directory", directory)],
                );
                logins.push((outcome, directory, c));
            }
        }
        let by_class = |name: &'static str| {
            STATUS_CLASSES.map(|class| counter(name, &[("status_class", class)]))
        };
        let h = Handles {
            logins,
            login_seconds: histogram("authgate_login_duration_seconds"),
            requests: by_class("authgate_requests_total"),
            proxied: by_class("authgate_proxied_requests_total"),
            proxied_seconds: histogram("authgate_proxied_request_duration_seconds"),
            upstream_unreachable: counter(
                "authgate_upstream_errors_total",
                &[("kind", "unreachable")],
            ),
            upstream_timeout: counter("authgate_upstream_errors_total", &[("kind", "timeout")]),
            sessions_issued: counter("authgate_sessions_issued_total", &[]),
            sessions_revoked: counter("authgate_sessions_revoked_total", &[]),
            in_flight: r.map_or(Gauge::noop(), |r| {
                r.register_gauge(&key("authgate_requests_in_flight", &[]), &METADATA)
            }),
            reloads_ok: counter("authgate_config_reloads_total", &[("result", "success")]),
            reloads_failed: counter("authgate_config_reloads_total", &[("result", "failure")]),
            connections_closed: ConnectionClose::ALL.map(|why| {
                counter(
                    "authgate_connections_closed_total",
                    &[("reason", why.label())],
                )
            }),
            prometheus: r.map(|r| r.handle()),
            recorder,
        };
        Self { h: Arc::new(h) }
    }

    /// The Prometheus text exposition, when metrics are on.
    pub fn render(&self) -> Option<String> {
        self.h.prometheus.as_ref().map(|p| p.render())
    }

    /// Folds recorded histogram samples into their buckets; run periodically so unscraped
    /// samples do not pile up.
    pub fn upkeep(&self) {
        if let Some(p) = &self.h.prometheus {
            p.run_upkeep();
        }
    }

    pub fn login(&self, outcome: &'static str, directory: &str, took: Duration) {
        self.h.login_seconds.record(took.as_secs_f64());
        let found = self
            .h
            .logins
            .iter()
            .find(|(o, d, _)| *o == outcome && *d == directory);
        match (found, &self.h.recorder) {
            (Some((_, _, c)), _) => c.increment(1),
            // A directory kind added later than this table: registered on first use.
            (None, Some(r)) => r
                .register_counter(
                    &Key::from_parts(
                        "authgate_logins_total",
                        vec![
                            Label::new("outcome", outcome),
                            Label::new("directory", directory.to_string()),
                        ],
                    ),
                    &METADATA,
                )
                .increment(1),
            (None, None) => {}
        }
    }

    /// One finished request; `proxied` when it was forwarded (whatever the upstream did).
    pub fn request(&self, status: u16, took: Duration, proxied: bool) {
        let class = class_index(status);
        self.h.requests[class].increment(1);
        if proxied {
            self.h.proxied[class].increment(1);
            self.h.proxied_seconds.record(took.as_secs_f64());
        }
    }

    pub fn upstream_error(&self, failure: UpstreamFailure) {
        match failure {
            UpstreamFailure::Unreachable => self.h.upstream_unreachable.increment(1),
            UpstreamFailure::Timeout => self.h.upstream_timeout.increment(1),
        }
    }

    pub fn session_issued(&self) {
        self.h.sessions_issued.increment(1);
    }

    pub fn sessions_revoked(&self, n: usize) {
        self.h.sessions_revoked.increment(n as u64);
    }

    /// Counts a request as in flight until the returned guard drops (also on cancellation).
    pub fn in_flight(&self) -> InFlight {
        self.h.in_flight.increment(1.0);
        InFlight(self.h.in_flight.clone())
    }

    /// `authgate_directory_up{directory}`: 1 while the directory answers its readiness check.
    pub fn directory_up(&self, directory: &'static str, up: bool) {
        if let Some(r) = &self.h.recorder {
            r.register_gauge(
                &key("authgate_directory_up", &[("directory", directory)]),
                &METADATA,
            )
            .set(if up { 1.0 } else { 0.0 });
        }
    }

    pub fn connection_closed(&self, why: ConnectionClose) {
        self.h.connections_closed[why as usize].increment(1);
    }

    pub fn reload(&self, ok: bool) {
        if ok {
            self.h.reloads_ok.increment(1);
        } else {
            self.h.reloads_failed.increment(1);
        }
    }
}

pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn describe(r: &PrometheusRecorder) {
    let d = |name: &'static str, unit: Option<Unit>, help: &'static str| {
        r.describe_counter(KeyName::from_const_str(name), unit, help.into())
    };
    d(
        "authgate_logins_total",
        None,
        "Login attempts by outcome and by the directory that decided them.",
    );
    d(
        "authgate_login_duration_seconds",
        Some(Unit::Seconds),
        "Time to answer a login attempt.",
    );
    d(
        "authgate_requests_total",
        None,
        "Requests answered, by status class.",
    );
    d(
        "authgate_proxied_requests_total",
        None,
        "Requests forwarded to the upstream, by the status class of the answer.",
    );
    d(
        "authgate_proxied_request_duration_seconds",
        Some(Unit::Seconds),
        "Time from a forwarded request's arrival to its response head.",
    );
    d(
        "authgate_upstream_errors_total",
        None,
        "Forwarded requests that got no answer from the upstream.",
    );
    d(
        "authgate_sessions_issued_total",
        None,
        "Sessions created by successful logins.",
    );
    d(
        "authgate_sessions_revoked_total",
        None,
        "Sessions ended by logout or because their user is gone.",
    );
    d(
        "authgate_requests_in_flight",
        None,
        "Requests being handled now.",
    );
    r.describe_gauge(
        KeyName::from_const_str("authgate_directory_up"),
        None,
        "1 while the directory answers its readiness check, 0 while it does not.".into(),
    );
    d(
        "authgate_config_reloads_total",
        None,
        "Configuration reloads (SIGHUP), applied or rejected.",
    );
    d(
        "authgate_connections_closed_total",
        None,
        "Client connections the gateway closed itself, by the bound that ran out.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_code() {
        assert_eq!(class_index(101), 0);
        assert_eq!(class_index(204), 1);
        assert_eq!(class_index(404), 3);
        assert_eq!(class_index(599), 4);
        assert_eq!(class_index(999), 4);
    }

    #[test]
    fn rendered_text_has_the_series() {
        let m = Metrics::enabled();
        m.login("success", "local", Duration::from_millis(20));
        m.request(200, Duration::from_millis(3), true);
        let _g = m.in_flight();
        let text = m.render().unwrap();
        assert!(
            text.contains(r#"authgate_logins_total{outcome="success",directory="local"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"authgate_proxied_requests_total{status_class="2xx"} 1"#));
        assert!(text.contains("authgate_requests_in_flight 1"));
        assert!(text.contains("authgate_login_duration_seconds_bucket"));
        assert!(Metrics::disabled().render().is_none());
    }
}
