//! What one request leaves behind: the `X-Request-Id`, the access line (target
//! `authgate::access`) and the request metrics, emitted in one place whatever the outcome,
//! including a client that went away before the answer (logged as 499).
//!
//! The access line never holds a query string, a header value or a body: those are where
//! tokens, passwords and codes travel.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::telemetry::{InFlight, Metrics};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Where a request came from, as the forwarding headers write it.
pub struct Origin<'a> {
    /// The client's address (`X-Real-IP`).
    pub client: &'a HeaderValue,
    /// The TCP peer's address, appended to `X-Forwarded-For`.
    pub peer: &'a HeaderValue,
    /// Whether the peer is a trusted proxy, whose `X-Forwarded-For` is kept and extended.
    pub peer_trusted: bool,
    /// The client spoke TLS to authgate.
    pub https: bool,
}

/// An address as a header value. Per connection, not per request: formatting shows in profiles.
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP is a valid header value")
}

/// The longest `X-Request-Id` taken from a trusted proxy; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// The connection a request came on, as the gateway needs it per request.
#[derive(Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// The address as a header value, formatted once per connection.
    pub addr_value: HeaderValue,
    /// The connection is TLS to authgate itself.
    pub tls: bool,
}

impl Peer {
    pub fn new(addr: std::net::SocketAddr, tls: bool) -> Self {
        Self {
            addr,
            addr_value: ip_header_value(addr.ip()),
            tls,
        }
    }
}

/// What a request is, as every step after its arrival reads it (by shared reference): its id,
/// where it came from and how. Fixed when the request arrives; what is learned later is
/// returned by the handlers ([`Learned`]) and kept in the [`AccessScope`].
pub struct RequestFacts {
    pub request_id: HeaderValue,
    pub client_ip: IpAddr,
    /// The TCP peer's address.
    pub peer: IpAddr,
    /// The TCP peer is a trusted proxy (its forwarding headers count).
    pub peer_trusted: bool,
    /// `client_ip` and `peer` as header values, for the forwarding headers.
    pub client_value: HeaderValue,
    pub peer_value: HeaderValue,
    /// The client spoke TLS to authgate.
    pub tls: bool,
}

/// What a handler learned while deciding a request, returned with its answer (or its error)
/// for the access line and the metrics.
#[derive(Default)]
pub struct Learned {
    /// The user the request acted as: a live session's, or the one who just logged in.
    pub user_id: Option<String>,
    /// Time until the upstream's response head, when the request was forwarded.
    pub upstream: Option<Duration>,
}

impl Learned {
    /// Only who the request acted as.
    pub fn user(user_id: Option<String>) -> Self {
        Self {
            user_id,
            upstream: None,
        }
    }
}

impl RequestFacts {
    pub fn origin(&self) -> Origin<'_> {
        Origin {
            client: &self.client_value,
            peer: &self.peer_value,
            peer_trusted: self.peer_trusted,
            https: self.tls,
        }
    }
}

fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:+/=@".contains(c))
}

/// The request's id: a trusted proxy's `X-Request-Id` when it is one plain token, otherwise a
/// fresh random one (a client could otherwise forge ids to muddle the logs).
pub fn request_id(headers: &HeaderMap, peer_trusted: bool) -> HeaderValue {
    if peer_trusted {
        let mut given = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(v), None) = (given.next(), given.next()) {
            if acceptable_id(v) {
                return v.clone();
            }
        }
    }
    let mut id = [0u8; 32];
    crate::hex::encode_into(&rand::random::<u128>().to_be_bytes(), &mut id);
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

/// Emits the access line and the request metrics once, on `finish` or on drop. What the
/// pipeline learns on the way is written into it as soon as it is known, so a client that
/// leaves early (499) is logged with the path and user known by then.
pub struct AccessScope {
    pub facts: RequestFacts,
    /// The canonical path, once the request was routed.
    pub path: Option<crate::route::RouteText>,
    pub learned: Learned,
    method: Method,
    started: Instant,
    metrics: Metrics,
    _in_flight: InFlight,
    done: bool,
}

impl AccessScope {
    pub fn new(facts: RequestFacts, method: Method, metrics: &Metrics) -> Self {
        Self {
            facts,
            path: None,
            learned: Learned::default(),
            method,
            started: Instant::now(),
            _in_flight: metrics.in_flight(),
            metrics: metrics.clone(),
            done: false,
        }
    }

    /// Keeps what a handler learned, over what the pipeline recorded before calling it.
    pub fn record(&mut self, learned: Learned) {
        if learned.user_id.is_some() {
            self.learned.user_id = learned.user_id;
        }
        if learned.upstream.is_some() {
            self.learned.upstream = learned.upstream;
        }
    }

    pub fn finish(&mut self, status: u16) {
        self.done = true;
        let took = self.started.elapsed();
        let (f, learned) = (&self.facts, &self.learned);
        self.metrics
            .request(status, took, learned.upstream.is_some());
        tracing::info!(
            target: "authgate::access",
            request_id = f.request_id.to_str().unwrap_or("-"),
            method = %self.method,
            path = self.path.as_deref().unwrap_or("-"),
            status,
            latency_ms = millis(took),
            user_id = learned.user_id.as_deref().unwrap_or("-"),
            client_ip = %f.client_ip,
            upstream_ms = learned.upstream.map(millis),
            "request"
        );
    }
}

impl Drop for AccessScope {
    fn drop(&mut self) {
        if !self.done {
            // The client closed the connection before the response head was ready.
            self.finish(499);
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_handler_learned_adds_to_what_the_pipeline_recorded() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let facts = RequestFacts {
            request_id: HeaderValue::from_static("id"),
            client_ip: ip,
            peer: ip,
            peer_trusted: false,
            client_value: ip_header_value(ip),
            peer_value: ip_header_value(ip),
            tls: false,
        };
        let metrics = Metrics::disabled();
        let mut scope = AccessScope::new(facts, Method::GET, &metrics);
        scope.learned.user_id = Some("u1".into());
        // The proxy learns the upstream time, not the user the pipeline already recorded.
        scope.record(Learned {
            user_id: None,
            upstream: Some(Duration::from_millis(3)),
        });
        assert_eq!(scope.learned.user_id.as_deref(), Some("u1"));
        assert_eq!(scope.learned.upstream, Some(Duration::from_millis(3)));
        // A login learns the user.
        scope.record(Learned::user(Some("u2".into())));
        assert_eq!(scope.learned.user_id.as_deref(), Some("u2"));
        assert_eq!(scope.learned.upstream, Some(Duration::from_millis(3)));
        scope.finish(200);
    }

    #[test]
    fn ids_come_from_trusted_proxies_only_and_only_when_plain() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h, true), "abc-123");
        assert_ne!(request_id(&h, false), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h, true), "has space");
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&h, true).len(), 32);
        h.append("x-request-id", HeaderValue::from_static("second"));
        assert_eq!(request_id(&h, true).len(), 32);
    }
}
