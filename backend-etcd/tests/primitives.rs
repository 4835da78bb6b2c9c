//! Every primitive against a real etcd, with the store's own view checked: key layout, queue
//! order, downgrade in place, semaphore limits, revocation, and a key deleted from outside.

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use testkit::etcd::Etcd;
use tumbler_core::{Error, HoldMode, LockName, LostReason, SharedBackend};

const DEADLINE: Duration = Duration::from_secs(20);

async fn connect(e: &Etcd) -> SharedBackend {
    tumbler_etcd::connect_url(&format!("etcd://127.0.0.1:{}?ttl=2s", e.port()))
        .await
        .expect("connect")
}

fn name(text: &str) -> LockName {
    LockName::new(text).unwrap()
}

/// Waits until the store shows `holders` holders and `waiters` waiters on `name`.
async fn wait_for_state(locks: &SharedBackend, name: &LockName, holders: usize, waiters: usize) {
    let start = tokio::time::Instant::now();
    loop {
        let state = locks.state(name).await.expect("state");
        if state.holders.len() == holders && state.waiters == Some(waiters) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "state never showed {holders} holder(s) and {waiters} waiter(s): {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The keys under `prefix`, as etcd's gateway lists them.
async fn keys_under(e: &Etcd, prefix: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let answer = e
        .call(
            "/v3/kv/range",
            &json!({"key": b64.encode(prefix), "range_end": b64.encode(&end), "keys_only": true}),
        )
        .await
        .expect("range");
    answer["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| kv["key"].as_str())
                .filter_map(|k| b64.decode(k).ok())
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn mutex_uses_gos_key_and_hands_off_in_order() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let m = name("jobs/nightly");
    let held = a.mutex(m.clone()).unwrap().lock().await.unwrap();
    let keys = keys_under(&e, "jobs/nightly/").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let lease = keys[0].strip_prefix("jobs/nightly/").unwrap();
    assert!(
        !lease.is_empty()
            && lease
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "not Go's NAME/<lease hex>: {keys:?}"
    );
    let state = b.state(&m).await.unwrap();
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].mode, HoldMode::Exclusive);
    assert_eq!(state.holders[0].id, lease);
    assert_eq!(state.holders[0].token, Some(held.fencing_token()));

    assert!(b
        .mutex(m.clone())
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    let waiter = tokio::spawn({
        let b = b.clone();
        let m = m.clone();
        async move { b.mutex(m).unwrap().lock().await }
    });
    wait_for_state(&a, &m, 1, 1).await;
    assert!(!waiter.is_finished());
    let first = held.fencing_token();
    held.release().await.unwrap();
    let next = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(next.fencing_token() > first);
    next.release().await.unwrap();
    assert!(keys_under(&e, "jobs/nightly/").await.is_empty());
}

#[tokio::test]
async fn two_holds_of_one_name_in_one_instance_exclude() {
    let e = Etcd::start().await.expect("etcd");
    let a = connect(&e).await;
    let x = name("shared");
    let first = a.mutex(x.clone()).unwrap().lock().await.unwrap();
    assert!(a
        .mutex(x.clone())
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    let second = tokio::spawn({
        let a = a.clone();
        let x = x.clone();
        async move { a.mutex(x).unwrap().lock().await }
    });
    wait_for_state(&a, &x, 1, 1).await;
    let keys = keys_under(&e, "shared/").await;
    assert!(
        keys.iter().any(|k| k.contains('_')),
        "the second key has a suffix: {keys:?}"
    );
    assert!(!second.is_finished());
    first.release().await.unwrap();
    let second = tokio::time::timeout(DEADLINE, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    second.release().await.unwrap();
}

#[tokio::test]
async fn downgrade_keeps_the_queue_position() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let rw = name("config");
    let r1 = a.rwlock(rw.clone()).unwrap().read().await.unwrap();
    let r2 = b.rwlock(rw.clone()).unwrap().read().await.unwrap();
    assert!(b
        .rwlock(rw.clone())
        .unwrap()
        .try_write()
        .await
        .unwrap()
        .is_none());
    r1.release().await.unwrap();
    r2.release().await.unwrap();

    let w = a.rwlock(rw.clone()).unwrap().write().await.unwrap();
    let token = w.fencing_token();
    assert!(b
        .rwlock(rw.clone())
        .unwrap()
        .try_read()
        .await
        .unwrap()
        .is_none());
    let writer = tokio::spawn({
        let b = b.clone();
        let rw = rw.clone();
        async move { b.rwlock(rw).unwrap().write().await }
    });
    wait_for_state(&a, &rw, 1, 1).await;
    let r = w.downgrade().await.unwrap();
    assert_eq!(r.fencing_token(), token, "downgrade keeps the key");
    let state = a.state(&rw).await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    assert_eq!(state.holders[0].mode, HoldMode::Read);
    assert_eq!(state.waiters, Some(1), "the writer still waits: {state:?}");
    assert!(
        !writer.is_finished(),
        "a writer slipped in after the downgrade"
    );
    // Readers that came before the queued writer may share; none may pass it.
    assert!(b
        .rwlock(rw.clone())
        .unwrap()
        .try_read()
        .await
        .unwrap()
        .is_none());
    r.release().await.unwrap();
    let w2 = tokio::time::timeout(DEADLINE, writer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(w2.fencing_token() > token);
    w2.release().await.unwrap();
}

#[tokio::test]
async fn semaphore_counts_permits_and_rejects_other_limits() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let s = name("pool");
    let two = a.semaphore(s.clone(), 3).unwrap().acquire(2).await.unwrap();
    assert!(b
        .semaphore(s.clone(), 3)
        .unwrap()
        .try_acquire(2)
        .await
        .unwrap()
        .is_none());
    let one = b
        .semaphore(s.clone(), 3)
        .unwrap()
        .try_acquire(1)
        .await
        .unwrap()
        .unwrap();
    let state = a.state(&s).await.unwrap();
    let modes: Vec<_> = state.holders.iter().map(|h| h.mode.clone()).collect();
    assert_eq!(
        modes,
        [HoldMode::Permits(2), HoldMode::Permits(1)],
        "{state:?}"
    );
    let other = b.semaphore(s.clone(), 4).unwrap().try_acquire(1).await;
    assert!(matches!(other, Err(Error::Conflict { .. })), "{other:?}");
    two.release().await.unwrap();
    one.release().await.unwrap();
    wait_for_state(&a, &s, 0, 0).await;
}

#[tokio::test]
async fn revocation_and_a_key_deleted_from_outside() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let r = name("revocable");
    let held = a.mutex(r.clone()).unwrap().lock().await.unwrap();
    assert_eq!(b.request_revoke(&r).await.unwrap(), 1);
    tokio::time::timeout(DEADLINE, held.revoke_requested())
        .await
        .unwrap();
    assert!(
        held.lost_reason().is_none(),
        "a revocation request is not a loss"
    );
    assert_eq!(
        b.state(&r).await.unwrap().holders[0].token,
        Some(held.fencing_token())
    );

    let keys = keys_under(&e, "revocable/").await;
    let b64 = base64::engine::general_purpose::STANDARD;
    e.call("/v3/kv/deleterange", &json!({"key": b64.encode(&keys[0])}))
        .await
        .unwrap();
    let reason = tokio::time::timeout(DEADLINE, held.lost()).await.unwrap();
    assert_eq!(reason, LostReason::Deleted);
    assert!(matches!(held.release().await, Err(Error::NotOwner { .. })));
}

#[tokio::test]
async fn shutdown_revokes_the_lease_at_once() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let n = name("shut-down");
    let held = a.mutex(n.clone()).unwrap().lock().await.unwrap();
    a.shutdown().await.unwrap();
    assert_eq!(held.lost_reason(), Some(LostReason::Abandoned));
    // The lease is revoked, not left to expire: the lock is free well before the 2 s TTL.
    let got = b
        .mutex(n.clone())
        .unwrap()
        .lock_timeout(Duration::from_millis(1000))
        .await
        .unwrap();
    assert!(
        got.is_some(),
        "the shut-down backend's lock did not free up at once"
    );
    let after = a.mutex(n).unwrap().try_lock().await;
    assert!(matches!(after, Err(Error::Closed { .. })), "{after:?}");
}
