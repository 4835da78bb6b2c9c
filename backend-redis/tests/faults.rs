//! Faults through a TCP proxy: a cut connection makes `lost()` fire within the validity bound,
//! before the key expires on the server; a waiter whose connection breaks still gets woken.

mod common;

use std::time::{Duration, Instant};

use common::{fresh_redis, logs, PROMPT};
use testkit::proxy::{FaultProxy, ProxyMode};
use testkit::resp::Reply;
use tumbler_core::{ConnectionEvent, LostReason};
use tumbler_redis::RedisConfig;

#[tokio::test]
async fn cut_connection_fires_lost_before_the_key_expires() {
    logs();
    let redis = fresh_redis().await;
    let proxy = FaultProxy::start(redis.addr()).await.unwrap();
    let ttl = Duration::from_secs(2);
    let drift = Duration::from_millis(400);
    let locks = RedisConfig::from_url(&format!(
        "redis://{}?ttl=2s&drift=400ms&connect_timeout=500ms",
        proxy.addr()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut events = locks.connection_events();
    let held = locks.mutex("cut").unwrap().lock().await.unwrap();
    // Let a renewal or two happen first.
    tokio::time::sleep(ttl / 2).await;
    proxy.set_mode(ProxyMode::Blackhole);
    proxy.cut_all();
    let cut_at = Instant::now();
    let reason = tokio::time::timeout(ttl * 2, held.lost())
        .await
        .expect("lost() fired");
    let lost_after = cut_at.elapsed();
    let pttl = match redis.cmd(&["PTTL", "cut"]).await.unwrap() {
        Reply::Int(ms) => ms,
        other => panic!("PTTL answered {other:?}"),
    };
    // The watchdog reports the cut; lockcore's own check of the validity deadline may get there
    // first (same moment) and report the missed renewal: both are true.
    assert!(
        matches!(reason, LostReason::Disconnected | LostReason::RenewalFailed),
        "{reason:?}"
    );
    assert!(
        pttl > 0,
        "lost() fired only after the key expired (PTTL {pttl})"
    );
    let validity = ttl - drift;
    // The last renewal was sent at most ttl/3 before the cut.
    assert!(
        lost_after + ttl / 3 + Duration::from_millis(50) >= validity,
        "lost() fired early: {lost_after:?}"
    );
    assert!(
        lost_after <= validity + Duration::from_millis(500),
        "lost() fired late: {lost_after:?}"
    );
    assert_eq!(events.current(), ConnectionEvent::Suspended);
    proxy.set_mode(ProxyMode::Pass);
    tokio::time::timeout(PROMPT, async {
        while events.next().await != Some(ConnectionEvent::Reconnected) {}
    })
    .await
    .expect("Reconnected after healing");
    let again = locks
        .mutex("cut")
        .unwrap()
        .lock_timeout(PROMPT)
        .await
        .unwrap();
    again
        .expect("the lock after it expired")
        .release()
        .await
        .unwrap();
    drop(held);
}

#[tokio::test]
async fn a_waiter_whose_connection_breaks_is_still_woken() {
    let redis = fresh_redis().await;
    let proxy = FaultProxy::start(redis.addr()).await.unwrap();
    // TTL 30 s: without a notification the waiter would retry only after 10 s.
    let a = RedisConfig::from_url(&format!("{}?ttl=30s", redis.url()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let b = RedisConfig::from_url(&format!("redis://{}?ttl=30s", proxy.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let held = a.mutex("rewake").unwrap().lock().await.unwrap();
    let waiter = b.mutex("rewake").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    common::eventually(PROMPT, "the waiter queued", || async {
        a.state("rewake").await.unwrap().waiters == Some(1)
    })
    .await;
    let mut events = b.connection_events();
    proxy.cut_all();
    tokio::time::timeout(PROMPT, async {
        while events.next().await != Some(ConnectionEvent::Reconnected) {}
    })
    .await
    .expect("the waiter reconnected");
    let released_at = Instant::now();
    held.release().await.unwrap();
    let guard = tokio::time::timeout(PROMPT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let handoff = released_at.elapsed();
    assert!(
        handoff < Duration::from_secs(5),
        "the waiter was not woken after its reconnect ({handoff:?})"
    );
    guard.release().await.unwrap();
}

#[tokio::test]
async fn leases_and_read_holds_of_a_vanished_client_expire() {
    let redis = fresh_redis().await;
    let proxy = FaultProxy::start(redis.addr()).await.unwrap();
    let cut_off = common::connect(&format!("redis://{}", proxy.addr())).await;
    let other = common::connect(&redis.url()).await;
    let lease = cut_off
        .semaphore("vanish/pool", 2)
        .unwrap()
        .acquire(2)
        .await
        .unwrap();
    let read = cut_off.rwlock("vanish/rw").unwrap().read().await.unwrap();
    assert!(other
        .semaphore("vanish/pool", 2)
        .unwrap()
        .try_acquire(1)
        .await
        .unwrap()
        .is_none());
    assert!(other
        .rwlock("vanish/rw")
        .unwrap()
        .try_write()
        .await
        .unwrap()
        .is_none());
    // The client can no longer renew: to the server it is gone.
    proxy.set_mode(ProxyMode::Blackhole);
    proxy.cut_all();
    let started = Instant::now();
    let permits = other
        .semaphore("vanish/pool", 2)
        .unwrap()
        .acquire_timeout(2, PROMPT)
        .await
        .unwrap()
        .expect("the vanished client's permits came back");
    let write = other
        .rwlock("vanish/rw")
        .unwrap()
        .write_timeout(PROMPT)
        .await
        .unwrap()
        .expect("the vanished reader's hold expired");
    assert!(
        started.elapsed() < common::TTL * 3,
        "took {:?}",
        started.elapsed()
    );
    assert!(lease.lost_reason().is_some() && read.lost_reason().is_some());
    permits.release().await.unwrap();
    write.release().await.unwrap();
    drop((lease, read));
}

/// A request made while the last connection attempt has just failed repeats that failure
/// once, not nested inside a second "cannot reach the redis store at …" (issue 12 A.11; a
/// clean-clone failure of the Redlock conformance suite).
#[tokio::test]
async fn a_repeated_connection_failure_names_the_store_once() {
    let redis = fresh_redis().await;
    let locks = RedisConfig::from_url(&format!(
        "redis://{}?ttl=2s&connect_timeout=500ms",
        redis.addr()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mutex = locks.mutex("gone").unwrap();
    redis.kill().await;
    // Back to back: the second comes within the retry spacing of the first's failed attempt.
    let first = mutex.try_lock().await.expect_err("the server is gone");
    let second = mutex.try_lock().await.expect_err("the server is gone");
    for error in [first, second] {
        let text = error.to_string();
        assert_eq!(
            text.matches("cannot reach").count(),
            1,
            "the store is named once: {text}"
        );
    }
}
