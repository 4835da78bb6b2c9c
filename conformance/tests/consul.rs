//! The whole conformance suite on the Consul backend, against testkit's in-process Consul HTTP
//! API test server (no Consul build can be installed here; `consul_real.rs` runs the same suite
//! against a real agent when `CONSUL_HTTP_ADDR` is set).
//!
//! Every case gets its own server; every client reaches it through its own fault proxy, so its
//! connection can be cut alone. Sessions have a 3 s TTL and a 1 s lock-delay. The harness is
//! `shared/consul_harness.rs`, which the explorer uses too (it says how `restart_server` works
//! on the test server).

#[path = "shared/consul_harness.rs"]
mod consul_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::Harness;
use consul_harness::{ConsulHarness, LOCK_DELAY, TTL};
use tumbler_core::LockName;

async fn harness() -> Arc<dyn Harness> {
    Arc::new(ConsulHarness::start().await)
}

conformance::suite!(harness);

/// A holder process killed without cleanup: its lock is free again after Consul invalidates
/// its session (2 × TTL after its last renewal) plus the lock-delay, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holder_frees_after_invalidation_plus_lock_delay() {
    let h = ConsulHarness::start().await;
    let name = LockName::new(format!("crash-bounds/{}", std::process::id())).unwrap();
    let mut holder = h
        .spawn_holder(&name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sessions_before = h.server().session_ids();
    let rival = h.client().await.unwrap();
    let mutex = rival.locks.mutex(&name).unwrap();
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "the lock was free while the holder lived"
    );
    let waiting = tokio::spawn(async move {
        let guard = mutex.lock_timeout(Duration::from_secs(60)).await;
        (Instant::now(), guard)
    });
    holder.kill().await.unwrap_or_else(|e| panic!("{e}"));
    let killed = Instant::now();
    // Wait for the agent to invalidate the holder's session: the server-side event the lock's
    // freedom must follow.
    let holder_sessions: Vec<String> = sessions_before.clone();
    let invalidated = loop {
        let live = h.server().session_ids();
        if !holder_sessions.iter().any(|id| live.contains(id)) {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the holder's session never expired"
        );
        assert!(
            !waiting.is_finished(),
            "the rival got the lock before the holder's session was invalidated"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let since_kill = invalidated - killed;
    // The holder renewed every TTL/2, so the session outlived the kill by 1.5..2 TTL.
    assert!(
        since_kill >= TTL * 3 / 2 - Duration::from_millis(300),
        "session invalidated {since_kill:?} after the kill, sooner than 1.5 × TTL"
    );
    let (granted_at, guard) = waiting.await.unwrap();
    let guard = guard
        .unwrap()
        .expect("the rival did not get the lock within 60 s");
    let after_invalidation = granted_at.saturating_duration_since(invalidated);
    assert!(
        after_invalidation >= LOCK_DELAY - Duration::from_millis(50),
        "the rival got the lock {after_invalidation:?} after the invalidation, inside the {LOCK_DELAY:?} lock-delay"
    );
    assert!(
        after_invalidation <= LOCK_DELAY + Duration::from_secs(3),
        "the rival waited {after_invalidation:?} after the lock-delay ended"
    );
    assert!(guard.fencing_token() > holder.token());
    guard.release().await.unwrap();
}
