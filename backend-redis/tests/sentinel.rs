//! `redis+sentinel://` on a real Sentinel deployment (testkit: one master, two replicas, three
//! sentinels): the primitives through the sentinel URL, a new acquisition through the same
//! client after a failover and after the master is killed, and the connect errors.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, fresh_sentinel, logs, sentinel_backend, sentinel_url, PROMPT};
use testkit::redis_sentinel::RedisSentinel;
use testkit::resp::Reply;
use tumbler_core::{Error, SharedBackend};
use tumbler_redis::RedisConfig;

/// How long a client may take to find the new master after a failover has completed.
const FOLLOW: Duration = Duration::from_secs(30);

/// Keeps trying to take `name` (a failover in progress is a transient error) until `within`.
async fn lock_eventually(
    locks: &SharedBackend,
    name: &str,
    within: Duration,
) -> tumbler_core::MutexGuard {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match locks.mutex(name).unwrap().lock_timeout(PROMPT).await {
            Ok(Some(guard)) => return guard,
            Ok(None) => last = "still busy".into(),
            Err(error) => {
                assert!(error.is_transient(), "not a transient error: {error}");
                last = error.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no grant within {within:?} after the failover; last: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_primitive_works_through_the_sentinels() {
    logs();
    let deployment = fresh_sentinel().await;
    let url = sentinel_url(&deployment, "&prefix=app:");
    let a: SharedBackend = sentinel_backend(&url).await;
    let b: SharedBackend = sentinel_backend(&url).await;
    assert!(
        a.address().starts_with("redis+sentinel://"),
        "{}",
        a.address()
    );

    // Mutex: exclusion, the key on the master, increasing tokens.
    let first = a.mutex("jobs/nightly").unwrap().lock().await.unwrap();
    assert!(b
        .mutex("jobs/nightly")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    let master = &deployment.servers()[deployment.master().await.unwrap()];
    match master.cmd(&["GET", "app:jobs/nightly"]).await.unwrap() {
        Reply::Bulk(Some(v)) => {
            let v = String::from_utf8(v).unwrap();
            assert!(v.ends_with(&format!(":x:{}", first.fencing_token())), "{v}");
        }
        other => panic!("the master holds {other:?} at the lock key"),
    }
    let state = b.state("jobs/nightly").await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    // A waiter is handed the lock by the release.
    let waiter = b.mutex("jobs/nightly").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    eventually(PROMPT, "the waiter queued", || async {
        a.state("jobs/nightly").await.unwrap().waiters == Some(1)
    })
    .await;
    let token = first.fencing_token();
    first.release().await.unwrap();
    let second = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("the waiter was granted")
        .unwrap()
        .unwrap();
    assert!(second.fencing_token() > token);

    // Revocation reaches the holder.
    assert_eq!(a.request_revoke("jobs/nightly").await.unwrap(), 1);
    tokio::time::timeout(PROMPT, second.revoke_requested())
        .await
        .expect("revocation heard");
    second.release().await.unwrap();

    // Re-entrant mutex.
    let re = a.reentrant_mutex("re").unwrap();
    let outer = re.lock().await.unwrap();
    let inner = re.lock().await.unwrap();
    drop(inner);
    outer.release().await.unwrap();

    // Semaphore: all or nothing.
    let pool = a.semaphore("pool", 3).unwrap();
    let two = pool.acquire(2).await.unwrap();
    assert!(b
        .semaphore("pool", 3)
        .unwrap()
        .try_acquire(2)
        .await
        .unwrap()
        .is_none());
    let one = b
        .semaphore("pool", 3)
        .unwrap()
        .try_acquire(1)
        .await
        .unwrap()
        .expect("one permit left");
    two.release().await.unwrap();
    one.release().await.unwrap();

    // Read-write lock: readers share, a writer excludes, downgrade keeps the hold.
    let ra = a.rwlock("config").unwrap().read().await.unwrap();
    let rb = b.rwlock("config").unwrap().read().await.unwrap();
    assert!(a
        .rwlock("config")
        .unwrap()
        .try_write()
        .await
        .unwrap()
        .is_none());
    ra.release().await.unwrap();
    rb.release().await.unwrap();
    let w = a.rwlock("config").unwrap().write().await.unwrap();
    let r = w.downgrade().await.unwrap();
    assert!(b
        .rwlock("config")
        .unwrap()
        .try_write()
        .await
        .unwrap()
        .is_none());
    let shared = b.rwlock("config").unwrap().read().await.unwrap();
    r.release().await.unwrap();
    shared.release().await.unwrap();

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_follows_a_failover_and_a_killed_master() {
    logs();
    let deployment = fresh_sentinel().await;
    let locks: SharedBackend = sentinel_backend(&sentinel_url(&deployment, "")).await;
    let guard = locks.mutex("before").unwrap().lock().await.unwrap();
    let token = guard.fencing_token();
    guard.release().await.unwrap();

    for (round, kill) in [(1, false), (2, true)] {
        let promoted = if kill {
            deployment.kill_master().await.expect("kill the master")
        } else {
            deployment.failover().await.expect("failover")
        };
        // Until the sentinels have reconfigured the old master (and closed its clients), a
        // grant may still land there and be lost: the client must end up on the new one.
        let deadline = Instant::now() + FOLLOW;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let name = format!("after/{round}/{attempt}");
            let guard = lock_eventually(&locks, &name, FOLLOW).await;
            let on_new = deployment.servers()[promoted]
                .cmd(&["EXISTS", &name])
                .await
                .unwrap();
            let _ = guard.release().await;
            if on_new == Reply::Int(1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: grants still go elsewhere than the new master after {FOLLOW:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Tokens keep increasing for a name across the failovers.
    let again = lock_eventually(&locks, "before", FOLLOW).await;
    assert!(again.fencing_token() > token);
    again.release().await.unwrap();
    locks.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sentinel_setups_are_typed_errors_at_connect() {
    logs();
    let deployment = RedisSentinel::start().await.expect("start Redis Sentinel");
    // A master name the sentinels do not monitor: what to fix, with the names they know.
    let url = format!(
        "redis+sentinel://{}/no-such-master?connect_timeout=2s",
        deployment.sentinel_hosts()
    );
    match RedisConfig::from_url(&url).unwrap().connect().await {
        Err(Error::InvalidArgument { what, problem }) => {
            assert!(what.contains("master name"), "{what}");
            assert!(problem.contains("no-such-master"), "{problem}");
            assert!(problem.contains(deployment.master_name()), "{problem}");
        }
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
    // A data server listed as a sentinel.
    let data = deployment.servers()[0].addr();
    let url = format!("redis+sentinel://{data}/tumbler?connect_timeout=2s");
    match RedisConfig::from_url(&url).unwrap().connect().await {
        Err(Error::Connection { message, .. }) => {
            assert!(message.contains("not a sentinel"), "{message}")
        }
        other => panic!("expected Connection, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn no_sentinel_reachable_is_a_connection_error() {
    logs();
    let (p1, p2) = (testkit::free_port(), testkit::free_port());
    let url = format!("redis+sentinel://127.0.0.1:{p1},127.0.0.1:{p2}/tumbler?connect_timeout=2s");
    // Bounded: a hang would fail the test rather than stall it.
    let connecting = RedisConfig::from_url(&url).unwrap().connect();
    let outcome = tokio::time::timeout(Duration::from_secs(60), connecting)
        .await
        .expect("connect hung");
    match outcome {
        Err(Error::Connection { message, .. }) => {
            assert!(message.contains("no sentinel answered"), "{message}");
        }
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected Connection, got {:?}", other.map(|_| ())),
    }
}
