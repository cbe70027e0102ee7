//! The revocation channel: every revocation is published on `{prefix}revocations` by the same
//! Lua script that deletes the session, and each instance evicts what it hears from its cache.
//!
//! The cache is only trusted while this subscription is provably alive. A PING goes down the
//! subscriber connection every `PING_EVERY`; Redis answers it after every message published
//! before it, so once the pong is in, everything revoked before the ping was sent has been
//! applied. Entries are trusted for `TRUST_WINDOW` after that moment: a connection that dies
//! silently stops the cache within that time, keeping the revocation delay under 100 ms even
//! then. A broken or reconnected subscription empties the cache (messages may have been lost
//! in between).

use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine;
use futures_util::{FutureExt, StreamExt};

use super::cache::SessionCache;
use super::redis_conn::Connector;

const PING_EVERY: Duration = Duration::from_millis(20);
const TRUST_WINDOW: Duration = Duration::from_millis(90);
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// A message on the channel: `t:<token hash>` or `u:<user id>`.
pub(super) fn token_message(hash: &str) -> String {
    format!("t:{hash}")
}

pub(super) fn user_message(user_id: &str) -> String {
    format!("u:{user_id}")
}

fn apply(cache: &SessionCache, payload: &[u8]) {
    match payload.split_at_checked(2) {
        Some((b"t:", hash)) => {
            let digest = base64::engine::general_purpose::STANDARD
                .decode(hash)
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok());
            match digest {
                Some(d) => cache.invalidate_token(&d),
                None => cache.flush(),
            }
        }
        Some((b"u:", user)) => match std::str::from_utf8(user) {
            Ok(u) => cache.invalidate_user(u),
            Err(_) => cache.flush(),
        },
        // Something this version does not understand: forget everything rather than guess.
        _ => cache.flush(),
    }
}

/// Runs until the cache is dropped (the store went away).
pub(super) fn spawn(connector: Arc<Connector>, cache: Weak<SessionCache>, channel: String) {
    tokio::spawn(async move {
        let mut reported = false;
        loop {
            let Some(c) = cache.upgrade() else { return };
            c.distrust();
            drop(c);
            match subscribe_and_listen(&connector, &cache, &channel).await {
                Ok(()) => return,
                Err(why) => {
                    // The server that broke the subscription has likely dropped the shared
                    // connection too.
                    connector.forget_current();
                    if !reported {
                        tracing::warn!(%why, "session revocation channel down; sessions are read from Redis until it is back");
                        reported = true;
                    }
                }
            }
            if let Some(c) = cache.upgrade() {
                c.distrust();
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    });
}

/// Returns Ok when the cache is gone, Err when the subscription broke.
async fn subscribe_and_listen(
    connector: &Connector,
    cache: &Weak<SessionCache>,
    channel: &str,
) -> Result<(), String> {
    let pubsub = connector.pubsub().await.map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = pubsub.split();
    tokio::time::timeout(TRUST_WINDOW * 10, sink.subscribe(channel))
        .await
        .map_err(|_| "SUBSCRIBE timed out".to_string())?
        .map_err(|e| e.to_string())?;
    match cache.upgrade() {
        // Whatever was cached before this subscription may have missed revocations.
        Some(c) => c.flush(),
        None => return Ok(()),
    }
    // The server is (back) up: open the shared connection now, before a request needs it.
    if let Err(e) = connector.lease().await {
        tracing::debug!(error = %e, "could not open the session store connection ahead of use");
    }
    tracing::debug!(%channel, "subscribed to session revocations");
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return Err("subscriber connection closed".into()) };
                let Some(c) = cache.upgrade() else { return Ok(()) };
                apply(&c, msg.get_payload_bytes());
            }
            _ = ticker.tick() => {
                let Some(c) = cache.upgrade() else { return Ok(()) };
                let sent = c.now_us();
                drop(c);
                match tokio::time::timeout(TRUST_WINDOW, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("PING on the subscriber connection timed out".into()),
                }
                let Some(c) = cache.upgrade() else { return Ok(()) };
                // Messages that arrived before the pong are queued already: apply them first.
                while let Some(Some(msg)) = stream.next().now_or_never() {
                    apply(&c, msg.get_payload_bytes());
                }
                c.trust_until(sent + TRUST_WINDOW.as_micros() as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Spelled from the crate root: `super` here is this file, not the session module.
    use crate::directory::UserProfile;
    use crate::session::invalidation::*;
    use crate::session::store::Session;
    use crate::session::token::Token;

    #[test]
    fn messages_evict_what_they_name_and_unknown_ones_flush() {
        let cache = SessionCache::new(100, Duration::from_secs(10));
        cache.trust_until(cache.now_us() + 60_000_000);
        let profile = |id: &str| UserProfile {
            id: id.into(),
            username: id.into(),
            name: id.into(),
            email: None,
            roles: vec![],
            directory: "local".into(),
        };
        let t1 = Token::generate();
        let t2 = Token::generate();
        let t3 = Token::generate();
        for (t, u) in [(&t1, "u1"), (&t2, "u1"), (&t3, "u2")] {
            let s = Arc::new(Session::new(profile(u), Duration::from_secs(60)));
            cache.insert(t.digest(), s, cache.epoch());
        }
        apply(&cache, token_message(&t1.hash().0).as_bytes());
        assert!(cache.get("u1", &t1.digest()).is_none());
        assert!(cache.get("u1", &t2.digest()).is_some());
        apply(&cache, user_message("u1").as_bytes());
        assert!(cache.get("u1", &t2.digest()).is_none());
        assert!(cache.get("u2", &t3.digest()).is_some());
        apply(&cache, b"x:what");
        assert!(cache.is_empty());
    }
}
