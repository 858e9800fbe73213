//! `RedisCoordinationStore` against redis-server: every `CoordinationStore` method, the
//! `flowcraft:` prefix, the leader lease (exclusive, renewable, released only by its holder,
//! lapsing), wake-ups, and a dead Redis (errors within a timeout, no panic, the local
//! fallback keeps coordinating). Switched on by `FLOWCRAFT_EMULATORS=1` (scripts/test.sh);
//! `REDIS_URL` from the environment.

mod support;

use flowcraft_azure::Error;
use flowcraft_azure::adapter::queue_adapter::WakeSignal;
use flowcraft_azure::adapter::redis_store::{RedisCoordinationStore, WithLocalFallback};
use flowcraft_azure::distributed::ports::CoordinationStore;
use std::sync::Arc;
use std::time::Duration;
use support::{emulators_enabled, require_reachable, unique};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".to_string())
}

async fn store() -> RedisCoordinationStore {
    let url = redis_url();
    require_reachable("redis", &url);
    let store = RedisCoordinationStore::connect(&url).await.unwrap();
    store.ping().await.expect("redis answers PING");
    store
}

/// A raw connection to look at keys behind the store's back.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn pttl(key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut raw().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn increment_counts_up_and_sets_the_ttl_under_the_prefix() {
    if !emulators_enabled("increment_counts_up_and_sets_the_ttl_under_the_prefix") {
        return;
    }
    let store = store().await;
    let key = unique("incr");
    let ttl = Duration::from_secs(60);
    assert_eq!(store.increment(&key, ttl).await.unwrap(), 1);
    assert_eq!(store.increment(&key, ttl).await.unwrap(), 2);
    let stored: String = redis::cmd("GET")
        .arg(format!("flowcraft:{key}"))
        .query_async(&mut raw().await)
        .await
        .unwrap();
    assert_eq!(stored, "2");
    let left = pttl(&format!("flowcraft:{key}")).await;
    assert!(left > 0 && left <= 60_000, "{left}");
    // A key given with the prefix is the same key.
    assert_eq!(
        store
            .increment(&format!("flowcraft:{key}"), ttl)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn set_if_not_exists_get_extend_and_delete() {
    if !emulators_enabled("set_if_not_exists_get_extend_and_delete") {
        return;
    }
    let store = store().await;
    let key = format!("flowcraft:{}", unique("nx"));
    let ttl = Duration::from_secs(30);
    assert!(store.set_if_not_exists(&key, "a", ttl).await.unwrap());
    assert!(!store.set_if_not_exists(&key, "b", ttl).await.unwrap());
    assert_eq!(store.get(&key).await.unwrap().as_deref(), Some("a"));
    assert!(
        store
            .extend_ttl(&key, Duration::from_secs(600))
            .await
            .unwrap()
    );
    assert!(pttl(&key).await > 30_000);
    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert!(!store.extend_ttl(&key, ttl).await.unwrap());
}

#[tokio::test]
async fn set_add_counts_distinct_members_and_keeps_its_ttl() {
    if !emulators_enabled("set_add_counts_distinct_members_and_keeps_its_ttl") {
        return;
    }
    let store = store().await;
    let key = format!("flowcraft:join:{}", unique("set"));
    let ttl = Some(Duration::from_secs(60));
    assert_eq!(store.set_add(&key, "a", ttl).await.unwrap(), 1);
    assert_eq!(
        store.set_add(&key, "a", ttl).await.unwrap(),
        1,
        "redelivery"
    );
    assert_eq!(store.set_add(&key, "b", ttl).await.unwrap(), 2);
    assert!(pttl(&key).await > 0);
    let untimed = format!("flowcraft:join:{}", unique("set"));
    assert_eq!(store.set_add(&untimed, "x", None).await.unwrap(), 1);
    assert_eq!(pttl(&untimed).await, -1, "no ttl asked, none set");
    store.delete(&untimed).await.unwrap();
}

#[tokio::test]
async fn counter_add_adds_deltas_with_and_without_ttl() {
    if !emulators_enabled("counter_add_adds_deltas_with_and_without_ttl") {
        return;
    }
    let store = store().await;
    let key = format!("flowcraft:count:{}", unique("c"));
    assert_eq!(store.counter_add(&key, 5, None).await.unwrap(), 5);
    assert_eq!(store.counter_add(&key, -2, None).await.unwrap(), 3);
    assert_eq!(pttl(&key).await, -1);
    assert_eq!(
        store
            .counter_add(&key, 0, Some(Duration::from_secs(60)))
            .await
            .unwrap(),
        3
    );
    assert!(pttl(&key).await > 0);
}

#[tokio::test]
async fn the_lease_is_exclusive_renewable_and_released_only_by_its_holder() {
    if !emulators_enabled("the_lease_is_exclusive_renewable_and_released_only_by_its_holder") {
        return;
    }
    let store = store().await;
    let name = unique("lease");
    let ttl = Duration::from_secs(30);
    assert!(store.try_acquire_lease(&name, "A", ttl).await.unwrap());
    assert!(!store.try_acquire_lease(&name, "B", ttl).await.unwrap());
    assert!(
        store.try_acquire_lease(&name, "A", ttl).await.unwrap(),
        "the holder keeps it"
    );
    assert!(store.renew_lease(&name, "A", ttl).await.unwrap());
    assert!(!store.renew_lease(&name, "B", ttl).await.unwrap());
    assert!(!store.release_lease(&name, "B").await.unwrap());
    assert!(!store.try_acquire_lease(&name, "B", ttl).await.unwrap());
    assert!(store.release_lease(&name, "A").await.unwrap());
    assert!(store.try_acquire_lease(&name, "B", ttl).await.unwrap());
    assert!(!store.renew_lease(&name, "A", ttl).await.unwrap());
    assert!(store.release_lease(&name, "B").await.unwrap());
}

#[tokio::test]
async fn a_lease_whose_holder_stopped_renewing_lapses() {
    if !emulators_enabled("a_lease_whose_holder_stopped_renewing_lapses") {
        return;
    }
    let store = store().await;
    let name = unique("lapse");
    assert!(
        store
            .try_acquire_lease(&name, "A", Duration::from_millis(200))
            .await
            .unwrap()
    );
    let mut tries = 0;
    while !store
        .try_acquire_lease(&name, "B", Duration::from_secs(30))
        .await
        .unwrap()
    {
        tries += 1;
        assert!(tries < 100, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !store
            .renew_lease(&name, "A", Duration::from_secs(1))
            .await
            .unwrap()
    );
    store.release_lease(&name, "B").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_reaches_a_waiting_worker_of_another_process_once() {
    if !emulators_enabled("a_wake_up_reaches_a_waiting_worker_of_another_process_once") {
        return;
    }
    let worker = Arc::new(store().await);
    let sender = store().await;
    let queue = unique("wq");
    let waiting = {
        let worker = worker.clone();
        let queue = queue.clone();
        tokio::spawn(async move { worker.wait(&queue, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.notify(&queue).await;
    let woken = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("woken before the wait ended")
        .unwrap();
    assert!(woken, "the wait ended by the token, not by the timeout");
    // The token was taken: the next wait ends without one.
    assert!(!worker.wait(&queue, Duration::from_millis(300)).await);
    // A token sent while nobody waits is kept for the next waiter (a few at most).
    for _ in 0..10 {
        sender.notify(&queue).await;
    }
    let mut taken = 0;
    while worker.wait(&queue, Duration::from_millis(200)).await {
        taken += 1;
        assert!(taken <= 10);
    }
    assert!((1..=4).contains(&taken), "{taken} tokens kept");
    // Other queues are not woken.
    sender.notify(&unique("other")).await;
    assert!(!worker.wait(&queue, Duration::from_millis(200)).await);
}

/// Awaits `future`, failing the test when it takes over 10 s (a hang).
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not return within 10 s"),
    }
}

/// The error of an outage: the connection failed or timed out.
fn outage<T: std::fmt::Debug>(result: Result<T, Error>) {
    let e = result.expect_err("an error while Redis is down");
    assert!(
        matches!(e, Error::Transport(_) | Error::Timeout(_)),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_dead_redis_gives_errors_within_a_timeout_and_the_fallback_keeps_working() {
    if !emulators_enabled(
        "a_dead_redis_gives_errors_within_a_timeout_and_the_fallback_keeps_working",
    ) {
        return;
    }
    // Nothing listens on port 1.
    let dead = bounded(
        "connect",
        RedisCoordinationStore::connect("redis://127.0.0.1:1"),
    )
    .await
    .expect("a well-formed URL is accepted while Redis is down");
    assert!(dead.is_down());
    let ttl = Duration::from_secs(5);
    outage(bounded("ping", dead.ping()).await);
    outage(bounded("increment", dead.increment("k", ttl)).await);
    outage(bounded("set_if_not_exists", dead.set_if_not_exists("k", "v", ttl)).await);
    outage(bounded("extend_ttl", dead.extend_ttl("k", ttl)).await);
    outage(bounded("delete", dead.delete("k")).await);
    outage(bounded("get", dead.get("k")).await);
    outage(bounded("set_add", dead.set_add("k", "m", None)).await);
    outage(bounded("counter_add", dead.counter_add("k", 1, None)).await);
    outage(bounded("try_acquire_lease", dead.try_acquire_lease("l", "A", ttl)).await);
    // After the fail-fast window the store really tries again (and fails again).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    outage(bounded("get after the window", dead.get("k")).await);
    // Wake-ups degrade to "not woken"; notify never fails.
    bounded("notify", dead.notify("q")).await;
    assert!(!bounded("wait", dead.wait("q", Duration::from_millis(500))).await);
    // The fallback coordinates in-process meanwhile.
    let fallback = WithLocalFallback::new(Arc::new(dead));
    assert!(fallback.set_if_not_exists("k", "v", ttl).await.unwrap());
    assert!(!fallback.set_if_not_exists("k", "v", ttl).await.unwrap());
    assert_eq!(fallback.get("k").await.unwrap().as_deref(), Some("v"));
    assert_eq!(fallback.set_add("s", "a", None).await.unwrap(), 1);
}

#[tokio::test]
async fn the_fallback_uses_redis_while_it_answers() {
    if !emulators_enabled("the_fallback_uses_redis_while_it_answers") {
        return;
    }
    let fallback = WithLocalFallback::new(Arc::new(store().await));
    let key = format!("flowcraft:{}", unique("fb"));
    assert!(
        fallback
            .set_if_not_exists(&key, "v", Duration::from_secs(30))
            .await
            .unwrap()
    );
    // Another process sees it: it is in Redis, not in this process.
    let other = store().await;
    assert_eq!(other.get(&key).await.unwrap().as_deref(), Some("v"));
}

mod reconciler {
    use super::*;
    use flowcraft_azure::adapter::reconciler::{PassOutcome, ReconcilerLoop};
    use flowcraft_azure::distributed::core::Backends;
    use flowcraft_azure::distributed::reconcile::ReconcilerConfig;
    use flowcraft_azure::flow::execute::BlueprintRegistry;

    fn reconciler(lease: Option<Arc<RedisCoordinationStore>>, name: &str) -> ReconcilerLoop {
        ReconcilerLoop::new(
            Backends::in_memory(),
            Arc::new(BlueprintRegistry::new()),
            ReconcilerConfig::default(),
            lease,
        )
        .with_lease_name(name)
    }

    #[tokio::test]
    async fn one_worker_of_the_fleet_reconciles_under_the_lease() {
        if !emulators_enabled("one_worker_of_the_fleet_reconciles_under_the_lease") {
            return;
        }
        let name = unique("reconciler");
        let a = reconciler(Some(Arc::new(store().await)), &name);
        let b = reconciler(Some(Arc::new(store().await)), &name);
        assert!(matches!(a.run_once().await.unwrap(), PassOutcome::Ran(_)));
        assert_eq!(b.run_once().await.unwrap(), PassOutcome::NotLeader);
        assert!(
            matches!(a.run_once().await.unwrap(), PassOutcome::Ran(_)),
            "the leader stays leader"
        );
        // The leader stops: it gives the lease up, and the other takes over.
        let stop = tokio_util::sync::CancellationToken::new();
        stop.cancel();
        a.run(stop).await;
        assert!(matches!(b.run_once().await.unwrap(), PassOutcome::Ran(_)));
    }

    #[tokio::test]
    async fn without_redis_or_while_it_is_down_every_worker_reconciles() {
        if !emulators_enabled("without_redis_or_while_it_is_down_every_worker_reconciles") {
            return;
        }
        let alone = reconciler(None, "unused");
        assert!(matches!(
            alone.run_once().await.unwrap(),
            PassOutcome::Ran(_)
        ));
        let dead = Arc::new(
            RedisCoordinationStore::connect("redis://127.0.0.1:1")
                .await
                .unwrap(),
        );
        let a = reconciler(Some(dead.clone()), "dead");
        let b = reconciler(Some(dead), "dead");
        assert!(matches!(a.run_once().await.unwrap(), PassOutcome::Ran(_)));
        assert!(matches!(b.run_once().await.unwrap(), PassOutcome::Ran(_)));
    }
}
