//! Go's `api.Lock` / `consul lock` and `api.Semaphore` exclude with tumbler on the same keys.

mod common;

use std::time::Duration;

use common::{client, decode, server, GoClient, GO_LOCK_FLAGS, GO_SEMAPHORE_FLAGS};
use tumbler_core::{Error, HoldMode, LockName};

const PARAMS: &str = "ttl=10s&lock_delay=0s&request_timeout=3s";

#[tokio::test]
async fn go_lock_and_tumbler_mutex_exclude_both_ways() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    let go = GoClient::new(&server);
    let name = LockName::new("jobs/nightly").unwrap();
    let key = c.backend.mutex_key(&name).unwrap();
    assert_eq!(key, "tumbler/jobs/nightly/.lock");

    // Go holds: we are busy, then get it after Go's Unlock.
    let go_session = go.session("15s", "release").await;
    assert_eq!(go.lock_once(&key, &go_session).await, Ok(true));
    let mutex = c.locks.mutex(name.clone()).unwrap();
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "we got a lock Go holds"
    );
    let waiting = tokio::spawn(async move { mutex.lock_timeout(Duration::from_secs(20)).await });
    assert!(go.release(&key, &go_session, GO_LOCK_FLAGS).await);
    let guard = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("we did not get the lock Go released");

    // We hold: Go's Lock loop sees our session on a key with api.Lock's flags and waits.
    let entry = go.get(&key).await.expect("the lock key exists");
    assert_eq!(entry["Flags"].as_u64(), Some(GO_LOCK_FLAGS));
    let ours = c.backend.session_id().await.unwrap();
    assert_eq!(entry["Session"].as_str(), Some(ours.as_str()));
    assert_eq!(go.lock_once(&key, &go_session).await, Ok(false));
    assert!(!go.acquire(&key, &go_session, GO_LOCK_FLAGS, b"").await);
    guard.release().await.unwrap();
    assert_eq!(go.lock_once(&key, &go_session).await, Ok(true));
}

#[tokio::test]
async fn empty_prefix_matches_consul_lock_prefix() {
    let server = server().await;
    let c = client(&server, &format!("{PARAMS}&prefix=")).await;
    let go = GoClient::new(&server);
    // `consul lock service/web/leader cmd` locks `service/web/leader/.lock`.
    let session = go.session("15s", "release").await;
    assert_eq!(
        go.lock_once("service/web/leader/.lock", &session).await,
        Ok(true)
    );
    let mutex = c.locks.mutex("service/web/leader").unwrap();
    assert!(mutex.try_lock().await.unwrap().is_none());
    let state = c
        .locks
        .state(&LockName::new("service/web/leader").unwrap())
        .await
        .unwrap();
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].id, session);
    // api.Lock's Unlock: a release, so no lock-delay.
    assert!(
        go.release("service/web/leader/.lock", &session, GO_LOCK_FLAGS)
            .await
    );
    assert!(mutex
        .lock_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn go_semaphore_and_tumbler_share_permits() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    let go = GoClient::new(&server);
    let prefix = "tumbler/pool/";
    let go_session = go.session("15s", "delete").await;
    assert_eq!(go.semaphore_once(prefix, 2, &go_session).await, Ok(true));

    let sem = c.locks.semaphore("pool", 2).unwrap();
    let lease = sem
        .try_acquire(1)
        .await
        .unwrap()
        .expect("one of two permits is free");
    assert!(
        sem.try_acquire(1).await.unwrap().is_none(),
        "a third permit of two"
    );

    // The record is api.Semaphore's, with both holders.
    let record = decode(&go.get("tumbler/pool/.lock").await.unwrap());
    assert_eq!(record["Limit"], 2);
    let holders = record["Holders"].as_object().unwrap();
    assert_eq!(holders.len(), 2, "{record}");
    assert!(holders.contains_key(&go_session));
    let entry = go.get("tumbler/pool/.lock").await.unwrap();
    assert_eq!(entry["Flags"].as_u64(), Some(GO_SEMAPHORE_FLAGS));

    // Go sees the semaphore full.
    let other = go.session("15s", "delete").await;
    assert_eq!(go.semaphore_once(prefix, 2, &other).await, Ok(false));
    let state = c
        .locks
        .state(&LockName::new("pool").unwrap())
        .await
        .unwrap();
    let permits: u32 = state
        .holders
        .iter()
        .map(|h| match h.mode {
            HoldMode::Permits(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(permits, 2, "{state:?}");
    assert_eq!(
        state.waiters,
        Some(1),
        "Go's second contender waits: {state:?}"
    );

    // Go's holder dies: its session's keys are deleted, the holder is pruned, we get in.
    go.destroy(&go_session).await;
    let second = sem
        .acquire_timeout(1, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the dead Go holder's permit was not reusable");
    second.release().await.unwrap();
    lease.release().await.unwrap();
}

#[tokio::test]
async fn limit_and_kind_conflicts_are_reported() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    let go = GoClient::new(&server);
    let go_session = go.session("15s", "delete").await;
    assert_eq!(
        go.semaphore_once("tumbler/s/", 3, &go_session).await,
        Ok(true)
    );
    let wrong = c.locks.semaphore("s", 2).unwrap().try_acquire(1).await;
    assert!(matches!(wrong, Err(Error::Conflict { .. })), "{wrong:?}");
    let mutex = c.locks.mutex("s").unwrap().try_lock().await;
    assert!(matches!(mutex, Err(Error::Conflict { .. })), "{mutex:?}");

    // And the other way: Go's api.Lock refuses our semaphore key, Go's semaphore our mutex key.
    let held = c.locks.mutex("m").unwrap().lock().await.unwrap();
    let other = go.session("15s", "delete").await;
    assert!(go.semaphore_once("tumbler/m/", 2, &other).await.is_err());
    held.release().await.unwrap();
    let lease = c.locks.semaphore("t", 2).unwrap().acquire(1).await.unwrap();
    let lock_session = go.session("15s", "release").await;
    assert!(go
        .lock_once("tumbler/t/.lock", &lock_session)
        .await
        .is_err());
    lease.release().await.unwrap();
}
