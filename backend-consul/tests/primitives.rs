//! Behaviour beyond the conformance suite: local exclusion within one client, state and
//! revocation of semaphores and read-write locks, name mapping, shutdown, cancellation of
//! semaphore and read-write waits.

mod common;

use std::time::Duration;

use common::{client, server, GoClient};
use tumbler_core::{Error, HoldMode, LockName};

const PARAMS: &str = "ttl=5s&lock_delay=0s&request_timeout=3s";

/// All mutex holds of one client share its session, and Consul grants `?acquire=` again to the
/// session that holds a key: two handles of one client must still exclude each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_of_one_client_exclude_each_other() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    let first = c.locks.mutex("shared").unwrap().lock().await.unwrap();
    let second = c.locks.mutex("shared").unwrap();
    assert!(second.try_lock().await.unwrap().is_none());
    let waiting = tokio::spawn(async move { second.lock_timeout(Duration::from_secs(10)).await });
    assert!(!waiting.is_finished());
    let first_token = first.fencing_token();
    first.release().await.unwrap();
    let next = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("the second handle never got in");
    assert!(next.fencing_token() > first_token);
    next.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_state_and_revocation() {
    let server = server().await;
    let (a, b, c) = (
        client(&server, PARAMS).await,
        client(&server, PARAMS).await,
        client(&server, PARAMS).await,
    );
    let two = a
        .locks
        .semaphore("sem", 3)
        .unwrap()
        .acquire(2)
        .await
        .unwrap();
    let one = b
        .locks
        .semaphore("sem", 3)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    assert_ne!(two.fencing_token(), one.fencing_token());
    let waiting_sem = c.locks.semaphore("sem", 3).unwrap();
    let waiter = tokio::spawn(async move {
        waiting_sem
            .acquire_timeout(1, Duration::from_secs(20))
            .await
    });
    let name = LockName::new("sem").unwrap();
    loop {
        let state = c.locks.state(&name).await.unwrap();
        if state.waiters == Some(1) {
            let mut permits: Vec<u32> = state
                .holders
                .iter()
                .map(|h| match h.mode {
                    HoldMode::Permits(n) => n,
                    ref other => panic!("unexpected mode {other:?}"),
                })
                .collect();
            permits.sort();
            assert_eq!(permits, [1, 2]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.locks.request_revoke(&name).await.unwrap(), 2);
    for lease in [&two, &one] {
        tokio::time::timeout(Duration::from_secs(10), lease.revoke_requested())
            .await
            .expect("a holder did not hear the revocation");
    }
    one.release().await.unwrap();
    let third = waiter
        .await
        .unwrap()
        .unwrap()
        .expect("the waiter never got its permit");
    assert!(
        !third.is_revoke_requested(),
        "a later holder saw an old revocation"
    );
    third.release().await.unwrap();
    two.release().await.unwrap();
    let state = c.locks.state(&name).await.unwrap();
    assert!(!state.is_held(), "{state:?}");
    assert_eq!(state.waiters, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_state_and_revocation() {
    let server = server().await;
    let (a, b, c) = (
        client(&server, PARAMS).await,
        client(&server, PARAMS).await,
        client(&server, PARAMS).await,
    );
    let name = LockName::new("rw").unwrap();
    let r1 = a.locks.rwlock(&name).unwrap().read().await.unwrap();
    let r2 = b.locks.rwlock(&name).unwrap().read().await.unwrap();
    let writer = c.locks.rwlock(&name).unwrap();
    let waiting = tokio::spawn(async move { writer.write_timeout(Duration::from_secs(20)).await });
    loop {
        let state = a.locks.state(&name).await.unwrap();
        if state.waiters == Some(1) {
            assert_eq!(state.holders.len(), 2, "{state:?}");
            assert!(state.holders.iter().all(|h| h.mode == HoldMode::Read));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.locks.request_revoke(&name).await.unwrap(), 2);
    for reader in [&r1, &r2] {
        tokio::time::timeout(Duration::from_secs(10), reader.revoke_requested())
            .await
            .expect("a reader did not hear the revocation");
    }
    r1.release().await.unwrap();
    r2.release().await.unwrap();
    let w = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("the writer never got in");
    let state = a.locks.state(&name).await.unwrap();
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].mode, HoldMode::Write);
    w.release().await.unwrap();
}

/// Cancelled semaphore and read-write waits leave nothing behind on the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waits_leave_no_keys() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let go = GoClient::new(&server);
    let lease = a
        .locks
        .semaphore("gone", 1)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let late = b
        .locks
        .semaphore("gone", 1)
        .unwrap()
        .acquire_timeout(1, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(late.is_none());
    let writer = a.locks.rwlock("gone-rw").unwrap().write().await.unwrap();
    let late = b
        .locks
        .rwlock("gone-rw")
        .unwrap()
        .read_timeout(Duration::from_millis(500))
        .await
        .unwrap();
    assert!(late.is_none());
    lease.release().await.unwrap();
    writer.release().await.unwrap();
    // Cleanup runs in the background: wait for the folders to empty of contenders.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sem_keys = go.list("tumbler/gone/").await;
        let rw_keys = go.list("tumbler/gone-rw/.rw/").await;
        let sem_contenders = sem_keys
            .iter()
            .filter(|p| p["Key"] != "tumbler/gone/.lock")
            .count();
        if sem_contenders == 0 && rw_keys.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {sem_keys:?} {rw_keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B's sessions for the cancelled waits are gone too: only the backends' own remain.
    assert_eq!(
        b.backend.session_ids().len(),
        1,
        "{:?}",
        b.backend.session_ids()
    );
}

#[tokio::test]
async fn names_map_to_consul_keys() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    let colon = LockName::new("db:primary").unwrap();
    assert_eq!(
        c.backend.mutex_key(&colon).unwrap(),
        "tumbler/db,primary/.lock"
    );
    let held = c.locks.mutex(&colon).unwrap().lock().await.unwrap();
    held.release().await.unwrap();
    // Segments starting with '.' are the layout's own; lockcore refuses them in names.
    let reserved = c.locks.mutex("a/.hidden").map(|_| ());
    assert!(
        matches!(reserved, Err(Error::InvalidName { .. })),
        "{reserved:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_holds_and_refuses_work() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    let held = c.locks.mutex("bye").unwrap().lock().await.unwrap();
    c.locks.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), held.lost())
        .await
        .expect("a hold outlived the shutdown");
    let after = c.locks.mutex("bye").unwrap().try_lock().await;
    assert!(matches!(after, Err(Error::Closed { .. })), "{after:?}");
    assert!(
        server.session_ids().is_empty(),
        "{:?}",
        server.session_ids()
    );
}

/// A lease or read-write hold whose session the agent invalidated: a rival gets in, and the
/// late release reports `NotOwner` without disturbing the rival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_releases_after_expiry_are_not_owner() {
    let server = server().await;
    let (a, b, c) = (
        client(&server, PARAMS).await,
        client(&server, PARAMS).await,
        client(&server, PARAMS).await,
    );
    let lease = a
        .locks
        .semaphore("late", 1)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let writer = a.locks.rwlock("late-rw").unwrap().write().await.unwrap();
    for id in a.backend.session_ids() {
        server.invalidate_session(&id);
    }
    let rival_lease = b
        .locks
        .semaphore("late", 1)
        .unwrap()
        .acquire_timeout(1, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the expired lease's permit never came back");
    let rival_writer = b
        .locks
        .rwlock("late-rw")
        .unwrap()
        .write_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the expired writer's lock never came back");
    assert!(lease.lost_reason().is_some() && writer.lost_reason().is_some());
    let late = lease.release().await;
    assert!(matches!(late, Err(Error::NotOwner { .. })), "{late:?}");
    let late = writer.release().await;
    assert!(matches!(late, Err(Error::NotOwner { .. })), "{late:?}");
    let sem = c.locks.semaphore("late", 1).unwrap();
    assert!(
        sem.try_acquire(1).await.unwrap().is_none(),
        "the late release freed B's permit"
    );
    let rw = c.locks.rwlock("late-rw").unwrap();
    assert!(
        rw.try_read().await.unwrap().is_none(),
        "the late release freed B's write lock"
    );
    rival_lease.release().await.unwrap();
    rival_writer.release().await.unwrap();
}

/// The same without a rival: the record still lists the expired holder, yet its release must
/// not claim success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_of_an_expired_but_listed_holder_is_not_owner() {
    let server = server().await;
    let a = client(&server, PARAMS).await;
    let lease = a
        .locks
        .semaphore("listed", 2)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let reader = a.locks.rwlock("listed-rw").unwrap().read().await.unwrap();
    for id in a.backend.session_ids() {
        server.invalidate_session(&id);
    }
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("the lease was not lost");
    tokio::time::timeout(Duration::from_secs(10), reader.lost())
        .await
        .expect("the read hold was not lost");
    let late = lease.release().await;
    assert!(matches!(late, Err(Error::NotOwner { .. })), "{late:?}");
    let late = reader.release().await;
    assert!(matches!(late, Err(Error::NotOwner { .. })), "{late:?}");
}
