//! The promises of issue 12 on a real etcd: waiters are cheap to lose, an unreachable store is
//! an error, one name has one kind, nested names are independent, foreign keys are a conflict,
//! losses are named the same as on every store, and shutdown and drop paths release.

mod common;

use std::time::Duration;

use common::{conflict_text, connect, connect_both, connect_to, name};
use testkit::etcd::{Etcd, StoredKey};
use testkit::proxy::{FaultProxy, ProxyMode};
use tokio::time::Instant;
use tumbler_core::{ConnectionEvent, Error, LostReason};

const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `keys` under `prefix` until `check` accepts them.
async fn wait_for_keys(e: &Etcd, prefix: &str, what: &str, check: impl Fn(&[StoredKey]) -> bool) {
    let start = Instant::now();
    loop {
        let keys = e.range(prefix).await.expect("range");
        if check(&keys) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "never {what}: {keys:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- A.4: one name, one kind; nested names are independent -----------------------------

#[tokio::test]
async fn nested_names_are_independent() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let child = a.mutex("jobs/nightly").unwrap().lock().await.unwrap();
    let parent = name("jobs");
    let state = b.state(&parent).await.unwrap();
    assert!(state.holders.is_empty(), "{state:?}");
    assert_eq!(state.waiters, Some(0), "{state:?}");
    let got = b.mutex(parent.clone()).unwrap().try_lock().await.unwrap();
    assert!(
        got.is_some(),
        "the lock `jobs` was busy while only `jobs/nightly` was held"
    );
    // Waiting is independent too: `jobs` is granted while the child is still held.
    let g = got.unwrap();
    g.release().await.unwrap();
    let waited = tokio::time::timeout(DEADLINE, b.mutex(parent).unwrap().lock())
        .await
        .expect("`jobs` waited for `jobs/nightly`")
        .unwrap();
    // Names that look like another primitive's folders are locks of their own.
    for nested in ["jobs/read", "jobs/write", "jobs/sem"] {
        let held = b.mutex(nested).unwrap().try_lock().await.unwrap();
        assert!(held.is_some(), "{nested} was busy");
        held.unwrap().release().await.unwrap();
    }
    let rw = b.rwlock("jobs").unwrap().try_read().await;
    assert!(matches!(rw, Err(Error::Conflict { .. })), "{rw:?}");
    waited.release().await.unwrap();
    child.release().await.unwrap();
}

#[tokio::test]
async fn different_kinds_on_one_name_conflict() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let held = a.mutex("shared").unwrap().lock().await.unwrap();
    let read = conflict_text(b.rwlock("shared").unwrap().try_read().await);
    assert!(
        read.contains("mutex") && read.contains("read-write lock"),
        "{read}"
    );
    let write = conflict_text(b.rwlock("shared").unwrap().try_write().await);
    assert!(write.contains("mutex"), "{write}");
    let permits = conflict_text(b.semaphore("shared", 3).unwrap().try_acquire(1).await);
    assert!(
        permits.contains("mutex") && permits.contains("semaphore"),
        "{permits}"
    );
    // A waiting acquisition of another kind is refused too, not queued.
    let waiting = tokio::time::timeout(DEADLINE, b.rwlock("shared").unwrap().read()).await;
    assert!(
        matches!(waiting, Ok(Err(Error::Conflict { .. }))),
        "{waiting:?}"
    );
    // The refused ones left nothing behind: the holder is alone.
    wait_for_keys(&e, "shared/", "only the holder's key", |keys| {
        keys.len() == 1
    })
    .await;
    held.release().await.unwrap();

    let reader = a.rwlock("rw").unwrap().read().await.unwrap();
    let mutex = conflict_text(b.mutex("rw").unwrap().try_lock().await);
    assert!(
        mutex.contains("read-write lock") && mutex.contains("mutex"),
        "{mutex}"
    );
    reader.release().await.unwrap();
}

#[tokio::test]
async fn semaphore_limit_mismatch_is_a_conflict_even_for_a_waiter() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let held = a.semaphore("pool", 2).unwrap().acquire(2).await.unwrap();
    let other = tokio::time::timeout(DEADLINE, b.semaphore("pool", 5).unwrap().acquire(1)).await;
    let problem = conflict_text(other.expect("a waiter with another limit hung"));
    assert!(problem.contains('2') && problem.contains('5'), "{problem}");
    held.release().await.unwrap();
}

// ---- A.5: foreign data ---------------------------------------------------------------

#[tokio::test]
async fn foreign_keys_under_a_lock_are_a_conflict_naming_the_key() {
    let e = Etcd::start().await.expect("etcd");
    let locks = connect(&e).await;
    e.put("foreign/notes.txt", "hello").await.unwrap();
    let problem = conflict_text(locks.mutex("foreign").unwrap().try_lock().await);
    assert!(problem.contains("foreign/notes.txt"), "{problem}");
    let state = locks.state(&name("foreign")).await;
    assert!(matches!(state, Err(Error::Conflict { .. })), "{state:?}");
    // A mutex key (Go's NAME/<lease hex>) with a value Go never writes.
    e.put("valued/694d7a1b2c3d4e5f", "junk").await.unwrap();
    let problem = conflict_text(locks.mutex("valued").unwrap().try_lock().await);
    assert!(problem.contains("valued/694d7a1b2c3d4e5f"), "{problem}");
    // Garbage where a semaphore counts its permits.
    let pool = locks.semaphore("pool", 3).unwrap();
    let first = pool.acquire(1).await.unwrap();
    let keys = e.range("pool/").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let folder = keys[0].key.rsplit_once('/').unwrap().0.to_owned();
    let garbage = format!("{folder}/ff_99");
    e.put(&garbage, "lots").await.unwrap();
    let problem = conflict_text(pool.try_acquire(1).await);
    assert!(problem.contains(&garbage), "{problem}");
    first.release().await.unwrap();
}

// ---- A.2: waiters are cheap to lose ---------------------------------------------------

#[tokio::test]
async fn a_killed_waiter_stops_blocking_within_three_seconds() {
    let e = Etcd::start().await.expect("etcd");
    let proxy = FaultProxy::start(e.addr()).await.expect("proxy");
    // A long lease: the bound must not depend on it.
    let holder = connect_to(e.port(), "ttl=30s").await;
    let doomed = connect_to(proxy.port(), "ttl=30s&timeout=1s").await;
    let third = connect_to(e.port(), "ttl=30s").await;
    let n = name("waiters/killed");
    let held = holder.mutex(n.clone()).unwrap().lock().await.unwrap();
    let waiter = tokio::spawn({
        let doomed = doomed.clone();
        let n = n.clone();
        async move { doomed.mutex(n).unwrap().lock().await }
    });
    wait_for_keys(&e, "waiters/killed/", "the waiter queued", |k| k.len() == 2).await;
    // The waiter's process is gone as far as etcd can tell: nothing it sends arrives.
    proxy.set_mode(ProxyMode::Blackhole);
    let cut = Instant::now();
    held.release().await.unwrap();
    let next = third
        .mutex(n.clone())
        .unwrap()
        .lock_timeout(Duration::from_secs(4))
        .await
        .unwrap();
    assert!(
        next.is_some(),
        "a waiter cut off {:?} ago still blocks the free lock",
        cut.elapsed()
    );
    waiter.abort();
    next.unwrap().release().await.unwrap();
}

#[tokio::test]
async fn a_granted_waiter_keeps_its_token_and_moves_to_the_hold_lease() {
    let e = Etcd::start().await.expect("etcd");
    let a = connect_to(e.port(), "ttl=10s").await;
    let (b, b_etcd) = connect_both(e.port(), "ttl=10s").await;
    let n = name("waiters/granted");
    let held = a.mutex(n.clone()).unwrap().lock().await.unwrap();
    let hold_lease = b_etcd.lease_id().expect("lease");
    let waiter = tokio::spawn({
        let b = b.clone();
        let n = n.clone();
        async move { b.mutex(n).unwrap().lock().await }
    });
    wait_for_keys(&e, "waiters/granted/", "the waiter queued", |k| {
        k.len() == 2
    })
    .await;
    let queued = e
        .range("waiters/granted/")
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.key.ends_with(&format!("{hold_lease:x}")))
        .expect("the waiter's key is NAME/<lease hex>");
    assert_ne!(
        queued.lease, hold_lease,
        "a waiting key lives on the long hold lease: a killed waiter blocks for its whole TTL"
    );
    held.release().await.unwrap();
    let granted = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        granted.fencing_token(),
        u64::try_from(queued.create_revision).unwrap(),
        "the token is the create revision of the queued key"
    );
    let now = e
        .range(&queued.key)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.key == queued.key)
        .expect("the granted key");
    assert_eq!(now.lease, hold_lease, "a held key lives on the hold lease");
    assert_eq!(now.create_revision, queued.create_revision);
    granted.release().await.unwrap();
}

#[tokio::test]
async fn a_timed_out_waiter_leaves_nothing() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let held = a.mutex("waiters/timeout").unwrap().lock().await.unwrap();
    let none = b
        .mutex("waiters/timeout")
        .unwrap()
        .lock_timeout(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(none.is_none());
    wait_for_keys(&e, "waiters/timeout/", "the waiter's key removed", |k| {
        k.len() == 1
    })
    .await;
    held.release().await.unwrap();
}

/// A CLI gives up waiting and exits at once: its runtime ends right after `lock_timeout`
/// returned. Its queue key must still go at once, not with its lease.
#[tokio::test]
async fn a_waiter_whose_runtime_ends_right_after_its_timeout_leaves_nothing() {
    let e = Etcd::start().await.expect("etcd");
    let a = connect_to(e.port(), "ttl=30s").await;
    let held = a.mutex("waiters/exited").unwrap().lock().await.unwrap();
    let port = e.port();
    let gave_up = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = runtime.block_on(async move {
            let b = connect_to(port, "ttl=30s").await;
            let waited = b
                .mutex("waiters/exited")
                .unwrap()
                .lock_timeout(Duration::from_millis(300))
                .await
                .unwrap();
            // The backend outlives the runtime, as one kept in a static or leaked would.
            std::mem::forget(b);
            waited.is_none()
        });
        drop(runtime);
        outcome
    })
    .join()
    .unwrap();
    assert!(gave_up, "B got a lock that A holds");
    held.release().await.unwrap();
    let next = a.mutex("waiters/exited").unwrap().try_lock().await.unwrap();
    assert!(
        next.is_some(),
        "the free lock was busy after a waiter gave up and its runtime ended: {:?}",
        e.range("waiters/exited/").await
    );
}

// ---- A.3: unreachable is an error -----------------------------------------------------

#[tokio::test]
async fn an_unreachable_store_is_an_error_within_the_deadline() {
    let e = Etcd::start().await.expect("etcd");
    let proxy = FaultProxy::start(e.addr()).await.expect("proxy");
    let timeout = Duration::from_secs(1);
    let locks = connect_to(proxy.port(), "ttl=5s&timeout=1s").await;
    let mut events = locks.connection_events();
    assert_eq!(events.current(), ConnectionEvent::Connected);
    proxy.set_mode(ProxyMode::Blackhole);
    let started = Instant::now();
    let tried = locks.mutex("down").unwrap().try_lock().await;
    let took = started.elapsed();
    match &tried {
        Err(Error::Timeout { after, .. }) => assert!(
            *after >= timeout && *after <= took,
            "the error says {after:?}, the call took {took:?}"
        ),
        Err(Error::Connection { .. }) => {}
        other => panic!("try_lock on an unreachable store gave {other:?}"),
    }
    assert!(
        took < timeout * 2,
        "try_lock took {took:?} with a {timeout:?} request timeout"
    );
    let started = Instant::now();
    let waited = locks
        .mutex("down")
        .unwrap()
        .lock_timeout(Duration::from_secs(8))
        .await;
    assert!(
        matches!(
            waited,
            Err(Error::Timeout { .. } | Error::Connection { .. })
        ),
        "lock_timeout on an unreachable store gave {waited:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(8) + timeout);
    let suspended = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if event == ConnectionEvent::Suspended {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(suspended, Ok(true), "no Suspended event");
    proxy.set_mode(ProxyMode::Pass);
    let back = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.next().await {
                Some(ConnectionEvent::Reconnected) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(
        back,
        Ok(true),
        "no Reconnected event after the store came back"
    );
    let again = locks.mutex("down").unwrap().try_lock().await.unwrap();
    assert!(again.is_some());
}

/// A create of ours whose answer was lost can reach the store after the cancelled
/// acquisition's cleanup ran (the network held the request): a key on our lease that no
/// acquisition of ours knows. It must not make the lock busy for us.
#[tokio::test]
async fn a_late_create_of_ours_does_not_make_the_lock_busy() {
    let e = Etcd::start().await.expect("etcd");
    let (locks, etcd) = connect_both(e.port(), "ttl=30s").await;
    let lease = etcd.lease_id().expect("lease");
    let stray = format!("late/{lease:x}_999");
    e.put_with_lease(&stray, "", lease).await.expect("put");
    let held = locks
        .mutex("late")
        .unwrap()
        .try_lock()
        .await
        .expect("try_lock");
    assert!(
        held.is_some(),
        "a stray key on our own lease made the lock busy"
    );
    let keys = e.range("late/").await.expect("range");
    assert!(
        keys.iter().all(|k| k.key != stray),
        "the stray key stayed: {keys:?}"
    );
}

/// The same late create, landing after a timed-out attempt's deletion of its key (the store
/// ordered the held create after it): the cleanup of an attempt whose answer was lost looks
/// again once its deletion is done, so the stray key does not keep the lock from another
/// client for as long as our lease lives. The stray key stands in for the late create (a
/// numbered key of ours, as a second acquisition of this name would write).
#[tokio::test]
async fn a_late_create_of_a_timed_out_attempt_does_not_keep_the_lock_from_others() {
    let e = Etcd::start().await.expect("etcd");
    let proxy = FaultProxy::start(e.addr()).await.expect("proxy");
    let (locks, etcd) = connect_both(proxy.port(), "ttl=30s&timeout=1s").await;
    let other = connect_to(e.port(), "ttl=30s").await;
    let lease = etcd.lease_id().expect("lease");
    proxy.set_mode(ProxyMode::Blackhole);
    let tried = locks.mutex("stray").unwrap().try_lock().await;
    assert!(
        tried.is_err(),
        "try_lock through a partition gave {tried:?}"
    );
    // What a held create writes if the store applies it after the cleanup's deletion: a
    // granted key on our hold lease that no acquisition of ours knows.
    e.put_with_lease(&format!("stray/{lease:x}_999"), "", lease)
        .await
        .expect("put");
    proxy.set_mode(ProxyMode::Pass);
    let got = other
        .mutex("stray")
        .unwrap()
        .lock_timeout(Duration::from_secs(10))
        .await
        .expect("lock_timeout");
    assert!(
        got.is_some(),
        "a timed-out attempt's key kept the lock from another client for 10 s"
    );
}

// ---- A.7: the same event has the same name --------------------------------------------

#[tokio::test]
async fn a_lease_revoked_by_an_operator_is_session_expired() {
    let e = Etcd::start().await.expect("etcd");
    let (locks, etcd) = connect_both(e.port(), "ttl=10s").await;
    let mut events = locks.connection_events();
    let held = locks.mutex("revoked").unwrap().lock().await.unwrap();
    e.revoke_lease(etcd.lease_id().unwrap()).await.unwrap();
    let reason = tokio::time::timeout(DEADLINE, held.lost()).await.unwrap();
    assert_eq!(reason, LostReason::SessionExpired);
    let lost = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.next().await {
                Some(ConnectionEvent::Lost) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(lost, Ok(true), "no Lost event for a lost lease");
}

#[tokio::test]
async fn keep_alives_failing_past_validity_is_renewal_failed() {
    let e = Etcd::start().await.expect("etcd");
    let proxy = FaultProxy::start(e.addr()).await.expect("proxy");
    let locks = connect_to(proxy.port(), "ttl=2s&timeout=1s").await;
    let held = locks.mutex("cut").unwrap().lock().await.unwrap();
    proxy.set_mode(ProxyMode::Blackhole);
    let reason = tokio::time::timeout(DEADLINE, held.lost()).await.unwrap();
    assert_eq!(reason, LostReason::RenewalFailed);
}

// ---- A.6: guards outlive nothing silently ---------------------------------------------

#[test]
fn a_guard_dropped_outside_any_runtime_is_released() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (e, a, b, guard) = runtime.block_on(async {
        let e = Etcd::start().await.expect("etcd");
        let a = connect_to(e.port(), "ttl=30s").await;
        let b = connect_to(e.port(), "ttl=30s").await;
        let guard = a.mutex("dropped").unwrap().lock().await.unwrap();
        (e, a, b, guard)
    });
    // No runtime on this thread: the drop must neither panic nor leave the key for 30 s.
    drop(guard);
    runtime.block_on(async {
        let got = b
            .mutex("dropped")
            .unwrap()
            .lock_timeout(Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            got.is_some(),
            "a guard dropped outside a runtime kept its lock"
        );
        got.unwrap().release().await.unwrap();
        drop((a, b, e));
    });
}

#[tokio::test]
async fn shutdown_ends_waiters_and_removes_their_keys() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let held = a.mutex("shutdown/wait").unwrap().lock().await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.mutex("shutdown/wait").unwrap().lock().await }
    });
    wait_for_keys(&e, "shutdown/wait/", "the waiter queued", |k| k.len() == 2).await;
    b.shutdown().await.unwrap();
    let ended = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ended, Err(Error::Closed { .. })), "{ended:?}");
    let keys = e.range("shutdown/wait/").await.unwrap();
    assert_eq!(keys.len(), 1, "the shut-down waiter's key stayed: {keys:?}");
    held.release().await.unwrap();
}

// ---- A.8: bad configuration is refused at connect --------------------------------------

#[tokio::test]
async fn port_zero_and_credentials_given_twice_are_refused() {
    for url in [
        "etcd://127.0.0.1:0",
        "etcd://127.0.0.1:2379,127.0.0.1:0",
        "etcd://alice:pw@127.0.0.1:2379?user=bob",
        "etcd://alice:pw@127.0.0.1:2379?password=other",
    ] {
        let outcome = tumbler_etcd::connect_url(url).await.map(|_| ());
        assert!(
            matches!(outcome, Err(Error::InvalidArgument { .. })),
            "{url}: {outcome:?}"
        );
    }
}
