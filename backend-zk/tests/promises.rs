//! The promises of issue 12 on ZooKeeper: validity from the grant, unreachable is an error,
//! one name one kind, foreign nodes, guards dropped outside a runtime, the same event under the
//! same name, prompt release after a lost session, and digest users sharing parent folders.

mod common;

use std::time::{Duration, Instant};

use common::{backend, children, configured, eventually, next_event, raw, server, shared, PROMPT};
use testkit::proxy::{FaultProxy, ProxyMode};
use tumbler_core::{ConnectionEvent, Error, LockBackend, LostReason};
use tumbler_zookeeper::{ZkBackend, ZkConfig};
use zookeeper_client as zk;

/// How much later than its deadline a call may return on a loaded machine.
const MARGIN: Duration = Duration::from_millis(1500);

fn is_conflict_naming(result: &tumbler_core::Result<impl std::fmt::Debug>, words: &[&str]) -> bool {
    match result {
        Err(Error::Conflict { problem, .. }) => words.iter().all(|w| problem.contains(w)),
        _ => false,
    }
}

/// A.1: the holder's runtime is blocked right after `lock()` returned, past the session
/// timeout, while a rival takes the lock: when the holder runs again its very first look at
/// `lost_reason()` (no `.await` in between) says the hold is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stalled_past_its_session_sees_the_loss_before_any_await() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let session = Duration::from_secs(2);
    let rival = backend(&hosts, session).await;
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder_hosts = hosts.clone();
    let holder = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let locks = backend(&holder_hosts, session).await;
            let guard = shared(&locks).mutex("stall").unwrap().lock().await.unwrap();
            held_tx.send(()).unwrap();
            // Blocks this runtime: no heartbeat, no ping, no watch runs until the rival holds.
            go_rx.recv().unwrap();
            let seen = guard.lost_reason();
            drop(guard);
            seen
        })
    });
    held_rx.recv().unwrap();
    let taken = shared(&rival)
        .mutex("stall")
        .unwrap()
        .lock_timeout(PROMPT)
        .await
        .unwrap()
        .expect("the rival gets the lock once the stalled holder's session expired");
    go_tx.send(()).unwrap();
    let seen = holder.join().unwrap();
    assert!(
        seen.is_some(),
        "the stalled holder saw no loss while the rival held the lock"
    );
    taken.release().await.unwrap();
}

/// A.1: the validity deadline moves forward with every heartbeat, so a connected holder keeps
/// its lock well past the first deadline.
#[tokio::test]
async fn heartbeats_move_the_deadline_forward() {
    let zk = server().await;
    let locks = backend(&zk.connect_string(), Duration::from_secs(2)).await;
    let guard = shared(&locks)
        .mutex("renewed")
        .unwrap()
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await; // two session timeouts
    assert_eq!(guard.lost_reason(), None);
    guard.release().await.unwrap();
}

/// A.3: `try_lock` on a stopped server (SIGSTOP: sockets open, nothing answered) is an error
/// within the request timeout, never "busy", and the error says how long it waited. The
/// connection events say Suspended meanwhile, and Reconnected once the server answers again.
#[tokio::test]
async fn try_lock_on_a_stopped_server_is_an_error_within_the_request_timeout() {
    let zk = server().await;
    let request = Duration::from_secs(2);
    let locks = configured(&zk.connect_string(), Duration::from_secs(10), request).await;
    let mut events = locks.connection_events();
    let warm = shared(&locks)
        .mutex("stopped")
        .unwrap()
        .lock()
        .await
        .unwrap();
    warm.release().await.unwrap();
    zk.pause().unwrap();
    let started = Instant::now();
    let tried = shared(&locks).mutex("stopped").unwrap().try_lock().await;
    let took = started.elapsed();
    zk.resume().unwrap();
    match &tried {
        Err(Error::Timeout { after, .. }) => assert!(
            *after <= took && *after + MARGIN > took,
            "the error says {after:?}, the call took {took:?}"
        ),
        Err(Error::Connection { .. }) => {}
        other => panic!("a stopped server must be an error, not {other:?}"),
    }
    assert!(
        took < request + MARGIN,
        "try_lock took {took:?} with a {request:?} request timeout"
    );
    next_event(&mut events, ConnectionEvent::Suspended).await;
    next_event(&mut events, ConnectionEvent::Reconnected).await;
    // The node of the timed-out attempt is removed in the background once the server answers.
    let mutex = shared(&locks).mutex("stopped").unwrap();
    let again = eventually(
        "the lock is free again after the server resumed",
        || async { mutex.try_lock().await.ok().flatten() },
    )
    .await;
    again.release().await.unwrap();
}

/// A.3: `lock_timeout` and `lock` against a server that is gone are errors within the request
/// timeout, not "busy" and not a wait for the whole limit.
#[tokio::test]
async fn lock_on_a_dead_server_is_an_error_not_busy() {
    let zk = server().await;
    let request = Duration::from_secs(2);
    let config = ZkConfig::new(&zk.connect_string())
        .and_then(|c| c.session_timeout(Duration::from_secs(3)))
        .and_then(|c| c.request_timeout(request))
        .and_then(|c| c.connect_timeout(Duration::from_secs(20)))
        .unwrap();
    let locks = ZkBackend::connect(config).await.unwrap();
    let mut events = locks.connection_events();
    let warm = shared(&locks).mutex("dead").unwrap().lock().await.unwrap();
    warm.release().await.unwrap();
    zk.kill().await;
    next_event(&mut events, ConnectionEvent::Suspended).await;
    let mutex = shared(&locks).mutex("dead").unwrap();
    let started = Instant::now();
    let tried = mutex.lock_timeout(Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(
        matches!(tried, Err(Error::Connection { .. } | Error::Timeout { .. })),
        "{tried:?}"
    );
    assert!(took < request * 2 + MARGIN, "lock_timeout took {took:?}");
    // Once the session is given up, a call must not wait for the (long) connect timeout of a
    // new session either.
    next_event(&mut events, ConnectionEvent::Lost).await;
    let started = Instant::now();
    let locked = mutex.lock().await;
    let took = started.elapsed();
    assert!(
        matches!(
            locked,
            Err(Error::Connection { .. } | Error::Timeout { .. })
        ),
        "{locked:?}"
    );
    assert!(took < request * 2 + MARGIN, "lock took {took:?}");
}

/// A.4: a mutex, a read-write lock and a semaphore on one name exclude each other with a
/// Conflict naming both kinds, whichever comes first; nested names are independent.
#[tokio::test]
async fn different_kinds_on_one_name_conflict_and_nested_names_are_independent() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let a = backend(&hosts, Duration::from_secs(6)).await;
    let b = backend(&hosts, Duration::from_secs(6)).await;
    let (a, b) = (shared(&a), shared(&b));

    let mutex = a.mutex("kinds").unwrap().lock().await.unwrap();
    let writer = b.rwlock("kinds").unwrap().try_write().await;
    assert!(
        is_conflict_naming(&writer, &["mutex", "read-write"]),
        "{writer:?}"
    );
    let reader = b.rwlock("kinds").unwrap().try_read().await;
    assert!(
        is_conflict_naming(&reader, &["mutex", "read-write"]),
        "{reader:?}"
    );
    let permits = b.semaphore("kinds", 3).unwrap().try_acquire(1).await;
    assert!(
        is_conflict_naming(&permits, &["mutex", "semaphore"]),
        "{permits:?}"
    );
    // A waiting acquisition is refused too, rather than waiting behind the other kind.
    let waiting = b.rwlock("kinds").unwrap().write_timeout(PROMPT).await;
    assert!(
        is_conflict_naming(&waiting, &["mutex", "read-write"]),
        "{waiting:?}"
    );
    // Nested names are locks of their own.
    let nested = b.rwlock("kinds/inner").unwrap().try_write().await.unwrap();
    assert!(nested.is_some(), "kinds/inner is independent of kinds");
    mutex.release().await.unwrap();

    let lease = a.semaphore("kinds2", 2).unwrap().acquire(1).await.unwrap();
    let m = b.mutex("kinds2").unwrap().try_lock().await;
    assert!(is_conflict_naming(&m, &["mutex", "semaphore"]), "{m:?}");
    let w = b.rwlock("kinds2").unwrap().try_write().await;
    assert!(
        is_conflict_naming(&w, &["read-write", "semaphore"]),
        "{w:?}"
    );
    lease.release().await.unwrap();
    // Once the semaphore is free, the name may be used as another kind.
    let now = b.mutex("kinds2").unwrap().try_lock().await.unwrap();
    assert!(
        now.is_some(),
        "the name is free once the semaphore is released"
    );
}

/// A.4: a semaphore's limit is recorded on the store; a handle with a different limit gets a
/// Conflict instead of counting permits against its own limit.
#[tokio::test]
async fn semaphore_handles_with_different_limits_conflict() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let a = shared(&backend(&hosts, Duration::from_secs(6)).await);
    let b = shared(&backend(&hosts, Duration::from_secs(6)).await);
    let first = a.semaphore("limits", 2).unwrap().acquire(2).await.unwrap();
    let five = b.semaphore("limits", 5).unwrap().try_acquire(1).await;
    assert!(is_conflict_naming(&five, &["limit", "2", "5"]), "{five:?}");
    let three = b.semaphore("limits", 3).unwrap().try_acquire(3).await;
    assert!(
        is_conflict_naming(&three, &["limit", "2", "3"]),
        "{three:?}"
    );
    let same = b
        .semaphore("limits", 2)
        .unwrap()
        .try_acquire(1)
        .await
        .unwrap();
    assert!(same.is_none(), "both permits are taken");
    first.release().await.unwrap();
    let again = b
        .semaphore("limits", 2)
        .unwrap()
        .try_acquire(1)
        .await
        .unwrap();
    assert!(again.is_some());
}

/// A.5: a node tumbler did not write under a lock's folder (here one that looks like a lock
/// node but is persistent) is a Conflict naming it, not "busy" forever.
#[tokio::test]
async fn a_foreign_node_under_a_lock_is_a_conflict_naming_it() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    look.create("/foreign", &[], &open).await.unwrap();
    look.create("/foreign/lock-0000000000", b"mine", &open)
        .await
        .unwrap();
    let locks = shared(&backend(&hosts, Duration::from_secs(6)).await);
    let tried = locks.mutex("foreign").unwrap().try_lock().await;
    assert!(
        is_conflict_naming(&tried, &["lock-0000000000"]),
        "{tried:?}"
    );
    let waited = locks.mutex("foreign").unwrap().lock_timeout(PROMPT).await;
    assert!(
        is_conflict_naming(&waited, &["lock-0000000000"]),
        "{waited:?}"
    );
    assert_eq!(
        children(&look, "/foreign").await,
        vec!["lock-0000000000".to_owned()],
        "our own node was removed again"
    );

    // Data we did not write where the semaphore records its limit.
    look.create("/garbled", &[], &open).await.unwrap();
    look.create("/garbled/leases", b"\x00\xffnot a limit", &open)
        .await
        .unwrap();
    let tried = locks.semaphore("garbled", 2).unwrap().try_acquire(1).await;
    assert!(
        is_conflict_naming(&tried, &["/garbled/leases"]),
        "{tried:?}"
    );

    // A persistent node among a semaphore's leases takes a permit for ever.
    look.create("/squat", &[], &open).await.unwrap();
    look.create("/squat/leases", &[], &open).await.unwrap();
    look.create("/squat/leases/lease-0000000000", &[], &open)
        .await
        .unwrap();
    let semaphore = locks.semaphore("squat", 1).unwrap();
    let tried = semaphore.try_acquire(1).await;
    assert!(
        is_conflict_naming(&tried, &["lease-0000000000"]),
        "{tried:?}"
    );
    let waited = semaphore.acquire_timeout(1, PROMPT).await;
    assert!(
        is_conflict_naming(&waited, &["lease-0000000000"]),
        "{waited:?}"
    );
    assert_eq!(
        children(&look, "/squat/leases").await,
        vec!["lease-0000000000".to_owned()],
        "our lease nodes were removed again"
    );
    assert!(children(&look, "/squat/locks").await.is_empty());

    // A lock folder that is an ephemeral node cannot hold lock nodes.
    let fleeting = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    look.create("/fleeting", &[], &fleeting).await.unwrap();
    let tried = locks.mutex("fleeting").unwrap().try_lock().await;
    assert!(
        is_conflict_naming(&tried, &["/fleeting", "ephemeral"]),
        "{tried:?}"
    );
}

/// A.6: a hold dropped on a thread without any runtime (the backend's runtime still running
/// elsewhere, or already gone) does not panic, and is released when its runtime still runs.
#[test]
fn a_hold_dropped_outside_any_runtime_does_not_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (zk, look, locks, hold, guard) = runtime.block_on(async {
        let zk = server().await;
        let look = raw(&zk.connect_string()).await;
        let locks = backend(&zk.connect_string(), Duration::from_secs(30)).await;
        let request = |name: &str| tumbler_core::AcquireRequest {
            name: tumbler_core::LockName::new(name).unwrap(),
            kind: tumbler_core::LockKind::Exclusive,
            wait: true,
            value: Vec::new(),
        };
        let hold = locks.acquire(request("no-runtime")).await.unwrap().unwrap();
        let guard = shared(&locks)
            .mutex("no-runtime-guard")
            .unwrap()
            .lock()
            .await
            .unwrap();
        (zk, look, locks, hold, guard)
    });
    let dropped = std::thread::spawn(move || drop(hold)).join();
    assert!(
        dropped.is_ok(),
        "dropping the hold outside a runtime panicked"
    );
    runtime.block_on(async {
        eventually("the dropped hold's node is deleted", || async {
            children(&look, "/no-runtime")
                .await
                .is_empty()
                .then_some(())
        })
        .await;
    });
    drop(runtime);
    let dropped = std::thread::spawn(move || drop(guard)).join();
    assert!(
        dropped.is_ok(),
        "dropping a guard after its runtime ended panicked"
    );
    drop((locks, zk));
}

/// A.6: a guard dropped inside another live runtime is still released.
#[test]
fn a_guard_dropped_in_another_runtime_is_released() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (zk, guard, look) = runtime.block_on(async {
        let zk = server().await;
        let look = raw(&zk.connect_string()).await;
        let locks = backend(&zk.connect_string(), Duration::from_secs(30)).await;
        let guard = shared(&locks)
            .mutex("other-rt")
            .unwrap()
            .lock()
            .await
            .unwrap();
        (zk, guard, look)
    });
    let other = tokio::runtime::Runtime::new().unwrap();
    other.block_on(async move { drop(guard) });
    runtime.block_on(async {
        eventually("the dropped guard's node is deleted", || async {
            children(&look, "/other-rt").await.is_empty().then_some(())
        })
        .await;
    });
    drop(zk);
}

/// A.7: a session the servers expired is `SessionExpired` on the hold and on a late release,
/// and the connection events go Suspended -> Lost -> Reconnected.
#[tokio::test]
async fn an_expired_session_is_session_expired_everywhere() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let proxy = FaultProxy::start(zk.addr()).await.unwrap();
    let a = configured(
        &proxy.addr().to_string(),
        Duration::from_secs(6),
        Duration::from_secs(6),
    )
    .await;
    let mut events = a.connection_events();
    assert_eq!(events.current(), ConnectionEvent::Connected);
    let held = shared(&a).mutex("expiry").unwrap().lock().await.unwrap();
    proxy.set_mode(ProxyMode::Refuse);
    proxy.cut_all();
    next_event(&mut events, ConnectionEvent::Suspended).await;
    a.expire_session_at(&hosts).await.unwrap();
    proxy.set_mode(ProxyMode::Pass);
    let reason = tokio::time::timeout(PROMPT, held.lost()).await.unwrap();
    assert_eq!(reason, LostReason::SessionExpired);
    next_event(&mut events, ConnectionEvent::Lost).await;
    next_event(&mut events, ConnectionEvent::Reconnected).await;
    let late = held.release().await;
    assert!(
        matches!(late, Err(Error::SessionExpired { .. })),
        "{late:?}"
    );
}

/// A.9: after the session is lost to a partition, release and shutdown answer at once instead
/// of waiting for a request timeout on a session nobody can reach.
#[tokio::test]
async fn release_and_shutdown_after_a_lost_session_return_promptly() {
    let zk = server().await;
    let proxy = FaultProxy::start(zk.addr()).await.unwrap();
    let a = configured(
        &proxy.addr().to_string(),
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
    let held = shared(&a).mutex("cut").unwrap().lock().await.unwrap();
    proxy.set_mode(ProxyMode::Blackhole);
    tokio::time::timeout(PROMPT, held.lost()).await.unwrap();
    let started = Instant::now();
    let released = held.release().await;
    assert!(released.is_err(), "a lost hold's release reported success");
    assert!(
        started.elapsed() < MARGIN,
        "release took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    a.shutdown().await.unwrap();
    assert!(
        started.elapsed() < MARGIN,
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// A.11: a client with digest credentials does not lock other users out of sibling names:
/// shared parent folders are open, only the lock's own nodes carry the creator's ACL.
#[tokio::test]
async fn digest_users_share_parent_folders() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let alice =
        tumbler_zookeeper::connect_url(&format!("zk://alice:a1@{hosts}/apps?session_timeout=6s"))
            .await
            .unwrap();
    let bob =
        tumbler_zookeeper::connect_url(&format!("zk://bob:b2@{hosts}/apps?session_timeout=6s"))
            .await
            .unwrap();
    let anonymous =
        tumbler_zookeeper::connect_url(&format!("zk://{hosts}/apps?session_timeout=6s"))
            .await
            .unwrap();
    let a = alice.mutex("team/a").unwrap().lock().await.unwrap();
    let b = bob.mutex("team/b").unwrap().try_lock().await;
    assert!(matches!(b, Ok(Some(_))), "bob's sibling lock: {b:?}");
    let c = anonymous.mutex("team/c").unwrap().try_lock().await;
    assert!(matches!(c, Ok(Some(_))), "an anonymous sibling lock: {c:?}");
    a.release().await.unwrap();
}
