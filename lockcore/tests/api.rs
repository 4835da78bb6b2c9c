//! lockcore's own layers (re-entrancy, multi-lock, deadlines, drop-release, argument checks) on
//! the memory backend. The store-level promises are checked by the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tumbler_core::memory::{MemoryOptions, MemoryStore};
use tumbler_core::{
    AcquireRequest, Capabilities, ConnectionEvents, Error, Hold, LockBackend, LockName, LockSpec,
    LockState, MultiLock, SharedBackend,
};

const PATIENCE: Duration = Duration::from_secs(10);

async fn two_clients() -> (SharedBackend, SharedBackend) {
    let store = MemoryStore::new();
    (
        store.connect(MemoryOptions::default()).await.unwrap(),
        store.connect(MemoryOptions::default()).await.unwrap(),
    )
}

#[tokio::test]
async fn reentrant_handle_is_shared_across_tasks() {
    let (a, b) = two_clients().await;
    let handle = a.reentrant_mutex("re/tasks").unwrap();
    let outer = handle.lock().await.unwrap();
    let task_handle = handle.clone();
    let inner = tokio::spawn(async move { task_handle.lock().await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handle.hold_count(), 2);
    assert_eq!(inner.fencing_token(), outer.fencing_token());
    inner.release().await.unwrap();
    assert!(b
        .mutex("re/tasks")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    outer.release().await.unwrap();
    assert_eq!(handle.hold_count(), 0);
    let other = b.mutex("re/tasks").unwrap().try_lock().await.unwrap();
    assert!(other.is_some(), "the last release must free the store lock");
}

#[tokio::test]
async fn reentrant_concurrent_first_locks_share_one_hold() {
    let (a, _) = two_clients().await;
    let handle = a.reentrant_mutex("re/concurrent").unwrap();
    let (g1, g2) = tokio::join!(handle.lock(), handle.lock());
    let (g1, g2) = (g1.unwrap(), g2.unwrap());
    assert_eq!(g1.fencing_token(), g2.fencing_token());
    let state = a.state("re/concurrent").await.unwrap();
    assert_eq!(
        state.holders.len(),
        1,
        "one store hold for one handle: {state:?}"
    );
    drop(g1);
    g2.release().await.unwrap();
    assert!(!a.state("re/concurrent").await.unwrap().is_held());
}

#[tokio::test]
async fn multilock_releases_parts_when_one_times_out() {
    let (a, b) = two_clients().await;
    let blocker = b.mutex("multi/z").unwrap().lock().await.unwrap();
    let multi = MultiLock::new(vec![
        a.mutex("multi/a").unwrap(),
        a.mutex("multi/m").unwrap(),
        a.mutex("multi/z").unwrap(),
    ]);
    let got = multi
        .lock_timeout(Duration::from_millis(100))
        .await
        .unwrap();
    assert!(got.is_none());
    for name in ["multi/a", "multi/m"] {
        assert!(
            !a.state(name).await.unwrap().is_held(),
            "{name} must be released after the MultiLock gave up"
        );
    }
    blocker.release().await.unwrap();
    let all = multi
        .lock_timeout(PATIENCE)
        .await
        .unwrap()
        .expect("free now");
    let tokens = all.fencing_tokens();
    let names: Vec<&str> = tokens.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["multi/a", "multi/m", "multi/z"], "fixed order");
    all.release().await.unwrap();
}

#[tokio::test]
async fn multilock_mixes_kinds_and_rejects_duplicates() {
    let (a, _) = two_clients().await;
    let sem = a.semaphore("multi/pool", 2).unwrap();
    let rw = a.rwlock("multi/rw").unwrap();
    let mixed = MultiLock::new(vec![sem.permits_spec(2), rw.write_spec()]);
    let held = mixed.lock().await.unwrap();
    assert!(sem.try_acquire(1).await.unwrap().is_none());
    assert!(rw.try_read().await.unwrap().is_none());
    held.release().await.unwrap();

    let m = a.mutex("multi/dup").unwrap();
    let dup = MultiLock::new(vec![LockSpec::from(&m), LockSpec::from(&m)]);
    assert!(matches!(
        dup.try_lock().await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// Every handle kind converts into a MultiLock part, by value and by reference: a read-write
/// lock as its write side, a semaphore as one permit (or `(semaphore, n)` for n).
#[tokio::test]
async fn every_handle_kind_is_a_multilock_part() {
    let (a, b) = two_clients().await;
    let mutex = a.mutex("spec/mutex").unwrap();
    let reentrant = a.reentrant_mutex("spec/reentrant").unwrap();
    let rw = a.rwlock("spec/rw").unwrap();
    let pool = a.semaphore("spec/pool", 3).unwrap();
    let parts: Vec<(LockSpec, &str)> = vec![
        (LockSpec::from(&mutex), "Mutex"),
        (mutex.clone().into(), "Mutex"),
        (LockSpec::from(&reentrant), "Reentrant"),
        (reentrant.clone().into(), "Reentrant"),
        (LockSpec::from(&rw), "Write"),
        (rw.clone().into(), "Write"),
        (LockSpec::from(&pool), "Permits(1)"),
        (pool.clone().into(), "Permits(1)"),
        (LockSpec::from((&pool, 2)), "Permits(2)"),
        (LockSpec::from((pool.clone(), 3)), "Permits(3)"),
    ];
    for (spec, expected) in &parts {
        let got = match spec {
            LockSpec::Mutex(_) => "Mutex".to_owned(),
            LockSpec::Reentrant(_) => "Reentrant".to_owned(),
            LockSpec::Read(_) => "Read".to_owned(),
            LockSpec::Write(_) => "Write".to_owned(),
            LockSpec::Permits(_, n) => format!("Permits({n})"),
        };
        assert_eq!(&got, expected, "{spec:?}");
    }

    // Taken together: the rwlock is held for writing and the semaphore lends one permit.
    let all = MultiLock::new(vec![
        LockSpec::from(&mutex),
        LockSpec::from(&reentrant),
        LockSpec::from(&rw),
        LockSpec::from(&pool),
    ]);
    let held = all.lock().await.unwrap();
    let (b_rw, b_pool) = (
        b.rwlock("spec/rw").unwrap(),
        b.semaphore("spec/pool", 3).unwrap(),
    );
    assert!(b_rw.try_read().await.unwrap().is_none(), "write side held");
    let two = b_pool.try_acquire(2).await.unwrap();
    assert!(two.is_some(), "only one of three permits taken");
    assert!(b_pool.try_acquire(1).await.unwrap().is_none());
    held.release().await.unwrap();
    two.unwrap().release().await.unwrap();
}

#[tokio::test]
async fn bad_arguments_are_typed_errors() {
    let (a, _) = two_clients().await;
    assert!(matches!(
        a.mutex("bad name"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        a.semaphore("s", 0),
        Err(Error::InvalidArgument { .. })
    ));
    let sem = a.semaphore("s", 2).unwrap();
    assert!(matches!(
        sem.acquire(0).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        sem.try_acquire(3).await,
        Err(Error::InvalidArgument { .. })
    ));
    for ttl in [Duration::ZERO, Duration::from_secs(365 * 24 * 3600)] {
        let err = MemoryOptions::default().session_ttl(Some(ttl)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{ttl:?}: {err}"
        );
        assert!(err.to_string().contains("use"), "says what to use: {err}");
    }
    // A semaphore used with two different limits.
    let _held = sem.acquire(1).await.unwrap();
    let other = a.semaphore("s", 5).unwrap();
    assert!(matches!(
        other.try_acquire(1).await,
        Err(Error::Conflict { .. })
    ));
}

#[tokio::test]
async fn upgrade_is_refused() {
    let (a, _) = two_clients().await;
    let rw = a.rwlock("rw/upgrade").unwrap();
    let read = rw.read().await.unwrap();
    assert!(matches!(read.upgrade(), Err(Error::UpgradeRefused { .. })));
    assert!(matches!(
        rw.write().await,
        Err(Error::UpgradeRefused { .. })
    ));
    read.release().await.unwrap();
    let write = rw.try_write().await.unwrap();
    assert!(write.is_some());
}

#[tokio::test]
async fn dropped_guard_is_released_in_the_background() {
    let (a, b) = two_clients().await;
    let guard = a.mutex("drop/me").unwrap().lock().await.unwrap();
    drop(guard);
    let next = b
        .mutex("drop/me")
        .unwrap()
        .lock_timeout(PATIENCE)
        .await
        .unwrap();
    assert!(next.is_some(), "drop must release");
}

#[tokio::test]
async fn zero_timeout_is_one_attempt() {
    let (a, _) = two_clients().await;
    let m = a.mutex("zero/timeout").unwrap();
    let held = m.lock_timeout(Duration::ZERO).await.unwrap();
    assert!(held.is_some(), "a free lock is taken by a zero timeout");
    assert!(m.lock_timeout(Duration::ZERO).await.unwrap().is_none());
}

/// Memory, minus its read-write locks: to check that handles refuse missing capabilities.
struct NoRwLock(SharedBackend);

#[async_trait]
impl LockBackend for NoRwLock {
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.0.capabilities();
        caps.rwlock = false;
        caps
    }
    fn address(&self) -> String {
        self.0.address()
    }
    async fn acquire(&self, request: AcquireRequest) -> tumbler_core::Result<Option<Hold>> {
        self.0.acquire(request).await
    }
    async fn state(&self, name: &LockName) -> tumbler_core::Result<LockState> {
        LockBackend::state(&*self.0, name).await
    }
    async fn request_revoke(&self, name: &LockName) -> tumbler_core::Result<usize> {
        LockBackend::request_revoke(&*self.0, name).await
    }
    fn connection_events(&self) -> ConnectionEvents {
        self.0.connection_events()
    }
}

#[tokio::test]
async fn missing_capability_is_unsupported() {
    let (a, _) = two_clients().await;
    let limited: SharedBackend = Arc::new(NoRwLock(a));
    let err = limited.rwlock("x").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                capability: "read-write locks",
                backend: "memory"
            }
        ),
        "{err}"
    );
}

/// A.3 for every bounded wait, the re-entrant mutex included: a wait that runs out while the
/// store is known to be unreachable is a Timeout, never "busy".
#[tokio::test]
async fn bounded_waits_on_a_stalled_store_are_errors_not_busy() {
    let store = tumbler_core::memory::MemoryStore::new();
    let locks = store.connect(Default::default()).await.unwrap();
    store.stall(true);
    // The first request finds the store stalled and reports the connection suspended.
    let first = locks.mutex("m").unwrap().try_lock().await;
    assert!(matches!(first, Err(Error::Timeout { .. })), "{first:?}");
    let short = Duration::from_millis(100);
    let mutex = locks.mutex("m").unwrap().lock_timeout(short).await;
    assert!(
        matches!(mutex, Err(Error::Timeout { .. })),
        "mutex: {mutex:?}"
    );
    let reentrant = locks
        .reentrant_mutex("r")
        .unwrap()
        .lock_timeout(short)
        .await;
    assert!(
        matches!(reentrant, Err(Error::Timeout { .. })),
        "re-entrant: {reentrant:?}"
    );
    let multi = tumbler_core::MultiLock::new(vec![locks.reentrant_mutex("r2").unwrap()])
        .lock_timeout(short)
        .await;
    assert!(multi.is_err(), "multi-lock: {multi:?}");
    store.stall(false);
}

/// A revocation reaches every level of a re-entrant hold, also the level a MultiLock took by
/// re-entering it (the case of the explorer's memory seed 1053, which was a false finding).
#[tokio::test]
async fn revocation_reaches_a_reentrant_hold_entered_again_by_a_multilock() {
    let (a, b) = two_clients().await;
    let outer = a.reentrant_mutex("revoke/a/b").unwrap();
    let level1 = outer.lock().await.unwrap();
    let sem = a.semaphore("revoke/a", 2).unwrap();
    let parts: Vec<tumbler_core::LockSpec> = vec![(&outer).into(), (&sem).into()];
    let multi = MultiLock::new(parts)
        .lock_timeout(PATIENCE)
        .await
        .unwrap()
        .expect("the MultiLock re-enters the hold it already has");
    let asked = b.request_revoke("revoke/a/b").await.unwrap();
    assert!(asked >= 1, "the revocation reached {asked} holds");
    tokio::time::timeout(PATIENCE, level1.revoke_requested())
        .await
        .expect("the first level saw the revocation");
    assert!(multi.is_revoke_requested(), "the MultiLock's level saw it");
    multi.release().await.unwrap();
    level1.release().await.unwrap();
}
