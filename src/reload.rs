//! Which configuration changes a reload cannot apply to a running process.

use std::net::SocketAddr;

use crate::config::Config;

/// Port 0 in `server.listen` stands for the port the system gave the listener: the config then
/// names where authgate really listens (for `me.avatarUrl`), at start and across reloads.
pub fn resolve_port_zero(configured: &mut [SocketAddr], bound: &[SocketAddr]) {
    for (addr, bound) in configured.iter_mut().zip(bound) {
        if addr.port() == 0 && addr.ip() == bound.ip() {
            *addr = *bound;
        }
    }
}

/// Keys whose new values only take effect after a restart: listeners, the runtime, and the
/// session store all outlive a reload. Everything else applies to the next request.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (old, new);
    let checks: [(&'static str, bool); 10] = [
        ("server.listen", o.server.listen != n.server.listen),
        (
            "server.tls",
            o.server.tls.is_some() != n.server.tls.is_some(),
        ),
        (
            "server.max_connections",
            o.server.max_connections != n.server.max_connections,
        ),
        (
            "server.worker_threads",
            o.server.worker_threads != n.server.worker_threads,
        ),
        ("metrics.listen", o.metrics != n.metrics),
        ("session.store", o.session.store != n.session.store),
        (
            "session.redis_url",
            o.session.redis_url != n.session.redis_url,
        ),
        (
            "session.redis_timeout",
            o.session.redis_timeout != n.session.redis_timeout,
        ),
        (
            "session.key_prefix",
            o.session.key_prefix != n.session.key_prefix,
        ),
        ("log.format", o.log.format != n.log.format),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
}
