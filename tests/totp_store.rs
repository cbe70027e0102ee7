//! The one-time-use record of TOTP steps (`SessionStore::accept_totp_step`), against the memory
//! store and a real Redis. Belongs with the shared store contract tests once those exist.

mod support;

use std::time::Duration;

use authgate::session::{MemoryStore, RedisStore, SessionStore};
use support::Redis;

/// The one-time-use record, against both stores.
async fn step_contract(store: &dyn SessionStore) {
    let keep = Duration::from_secs(60);
    assert!(store.accept_totp_step("u1", 100, keep).await.unwrap());
    assert!(!store.accept_totp_step("u1", 100, keep).await.unwrap());
    assert!(!store.accept_totp_step("u1", 99, keep).await.unwrap());
    assert!(store.accept_totp_step("u2", 99, keep).await.unwrap());
    assert!(store.accept_totp_step("u1", 101, keep).await.unwrap());
    assert!(!store.accept_totp_step("u1", 100, keep).await.unwrap());
    // Concurrent attempts at one step: exactly one wins.
    let wins =
        futures_util::future::join_all((0..8).map(|_| store.accept_totp_step("u3", 7, keep))).await;
    assert_eq!(wins.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
    // The record expires after `keep_for`.
    assert!(store
        .accept_totp_step("u4", 50, Duration::from_millis(200))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.accept_totp_step("u4", 40, keep).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn both_session_stores_record_totp_steps_atomically() {
    step_contract(&MemoryStore::new()).await;
    let redis = Redis::start();
    let store = RedisStore::new(&redis.url(), "authgate:", Duration::from_secs(1)).unwrap();
    step_contract(&store).await;
    let pttl = redis.command("PTTL authgate:{u:u1}:totp").unwrap();
    let pttl: i64 = pttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "{pttl}");
}
