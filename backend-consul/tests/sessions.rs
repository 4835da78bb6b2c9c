//! Sessions and lock-delay: what Consul does after an invalidation versus a release, the
//! client-side validity deadline, and recovery after the session is gone.

mod common;

use std::time::{Duration, Instant};

use common::{client, server};
use tumbler_core::{ConnectionEvent, LockName, LostReason};

/// A holder's session invalidated by the agent: the lock stays taken for the lock-delay, then a
/// waiter gets it; a plain release hands over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_delay_after_invalidation_not_after_release() {
    let server = server().await;
    let params = "ttl=5s&lock_delay=2s&request_timeout=3s";
    let (a, b) = (client(&server, params).await, client(&server, params).await);
    let name = LockName::new("delay").unwrap();
    let key = a.backend.mutex_key(&name).unwrap();

    let held = a.locks.mutex(&name).unwrap().lock().await.unwrap();
    let mutex_b = b.locks.mutex(&name).unwrap();
    let waiting = tokio::spawn(async move {
        let guard = mutex_b.lock_timeout(Duration::from_secs(20)).await;
        (Instant::now(), guard)
    });
    let released = Instant::now();
    held.release().await.unwrap();
    let (at, guard) = waiting.await.unwrap();
    let guard = guard.unwrap().expect("B did not get a released lock");
    assert!(
        at - released < Duration::from_secs(1),
        "a release imposed a delay: {:?}",
        at - released
    );
    assert_eq!(server.lock_delay_remaining(&key), None);

    // Now B's session is invalidated by the agent.
    let mutex_a = a.locks.mutex(&name).unwrap();
    let waiting = tokio::spawn(async move {
        let guard = mutex_a.lock_timeout(Duration::from_secs(20)).await;
        (Instant::now(), guard)
    });
    let session = b.backend.session_id().await.unwrap();
    assert!(server.invalidate_session(&session));
    let invalidated = Instant::now();
    assert!(server.lock_delay_remaining(&key).is_some());
    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("B's lost() did not fire");
    assert!(
        matches!(reason, LostReason::Deleted | LostReason::SessionExpired),
        "{reason:?}"
    );
    let (at, again) = waiting.await.unwrap();
    let again = again
        .unwrap()
        .expect("A did not get the lock after the lock-delay");
    let after = at - invalidated;
    assert!(
        after >= Duration::from_millis(1950),
        "A got the lock {after:?} after the invalidation, inside the 2s lock-delay"
    );
    assert!(
        after < Duration::from_secs(5),
        "A waited {after:?}, far past the lock-delay"
    );
    again.release().await.unwrap();
}

/// With `lock_delay=0s` an invalidated holder's lock is free at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_lock_delay_hands_off_at_once() {
    let server = server().await;
    let params = "ttl=5s&lock_delay=0s&request_timeout=3s";
    let (a, b) = (client(&server, params).await, client(&server, params).await);
    let held = a.locks.mutex("fast").unwrap().lock().await.unwrap();
    let mutex_b = b.locks.mutex("fast").unwrap();
    let waiting = tokio::spawn(async move { mutex_b.lock_timeout(Duration::from_secs(20)).await });
    // B queues before A's session goes.
    while b.locks.state("fast").await.unwrap().waiters != Some(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    assert!(server.invalidate_session(&a.backend.session_id().await.unwrap()));
    let guard = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("B did not get the lock");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Without a lock-delay nothing orders A's noticing against B's grant (see the crate docs);
    // A must still notice promptly.
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("A's lost() did not fire");
    guard.release().await.unwrap();
}

/// While the agent does not answer, the holder reports `lost()` at 0.9 × TTL, while Consul
/// still counts the session alive (it waits 2 × TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_before_the_agent_invalidates() {
    let server = server().await;
    let a = client(&server, "ttl=2s&lock_delay=1s&request_timeout=1s").await;
    let held = a.locks.mutex("partition").unwrap().lock().await.unwrap();
    let session = a.backend.session_id().await.unwrap();
    let paused = Instant::now();
    server.pause();
    let reason = tokio::time::timeout(Duration::from_secs(10), held.lost())
        .await
        .expect("lost() did not fire while the agent was unreachable");
    let after = paused.elapsed();
    let alive_on_agent = server.session_ids().contains(&session);
    server.resume();
    assert!(
        matches!(reason, LostReason::RenewalFailed | LostReason::Disconnected),
        "{reason:?}"
    );
    assert!(
        after <= Duration::from_millis(2500),
        "lost() fired {after:?} after the agent stopped answering (validity: 1.8s)"
    );
    assert!(
        alive_on_agent,
        "the agent had already invalidated the session when lost() fired"
    );
}

/// A key held by another task of the same backend (one session) is "busy" for a `try_lock`
/// only while the agent answers; with the agent stalled, the attempt is an error within the
/// request timeout, as for every other attempt (found by the explorer: Consul seed 27).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_this_backend_holds_is_busy_only_while_the_agent_answers() {
    let server = server().await;
    let a = client(&server, "ttl=2s&request_timeout=1s").await;
    let mutex = a.locks.mutex("own").unwrap();
    let held = mutex.lock().await.unwrap();
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "a second try_lock of one backend on a key it holds is busy"
    );
    server.pause();
    let tried = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), mutex.try_lock()).await;
    let took = tried.elapsed();
    server.resume();
    match outcome {
        Ok(Err(e)) => assert!(e.is_transient(), "{e}"),
        Ok(Ok(got)) => panic!(
            "try_lock with the agent stalled said {:?} instead of an error",
            got.map(|_| "granted").unwrap_or("busy")
        ),
        Err(_) => panic!("try_lock with the agent stalled hung for 5s"),
    }
    assert!(
        took <= Duration::from_millis(1500),
        "the error took {took:?}"
    );
    drop(held);
}

/// After the agent invalidates the backend's session, its holds are lost, events say Lost,
/// and the next acquisition gets a new session (and a Reconnected event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_session_after_the_old_one_is_gone() {
    let server = server().await;
    let a = client(&server, "ttl=3s&lock_delay=0s&request_timeout=3s").await;
    let mut events = a.locks.connection_events();
    let held = a.locks.mutex("x").unwrap().lock().await.unwrap();
    let old = a.backend.session_id().await.unwrap();
    assert!(server.invalidate_session(&old));
    tokio::time::timeout(Duration::from_secs(10), held.lost())
        .await
        .expect("the hold was not lost");
    let lost_event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if events.next().await == Some(ConnectionEvent::Lost) {
                return;
            }
        }
    })
    .await;
    assert!(
        lost_event.is_ok(),
        "no Lost event after the session expired"
    );
    let again = a
        .locks
        .mutex("x")
        .unwrap()
        .lock_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("no new hold after the session was replaced");
    let new = a.backend.session_id().await.unwrap();
    assert_ne!(old, new);
    let reconnected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if events.next().await == Some(ConnectionEvent::Reconnected) {
                return;
            }
        }
    })
    .await;
    assert!(
        reconnected.is_ok(),
        "no Reconnected event with the new session"
    );
    again.release().await.unwrap();
    drop(held);
}

/// A holder whose whole process stalls (GC pause, SIGSTOP) past its validity sees the loss on
/// the guard the moment it runs again, before any task of the backend has run.
#[tokio::test(flavor = "current_thread")]
async fn stalled_holder_sees_its_loss_before_acting() {
    let server = server().await;
    let a = client(&server, "ttl=2s&lock_delay=0s&request_timeout=1s").await;
    let held = a.locks.mutex("stall").unwrap().lock().await.unwrap();
    assert!(held.lost_reason().is_none());
    // The stall is the fault under test: this thread runs the runtime, so nothing renews.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        held.lost_reason().is_some(),
        "after a stall past 0.9 x TTL the guard still claims the lock"
    );
}
