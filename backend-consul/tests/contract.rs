//! The rules of lockcore's contract (issue 12, part A) as the Consul backend keeps them: one
//! kind per name, foreign data, loss reasons and connection events, shutdown, unreachable
//! agents, dead waiters and bad configuration. Each test failed before the fix it guards.

mod common;

use std::time::{Duration, Instant};

use common::{client, server, GoClient};
use tumbler_consul::{ConsulConfig, LOCK_FLAGS, RWLOCK_FLAGS, SEMAPHORE_FLAGS};
use tumbler_core::{ConnectionEvent, ConnectionEvents, Error, LockName, LostReason};

const PARAMS: &str = "ttl=3s&lock_delay=0s&request_timeout=2s";

/// The `problem` of a `Conflict`, or a panic saying what came instead.
fn conflict<T: std::fmt::Debug>(outcome: tumbler_core::Result<T>) -> String {
    match outcome {
        Err(Error::Conflict { problem, .. }) => problem,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// Waits (at most `within`) for `wanted` among the events.
async fn event(events: &mut ConnectionEvents, wanted: ConnectionEvent, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        while let Some(e) = events.next().await {
            if e == wanted {
                return;
            }
        }
        std::future::pending::<()>().await
    })
    .await
    .is_ok()
}

/// A.4: a name held by one primitive and asked for by another is a `Conflict` naming both
/// kinds, in every direction, while the holder keeps its hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_on_one_name_conflict_naming_both() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);

    let mutex = a.locks.mutex("k-mutex").unwrap().lock().await.unwrap();
    let p = conflict(b.locks.rwlock("k-mutex").unwrap().try_write().await);
    assert!(p.contains("mutex") && p.contains("read-write lock"), "{p}");
    let p = conflict(b.locks.rwlock("k-mutex").unwrap().try_read().await);
    assert!(p.contains("mutex") && p.contains("read-write lock"), "{p}");
    let p = conflict(
        b.locks
            .semaphore("k-mutex", 2)
            .unwrap()
            .try_acquire(1)
            .await,
    );
    assert!(p.contains("mutex") && p.contains("semaphore"), "{p}");
    assert!(mutex.lost_reason().is_none());

    let reader = a.locks.rwlock("k-rw").unwrap().read().await.unwrap();
    let p = conflict(b.locks.mutex("k-rw").unwrap().try_lock().await);
    assert!(p.contains("mutex") && p.contains("read-write lock"), "{p}");
    let p = conflict(b.locks.semaphore("k-rw", 2).unwrap().try_acquire(1).await);
    assert!(
        p.contains("semaphore") && p.contains("read-write lock"),
        "{p}"
    );
    assert!(reader.lost_reason().is_none());

    let lease = a
        .locks
        .semaphore("k-sem", 2)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let p = conflict(b.locks.mutex("k-sem").unwrap().try_lock().await);
    assert!(p.contains("mutex") && p.contains("semaphore"), "{p}");
    let p = conflict(b.locks.rwlock("k-sem").unwrap().try_write().await);
    assert!(
        p.contains("semaphore") && p.contains("read-write lock"),
        "{p}"
    );
    assert!(lease.lost_reason().is_none());

    // Free again: each name may then be used by another kind.
    mutex.release().await.unwrap();
    reader.release().await.unwrap();
    lease.release().await.unwrap();
    let next = b
        .locks
        .rwlock("k-mutex")
        .unwrap()
        .try_write()
        .await
        .unwrap();
    next.expect("the mutex's name stayed refused after its release")
        .release()
        .await
        .unwrap();
    let next = b.locks.mutex("k-rw").unwrap().try_lock().await.unwrap();
    next.expect("the read-write lock's name stayed refused after its release")
        .release()
        .await
        .unwrap();
    let next = b.locks.mutex("k-sem").unwrap().try_lock().await.unwrap();
    next.expect("the semaphore's name stayed refused after its release")
        .release()
        .await
        .unwrap();
}

/// A.4: `a` and `a/b` are independent locks (Consul KV prefixes contain each other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_names_are_independent() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let child = a.locks.mutex("n/b").unwrap().lock().await.unwrap();
    let child_sem = a
        .locks
        .semaphore("s/b", 1)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let child_rw = a.locks.rwlock("r/b").unwrap().write().await.unwrap();
    for parent in ["n", "s", "r"] {
        let state = b.locks.state(parent).await.unwrap();
        assert!(!state.is_held(), "{parent}: {state:?}");
        assert_eq!(state.waiters, Some(0), "{parent}: {state:?}");
        let m = b.locks.mutex(parent).unwrap().try_lock().await.unwrap();
        m.expect("a parent name is busy because of its child")
            .release()
            .await
            .unwrap();
        let s = b
            .locks
            .semaphore(parent, 1)
            .unwrap()
            .try_acquire(1)
            .await
            .unwrap();
        s.expect("a parent semaphore is busy because of its child")
            .release()
            .await
            .unwrap();
        let w = b.locks.rwlock(parent).unwrap().try_write().await.unwrap();
        w.expect("a parent read-write lock is busy because of its child")
            .release()
            .await
            .unwrap();
    }
    let parent = b.locks.mutex("n").unwrap().lock().await.unwrap();
    let grandchild = b.locks.mutex("n/b/c").unwrap().try_lock().await.unwrap();
    assert!(grandchild.is_some());
    assert!(child.lost_reason().is_none() && child_sem.lost_reason().is_none());
    assert!(child_rw.lost_reason().is_none());
    parent.release().await.unwrap();
    child.release().await.unwrap();
}

/// A.5: data tumbler did not write at a lock's keys is a `Conflict` naming the key, for every
/// primitive; never a store error on every attempt, never "busy".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_is_a_conflict_naming_the_key() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    let go = GoClient::new(&server);

    // A plain key (flags 0) where the mutex key goes.
    assert!(go.cas("tumbler/plain/.lock", 0, b"x".to_vec(), 0).await);
    let p = conflict(c.locks.mutex("plain").unwrap().try_lock().await);
    assert!(p.contains("tumbler/plain/.lock"), "{p}");
    let p = conflict(c.locks.semaphore("plain", 2).unwrap().try_acquire(1).await);
    assert!(p.contains("tumbler/plain/.lock"), "{p}");

    // Garbage in a semaphore's holders record.
    let key = "tumbler/junk/.lock";
    assert!(go.cas(key, SEMAPHORE_FLAGS, b"{not json".to_vec(), 0).await);
    let p = conflict(c.locks.semaphore("junk", 2).unwrap().try_acquire(1).await);
    assert!(p.contains(key), "{p}");
    let p = conflict(c.locks.mutex("junk").unwrap().try_lock().await);
    assert!(p.contains(key), "{p}");

    // Garbage in a read-write lock's record.
    let key = "tumbler/junk-rw/.rwlock";
    assert!(go.cas(key, RWLOCK_FLAGS, b"[1,2".to_vec(), 0).await);
    let p = conflict(c.locks.rwlock("junk-rw").unwrap().try_read().await);
    assert!(p.contains(key), "{p}");

    // A read-write record key with foreign flags.
    let key = "tumbler/flags-rw/.rwlock";
    assert!(go.cas(key, LOCK_FLAGS, b"{}".to_vec(), 0).await);
    let p = conflict(c.locks.rwlock("flags-rw").unwrap().try_write().await);
    assert!(p.contains(key), "{p}");

    // Nothing was left behind by the refused attempts (no contender keys, no extra sessions).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys: Vec<String> = go
            .list("tumbler/")
            .await
            .iter()
            .map(|p| p["Key"].as_str().unwrap_or_default().to_string())
            .collect();
        if keys.len() == 4 && c.backend.session_ids().len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {keys:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A.7: a session the agent invalidated is `SessionExpired` on every primitive's hold (not
/// `Deleted`, although the agent released or deleted the keys too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidated_session_is_session_expired() {
    let server = server().await;
    let a = client(&server, PARAMS).await;
    let mutex = a.locks.mutex("x-m").unwrap().lock().await.unwrap();
    let lease = a
        .locks
        .semaphore("x-s", 2)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let writer = a.locks.rwlock("x-rw").unwrap().write().await.unwrap();
    for id in a.backend.session_ids() {
        assert!(server.invalidate_session(&id));
    }
    for (what, reason) in [
        ("mutex", mutex.lost().await),
        ("semaphore", lease.lost().await),
        ("rwlock", writer.lost().await),
    ] {
        assert_eq!(reason, LostReason::SessionExpired, "{what}");
    }
}

/// A.7: an agent that stops answering: the hold is lost as `RenewalFailed` (renewal did not
/// succeed before the validity deadline), the events say `Suspended` and then `Lost`, and once
/// the agent answers again a new session is created and `Reconnected` follows, without any
/// acquisition asking for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_agent_is_renewal_failed_then_lost_then_reconnected() {
    let server = server().await;
    let a = client(&server, "ttl=2s&lock_delay=0s&request_timeout=1s").await;
    let mut events = a.locks.connection_events();
    let held = a.locks.mutex("stall").unwrap().lock().await.unwrap();
    let old = a.backend.session_id().await.unwrap();
    server.pause();
    assert!(
        event(
            &mut events,
            ConnectionEvent::Suspended,
            Duration::from_secs(3)
        )
        .await,
        "no Suspended while the agent did not answer"
    );
    let reason = tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("the hold was not lost");
    assert_eq!(reason, LostReason::RenewalFailed);
    assert!(
        event(&mut events, ConnectionEvent::Lost, Duration::from_secs(5)).await,
        "no Lost after the session could not be vouched for"
    );
    server.resume();
    assert!(
        event(
            &mut events,
            ConnectionEvent::Reconnected,
            Duration::from_secs(10)
        )
        .await,
        "no Reconnected after the agent answered again"
    );
    let new = a.backend.session_id().await;
    assert!(
        new.as_ref().is_some_and(|n| *n != old),
        "Reconnected came before a new session was usable: {new:?} (old {old})"
    );
}

/// A.7: after the agent invalidated the session, `Reconnected` means a new session is usable:
/// not the first answer of the agent that comes after the `Lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnected_after_lost_means_a_new_session() {
    let server = server().await;
    let a = client(&server, PARAMS).await;
    let mut events = a.locks.connection_events();
    let held = a.locks.mutex("gone").unwrap().lock().await.unwrap();
    let old = a.backend.session_id().await.unwrap();
    assert!(server.invalidate_session(&old));
    held.lost().await;
    assert!(event(&mut events, ConnectionEvent::Lost, Duration::from_secs(5)).await);
    assert!(
        event(
            &mut events,
            ConnectionEvent::Reconnected,
            Duration::from_secs(10)
        )
        .await,
        "no Reconnected: the lost session was not replaced"
    );
    let new = a.backend.session_id().await;
    assert!(new.is_some_and(|n| n != old));
}

/// A.3: a stalled agent gives `Timeout` within the request timeout (stating the real
/// duration), and `Suspended` is reported while the request is still stalled, not only when
/// it finally fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_agent_is_a_prompt_timeout_and_suspended() {
    let server = server().await;
    let a = client(&server, "ttl=10s&lock_delay=0s&request_timeout=4s").await;
    let mut events = a.locks.connection_events();
    server.pause();
    let mutex = a.locks.mutex("down").unwrap();
    let start = Instant::now();
    let attempt = tokio::spawn(async move { mutex.try_lock().await });
    assert!(
        event(
            &mut events,
            ConnectionEvent::Suspended,
            Duration::from_millis(2500)
        )
        .await,
        "no Suspended while a request stalled"
    );
    let outcome = attempt.await.unwrap();
    let took = start.elapsed();
    match outcome {
        Err(Error::Timeout { after, .. }) => {
            assert!(
                after <= took && took - after < Duration::from_millis(500),
                "{after:?} vs {took:?}"
            );
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "{took:?}");
    server.resume();
}

/// A.6: `shutdown()` releases every hold (mutex, lease, read-write) and ends every waiter of
/// the backend, and leaves none of its sessions on the agent. The holds are released, not
/// left to the session's destruction, which would keep them under the lock-delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_every_hold_and_waiter() {
    let server = server().await;
    let a = client(&server, "ttl=3s&lock_delay=10s&request_timeout=2s").await;
    let b = client(&server, PARAMS).await;
    let mutex = a.locks.mutex("sd-m").unwrap().lock().await.unwrap();
    let lease = a
        .locks
        .semaphore("sd-s", 1)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let reader = a.locks.rwlock("sd-rw").unwrap().read().await.unwrap();
    let blocker = b.locks.mutex("sd-w").unwrap().lock().await.unwrap();
    let waiting = a.locks.mutex("sd-w").unwrap();
    let waiter = tokio::spawn(async move { waiting.lock().await });
    let sem_waiting = a.locks.semaphore("sd-s2", 1).unwrap();
    let sem_blocker = b
        .locks
        .semaphore("sd-s2", 1)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let sem_waiter = tokio::spawn(async move { sem_waiting.acquire(1).await });
    while b.locks.state("sd-w").await.unwrap().waiters != Some(1)
        || b.locks.state("sd-s2").await.unwrap().waiters != Some(1)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ours = a.backend.session_ids();
    assert_eq!(ours.len(), 4, "{ours:?}");
    a.locks.shutdown().await.unwrap();
    let all_lost = async { (mutex.lost().await, lease.lost().await, reader.lost().await) };
    tokio::time::timeout(Duration::from_secs(5), all_lost)
        .await
        .expect("a hold outlived the shutdown");
    let ended = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("a mutex waiter outlived the shutdown")
        .unwrap();
    assert!(matches!(ended, Err(Error::Closed { .. })), "{ended:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), sem_waiter)
        .await
        .expect("a semaphore waiter outlived the shutdown")
        .unwrap();
    assert!(matches!(ended, Err(Error::Closed { .. })), "{ended:?}");
    let left: Vec<String> = server
        .session_ids()
        .into_iter()
        .filter(|s| ours.contains(s))
        .collect();
    assert!(left.is_empty(), "sessions left on the agent: {left:?}");
    // The other client gets every name at once.
    assert!(b
        .locks
        .semaphore("sd-s", 1)
        .unwrap()
        .try_acquire(1)
        .await
        .unwrap()
        .is_some());
    assert!(b
        .locks
        .rwlock("sd-rw")
        .unwrap()
        .try_write()
        .await
        .unwrap()
        .is_some());
    assert!(b
        .locks
        .mutex("sd-m")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_some());
    blocker.release().await.unwrap();
    sem_blocker.release().await.unwrap();
}

/// A.2: a waiter that was killed (its queue key stays while its session lives, up to 2 × TTL
/// on the agent) does not keep a free mutex from the waiters behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_waiter_does_not_block_the_queue() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let go = GoClient::new(&server);
    let held = a.locks.mutex("q").unwrap().lock().await.unwrap();
    // A waiter whose process died: its session (TTL 60s, never renewed) keeps its queue key.
    let dead = go.session("60s", "delete").await;
    assert!(
        go.acquire(
            &format!("tumbler/q/.queue/{dead}"),
            &dead,
            tumbler_consul::QUEUE_FLAGS,
            b""
        )
        .await
    );
    let mutex = b.locks.mutex("q").unwrap();
    let waiter = tokio::spawn(async move { mutex.lock_timeout(Duration::from_secs(20)).await });
    while a.locks.state("q").await.unwrap().waiters != Some(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let released = Instant::now();
    held.release().await.unwrap();
    let got = waiter.await.unwrap().unwrap();
    let took = released.elapsed();
    assert!(
        got.is_some(),
        "the waiter behind a dead one never got the lock"
    );
    assert!(
        took < Duration::from_secs(4),
        "a dead waiter cost the live one {took:?}"
    );
    got.unwrap().release().await.unwrap();
}

/// A.2: a mutex wait that times out leaves no queue key and no session behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_mutex_wait_leaves_nothing() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let go = GoClient::new(&server);
    let held = a.locks.mutex("t").unwrap().lock().await.unwrap();
    let late = b
        .locks
        .mutex("t")
        .unwrap()
        .lock_timeout(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(late.is_none());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !go.list("tumbler/t/.queue/").await.is_empty() || b.backend.session_ids().len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the timed-out waiter left its queue key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held.release().await.unwrap();
}

/// A.8: port 0, and credentials given twice (or at all in the userinfo), are refused at
/// connect with `InvalidArgument`.
#[tokio::test]
async fn bad_configuration_is_refused_at_connect() {
    for url in [
        "consul://127.0.0.1:0",
        "consuls://127.0.0.1:0/?ttl=10s",
        "consul://user:pw@127.0.0.1:8500/?token=t",
        "consul://127.0.0.1:8500/?token=a&token=b",
    ] {
        let outcome = tumbler_consul::connect_url(url).await.map(|_| ());
        assert!(
            matches!(outcome, Err(Error::InvalidArgument { .. })),
            "{url}: {outcome:?}"
        );
    }
    let outcome = ConsulConfig::new("127.0.0.1:0").connect().await.map(|_| ());
    assert!(
        matches!(outcome, Err(Error::InvalidArgument { .. })),
        "{outcome:?}"
    );
}

/// A.11: names with a segment starting with `.` cannot be Consul keys of ours; they are
/// refused with `InvalidArgument` or `InvalidName` before anything is written.
#[tokio::test]
async fn dot_segments_are_refused() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    for name in [".x", "a/.lock", "a/.rw/b"] {
        let refused = match LockName::new(name) {
            Err(e) => Err(e),
            Ok(name) => c.locks.mutex(name).unwrap().try_lock().await.map(|_| ()),
        };
        assert!(
            matches!(
                refused,
                Err(Error::InvalidName { .. } | Error::InvalidArgument { .. })
            ),
            "{name}: {refused:?}"
        );
    }
    assert!(GoClient::new(&server).list("tumbler/").await.is_empty());
}

/// A.2: a waiter that times out on a runtime that ends right after (a CLI's `--timeout`, then
/// exit) leaves no queue entry: the cleanup that its runtime could not run is run elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_timed_out_on_an_ending_runtime_leaves_nothing() {
    let server = server().await;
    let a = client(&server, PARAMS).await;
    let go = GoClient::new(&server);
    let held = a.locks.mutex("rt").unwrap().lock().await.unwrap();
    let addr = server.addr();
    let gave_up = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let b = common::client_at(addr, PARAMS).await;
            let mutex = b.locks.mutex("rt").unwrap();
            mutex
                .lock_timeout(Duration::from_millis(400))
                .await
                .unwrap()
                .is_none()
        })
        // The runtime ends here, with whatever it had spawned.
    })
    .join()
    .unwrap();
    assert!(gave_up);
    let deadline = Instant::now() + Duration::from_secs(1);
    while !go.list("tumbler/rt/.queue/").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the queue key of a waiter whose runtime ended stayed behind"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held.release().await.unwrap();
}

/// A.6: a guard dropped outside any runtime, after the runtime that acquired it has shut down,
/// does not panic and is still released (long before the session would expire); one dropped
/// inside another live runtime is released too.
#[test]
fn guards_dropped_outside_their_runtime_are_released() {
    let home = tokio::runtime::Runtime::new().unwrap();
    let server = home.block_on(server());
    let addr = server.addr();
    let params = "ttl=20s&lock_delay=0s&request_timeout=2s";
    let other = home.block_on(client(&server, params));

    let gone = tokio::runtime::Runtime::new().unwrap();
    let (a, outside, inside) = gone.block_on(async {
        let a = common::client_at(addr, params).await;
        let outside = a.locks.mutex("outside").unwrap().lock().await.unwrap();
        let inside = a.locks.mutex("inside").unwrap().lock().await.unwrap();
        (a, outside, inside)
    });
    home.block_on(async { drop(inside) });
    drop(gone);
    drop(outside);
    home.block_on(async {
        for name in ["inside", "outside"] {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let got = other.locks.mutex(name).unwrap().try_lock().await.unwrap();
                if let Some(guard) = got {
                    guard.release().await.unwrap();
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: the dropped guard was not released"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    drop(a);
}

/// A.2: a read-write lock's waiting writer that was killed (its contender key lives until the
/// agent invalidates its session) keeps neither readers nor writers from the free lock for
/// longer than the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_waiting_writer_does_not_block_the_rwlock() {
    let server = server().await;
    let c = client(&server, PARAMS).await;
    let go = GoClient::new(&server);
    let dead = go.session("60s", "release").await;
    assert!(
        go.acquire("tumbler/rwd/.rw/dead", &dead, RWLOCK_FLAGS, b"")
            .await
    );
    let record = br#"{"Writer":null,"Readers":[],"WaitingWriters":["dead"]}"#;
    assert!(
        go.cas("tumbler/rwd/.rwlock", RWLOCK_FLAGS, record.to_vec(), 0)
            .await
    );
    let rw = c.locks.rwlock("rwd").unwrap();
    let start = Instant::now();
    let reader = rw.read_timeout(Duration::from_secs(10)).await.unwrap();
    assert!(reader.is_some(), "a dead waiting writer kept a reader out");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    reader.unwrap().release().await.unwrap();
    let writer = rw.write_timeout(Duration::from_secs(10)).await.unwrap();
    assert!(writer.is_some());
    writer.unwrap().release().await.unwrap();
}

/// A.1: every primitive's hold carries its session's validity deadline from the grant: a
/// holder whose whole process stalls past it sees the loss on its next look, before any task
/// of the backend has run (a semaphore lease has a session of its own, created just before).
#[tokio::test(flavor = "current_thread")]
async fn stalled_lease_and_rwlock_holders_see_their_loss_before_acting() {
    let server = server().await;
    let a = client(&server, "ttl=2s&lock_delay=0s&request_timeout=1s").await;
    let lease = a
        .locks
        .semaphore("stall-s", 2)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let writer = a.locks.rwlock("stall-rw").unwrap().write().await.unwrap();
    assert!(lease.lost_reason().is_none() && writer.lost_reason().is_none());
    // The stall is the fault under test: this thread runs the runtime, so nothing renews.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lease.lost_reason(), Some(LostReason::RenewalFailed));
    assert_eq!(writer.lost_reason(), Some(LostReason::RenewalFailed));
}

/// A.3: a read-write lock waiter whose agent stops answering ends with a connection error
/// (or a timeout), not with a session expiry and not by hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_waiter_on_a_stalled_agent_is_a_connection_error() {
    let server = server().await;
    let (a, b) = (
        client(&server, "ttl=2s&lock_delay=0s&request_timeout=1s").await,
        client(&server, "ttl=2s&lock_delay=0s&request_timeout=1s").await,
    );
    let writer = a.locks.rwlock("rw-down").unwrap().write().await.unwrap();
    let rw = b.locks.rwlock("rw-down").unwrap();
    let waiting = tokio::spawn(async move { rw.read().await.map(|_| ()) });
    while a.locks.state("rw-down").await.unwrap().waiters != Some(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.pause();
    let ended = tokio::time::timeout(Duration::from_secs(6), waiting)
        .await
        .expect("the waiter hung on a stalled agent")
        .unwrap();
    server.resume();
    assert!(
        matches!(ended, Err(Error::Connection { .. } | Error::Timeout { .. })),
        "{ended:?}"
    );
    drop(writer);
}

/// A.4: a semaphore's limit is recorded on the store: while the semaphore is in use another
/// limit is a `Conflict` (and grants nothing); once nobody uses it, a new limit takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_mismatch_is_a_conflict_while_in_use() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let two = a
        .locks
        .semaphore("lim", 2)
        .unwrap()
        .acquire(1)
        .await
        .unwrap();
    let p = conflict(b.locks.semaphore("lim", 5).unwrap().try_acquire(1).await);
    assert!(p.contains("limit is 2"), "{p}");
    let p = conflict(
        b.locks
            .semaphore("lim", 5)
            .unwrap()
            .acquire_timeout(1, Duration::from_millis(500))
            .await,
    );
    assert!(p.contains("limit is 2"), "{p}");
    two.release().await.unwrap();
    let five = b
        .locks
        .semaphore("lim", 5)
        .unwrap()
        .try_acquire(4)
        .await
        .unwrap();
    let five = five.expect("an unused semaphore record kept its old limit");
    let p = conflict(a.locks.semaphore("lim", 2).unwrap().try_acquire(1).await);
    assert!(p.contains("limit is 5"), "{p}");
    five.release().await.unwrap();
}

/// A.2: a read-write lock wait that times out on a runtime that ends right after leaves no
/// contender key (which would count as a waiter while the backend's session lives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_wait_timed_out_on_an_ending_runtime_leaves_nothing() {
    let server = server().await;
    let a = client(&server, PARAMS).await;
    let writer = a.locks.rwlock("rt-rw").unwrap().write().await.unwrap();
    let addr = server.addr();
    let (gave_up, b) = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let b = common::client_at(addr, PARAMS).await;
            let rw = b.locks.rwlock("rt-rw").unwrap();
            let none = rw
                .read_timeout(Duration::from_millis(400))
                .await
                .unwrap()
                .is_none();
            (none, b)
        })
    })
    .join()
    .unwrap();
    assert!(gave_up);
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.locks.state("rt-rw").await.unwrap().waiters != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the contender key of a read wait whose runtime ended stayed behind"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.release().await.unwrap();
    drop(b);
}
