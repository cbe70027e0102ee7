//! One contract for every session store, run against the memory store and real Redis
//! deployments: one server (with and without the session cache), Sentinel and Cluster.

mod support;

use std::time::Duration;

use authgate::config::{NodeAuth, RedisConfig, RedisTopology};
use authgate::directory::UserProfile;
use authgate::session::{MemoryStore, RedisStore, Session, SessionCache, SessionStore, Token};
use support::redis_topology::{Cluster, SentinelSet, MASTER_NAME};
use support::*;

fn profile(id: &str) -> UserProfile {
    UserProfile {
        id: id.into(),
        username: format!("{id}-name"),
        name: "N".into(),
        email: None,
        roles: vec!["user".into()],
        directory: "local".into(),
    }
}

async fn store_contract(store: &dyn SessionStore) {
    store.ping().await.unwrap();
    let t1 = Token::generate();
    let t2 = Token::generate();
    let t3 = Token::generate();
    let s1 = Session::new(profile("u1"), Duration::from_secs(3600));
    store.create(&t1.hash(), &s1).await.unwrap();
    store
        .create(
            &t2.hash(),
            &Session::new(profile("u1"), Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    store
        .create(
            &t3.hash(),
            &Session::new(profile("u2"), Duration::from_secs(3600)),
        )
        .await
        .unwrap();

    // Lookup is by user and hash; the raw token is not a key, and another user's id finds
    // nothing.
    let get = |u: &'static str, t: &Token| {
        let h = t.hash();
        async move { store.get(u, &h).await.unwrap().map(|s| (*s).clone()) }
    };
    assert_eq!(get("u1", &t1).await, Some(s1.clone()));
    assert_eq!(
        get("u1", &t1).await,
        Some(s1.clone()),
        "a second (cached) read"
    );
    assert_eq!(get("u2", &t1).await, None);
    assert_eq!(get("u1", &Token::generate()).await, None);
    assert_eq!(
        store
            .get("u1", &authgate::session::TokenHash(t1.as_str().to_string()))
            .await
            .unwrap(),
        None
    );
    // Resume logins find a session by its token alone.
    assert_eq!(
        store.find(&t1.hash()).await.unwrap().map(|s| (*s).clone()),
        Some(s1.clone())
    );
    assert_eq!(store.find(&Token::generate().hash()).await.unwrap(), None);

    // The per-user index.
    let mut listed: Vec<String> = store
        .list_user("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|(h, _)| h.0)
        .collect();
    listed.sort();
    let mut expected = vec![t1.hash().0, t2.hash().0];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(store.list_user("nobody").await.unwrap().len(), 0);

    // A live session can be rewritten in place (a renewed upstream token)...
    let mut renewed = s1.clone();
    renewed.user.name = "renewed".into();
    assert!(store.replace(&t1.hash(), &renewed).await.unwrap());
    assert_eq!(get("u1", &t1).await, Some(renewed.clone()));

    // Revoking one session (only its owner's id reaches it).
    assert!(!store.revoke("u2", &t1.hash()).await.unwrap());
    assert!(store.revoke("u1", &t1.hash()).await.unwrap());
    assert!(!store.revoke("u1", &t1.hash()).await.unwrap());
    assert_eq!(get("u1", &t1).await, None);
    assert_eq!(store.find(&t1.hash()).await.unwrap(), None);
    // ...but a revoked one is never brought back by a late rewrite.
    assert!(!store.replace(&t1.hash(), &renewed).await.unwrap());
    assert_eq!(get("u1", &t1).await, None);
    assert_eq!(store.find(&t1.hash()).await.unwrap(), None);
    assert_eq!(store.list_user("u1").await.unwrap().len(), 1);

    // Revoking every session of a user leaves others alone.
    assert!(get("u1", &t2).await.is_some());
    assert_eq!(store.revoke_user("u1").await.unwrap(), 1);
    assert_eq!(get("u1", &t2).await, None);
    assert!(get("u2", &t3).await.is_some());
    assert_eq!(store.revoke_user("u1").await.unwrap(), 0);

    // Sessions die at their expiry, by themselves.
    let short = Token::generate();
    store
        .create(
            &short.hash(),
            &Session::new(profile("u3"), Duration::from_millis(700)),
        )
        .await
        .unwrap();
    assert!(get("u3", &short).await.is_some());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(get("u3", &short).await, None, "served past its expiry");
    assert_eq!(store.list_user("u3").await.unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_meets_the_contract() {
    store_contract(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_store_meets_the_contract() {
    let redis = Redis::start();
    let store = RedisStore::new(&redis.url(), "test:", Duration::from_secs(1)).unwrap();
    store_contract(&store).await;
}

fn cached(redis: &RedisConfig) -> RedisStore {
    let cache = SessionCache::new(1000, Duration::from_secs(30));
    RedisStore::with_redis(redis, "test:", Duration::from_secs(1), Some(cache)).unwrap()
}

/// The cache starts trusted only once the revocation channel is confirmed alive.
async fn until_cache_trusted(store: &RedisStore) {
    let t = Token::generate();
    let _ = store.get("warm-up", &t.hash()).await;
    for _ in 0..100 {
        if store.cache().unwrap().trusted() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the revocation channel never came up");
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_redis_store_meets_the_contract() {
    let redis = Redis::start();
    let store = cached(&RedisConfig::single(&redis.url()));
    until_cache_trusted(&store).await;
    store_contract(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_found_by_token_alone_come_from_memory_until_revoked() {
    // How `rocketchat` mode looks sessions up: clients name their user by Rocket.Chat's id.
    let redis = Redis::start();
    let store = cached(&RedisConfig::single(&redis.url()));
    let other = RedisStore::new(&redis.url(), "test:", Duration::from_secs(1)).unwrap();
    until_cache_trusted(&store).await;
    let token = Token::generate();
    let session = Session::new(profile("u1"), Duration::from_secs(3600));
    store.create(&token.hash(), &session).await.unwrap();
    assert!(store.find(&token.hash()).await.unwrap().is_some());
    let before = redis.calls("get");
    for _ in 0..20 {
        let found = store.find(&token.hash()).await.unwrap();
        assert_eq!(found.map(|s| (*s).clone()), Some(session.clone()));
    }
    assert_eq!(redis.calls("get"), before, "a hot session went to Redis");
    // Revoked through another instance: gone from memory as soon as the message arrives.
    assert!(other.revoke("u1", &token.hash()).await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_millis(100);
    while store.find(&token.hash()).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "still served 100 ms after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_store_meets_the_contract() {
    let set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .unwrap();
    let sentinels = set
        .sentinels
        .iter()
        .map(|s| ("127.0.0.1".to_string(), s.port))
        .collect();
    let config = RedisConfig {
        topology: RedisTopology::Sentinel {
            sentinels,
            master_name: MASTER_NAME.into(),
            db: 0,
            auth: NodeAuth::default(),
        },
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(500),
    };
    let store = cached(&config);
    until_cache_trusted(&store).await;
    store_contract(&store).await;
    drop(set);
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_store_meets_the_contract() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let config = RedisConfig {
        topology: RedisTopology::Cluster {
            nodes: cluster.addrs(),
            auth: NodeAuth::default(),
        },
        wait_replicas: 0,
        wait_timeout: Duration::from_millis(500),
    };
    let store = cached(&config);
    until_cache_trusted(&store).await;
    store_contract(&store).await;
    // Every user's keys share one slot (the `{u:<id>}` hash tag).
    let keys = cluster.keys();
    assert!(keys.contains("test:{u:u2}:session:"), "{keys}");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_holds_only_hashes_and_every_key_expires() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    let keys = redis.keys();
    assert!(!keys.contains(&token), "raw token stored as a key: {keys}");
    let dump: Vec<String> = keys
        .lines()
        .filter(|l| l.starts_with("authgate:"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        dump.len(),
        3,
        "a session key, the user's index and the resume pointer: {keys}"
    );
    let hash = authgate::session::Token::from_client(&token).hash().0;
    assert!(
        dump.contains(&format!("authgate:{{u:{id}}}:session:{hash}")),
        "{dump:?}"
    );
    assert!(
        dump.contains(&format!("authgate:{{u:{id}}}:sessions")),
        "{dump:?}"
    );
    assert!(dump.contains(&format!("authgate:token:{hash}")), "{dump:?}");
    for key in &dump {
        let ttl: i64 = redis
            .command(&format!("PTTL {key}"))
            .unwrap()
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap();
        // ttl = 90 days by default.
        assert!(
            ttl > 89 * 86_400_000 && ttl <= 90 * 86_400_000,
            "{key} ttl {ttl}"
        );
        let value = redis.command(&format!("DUMP {key}")).unwrap();
        assert!(!value.contains(&token), "raw token inside {key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_sharing_redis_share_sessions_and_logouts() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let users = users_toml(&standard_users());
    let a = Gateway::start(&config_text(up.addr, Some(&redis.url()), ""), &users).await;
    let b = Gateway::start(&config_text(up.addr, Some(&redis.url()), ""), &users).await;
    let (id, token) = login(&a.url(""), "bob", "bob-password-2").await;
    assert_eq!(protected_status(&b, &id, &token).await, 200);
    assert_eq!(logout_status(&b, &id, &token).await, 200);
    assert_eq!(protected_status(&a, &id, &token).await, 401);
    assert_eq!(protected_status(&b, &id, &token).await, 401);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_ttl_comes_from_config() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let cfg = config_text(up.addr, Some(&redis.url()), "").replace(
        "redis_timeout = \"1s\"\n",
        "redis_timeout = \"1s\"\nttl = \"2s\"\n",
    );
    let gw = Gateway::start(&cfg, &users_toml(&standard_users())).await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    assert_eq!(protected_status(&gw, &id, &token).await, 200);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(protected_status(&gw, &id, &token).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_fails_closed_and_recovers() {
    let mut redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    redis.kill();
    let (status, body) = protected_json(&gw, &id, &token).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "error");
    assert_eq!(
        login_status(&gw.url(""), "alice", "alice-password-1").await,
        503
    );
    assert_eq!(
        up.count(),
        0,
        "nothing forwarded while sessions cannot be checked"
    );
    redis.restart();
    // Sessions were in the killed (non-persistent) Redis: they are gone, logins work again.
    let mut recovered = false;
    for _ in 0..50 {
        if login_status(&gw.url(""), "alice", "alice-password-1").await == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "logins did not recover after Redis came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_redis_times_out_into_503_and_recovers() {
    let redis = Redis::start();
    let up = RecordingUpstream::start().await;
    let gw = Gateway::start(
        &config_text(up.addr, Some(&redis.url()), ""),
        &users_toml(&standard_users()),
    )
    .await;
    let (id, token) = login(&gw.url(""), "alice", "alice-password-1").await;
    assert_eq!(protected_status(&gw, &id, &token).await, 200);
    redis.signal("STOP");
    let started = std::time::Instant::now();
    assert_eq!(protected_status(&gw, &id, &token).await, 503);
    // redis_timeout is 1s in the test config: the answer comes from the bound, not a hang.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        login_status(&gw.url(""), "bob", "bob-password-2").await,
        503
    );
    redis.signal("CONT");
    let mut recovered = false;
    for _ in 0..50 {
        if protected_status(&gw, &id, &token).await == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "did not recover after Redis answered again");
    assert_eq!(
        up.count(),
        2,
        "only the two authenticated /me calls were forwarded"
    );
}
