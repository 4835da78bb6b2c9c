//! Redlock over three independent masters: exclusion survives one master dying mid-run; with
//! two dead, acquisitions fail with an error that says why, and holders hear they lost.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{logs, PROMPT};
use testkit::redis::Redis;
use tumbler_core::{Error, Fencing, LockBackend, SharedBackend};
use tumbler_redis::RedisConfig;

fn redlock_url(masters: &[Redis]) -> String {
    let hosts: Vec<String> = masters.iter().map(|m| m.addr().to_string()).collect();
    format!("redis+redlock://{}", hosts.join(","))
}

async fn client(url: &str) -> SharedBackend {
    RedisConfig::from_url(&common::with_test_params(url))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_master_dying_breaks_no_exclusion_and_two_stop_acquisitions() {
    logs();
    let masters = Redis::start_many(3).await.expect("start 3 masters");
    let url = redlock_url(&masters);
    let admin = RedisConfig::from_url(&common::with_test_params(&url))
        .unwrap()
        .connect_backend()
        .await
        .unwrap();
    admin.declare_fresh_servers().await.unwrap();
    let caps = admin.capabilities();
    assert!(caps.redlock && !caps.fifo && !caps.rwlock && !caps.semaphore);
    assert_eq!(caps.fencing, Fencing::BestEffort);

    const CLIENTS: usize = 4;
    const ROUNDS: usize = 25;
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let locks = client(&url).await;
        let (inside, overlaps, done) = (inside.clone(), overlaps.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mutex = locks.mutex("redlock/shared").unwrap();
            for _ in 0..ROUNDS {
                let guard = mutex
                    .lock_timeout(PROMPT)
                    .await
                    .expect("lock")
                    .expect("granted in time");
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(guard.lost_reason(), None);
                guard.release().await.expect("release on a majority");
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    common::eventually(PROMPT, "a third of the rounds", || {
        let done = done.clone();
        async move { done.load(Ordering::SeqCst) >= CLIENTS * ROUNDS / 3 }
    })
    .await;
    masters[0].kill().await;
    let killed_at = done.load(Ordering::SeqCst);
    for task in tasks {
        task.await.expect("a client failed after one master died");
    }
    assert!(
        killed_at < CLIENTS * ROUNDS,
        "the master died only after the run"
    );
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");

    // A holder on the two surviving masters loses its hold when one more dies; acquisitions
    // and new connections fail and say why.
    let holder = client(&url).await;
    let other = client(&url).await;
    let held = holder.mutex("redlock/last").unwrap().lock().await.unwrap();
    masters[1].kill().await;
    let started = Instant::now();
    match other.mutex("redlock/other").unwrap().try_lock().await {
        Err(Error::Connection { message, .. }) => {
            assert!(message.contains("only 1 of 3"), "{message}");
            assert!(message.contains("majority"), "{message}");
        }
        other => panic!("acquiring with 2 of 3 masters dead gave {other:?}"),
    }
    match other
        .mutex("redlock/other")
        .unwrap()
        .lock_timeout(PROMPT)
        .await
    {
        Err(Error::Connection { message, .. }) => {
            assert!(message.contains("only 1 of 3"), "{message}")
        }
        other => panic!("a waiting acquire with 2 of 3 masters dead gave {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the failures took {:?}",
        started.elapsed()
    );
    match RedisConfig::from_url(&common::with_test_params(&url))
        .unwrap()
        .connect_backend()
        .await
    {
        Err(Error::Connection { message, .. }) => {
            assert!(
                message.contains("only 1 of 3 Redis masters are reachable"),
                "{message}"
            )
        }
        other => panic!("connecting with 2 of 3 masters dead gave {other:?}"),
    }
    let reason = tokio::time::timeout(common::TTL * 2, held.lost())
        .await
        .expect("the holder heard it lost the majority");
    assert!(
        matches!(
            reason,
            tumbler_core::LostReason::Disconnected | tumbler_core::LostReason::RenewalFailed
        ),
        "{reason}"
    );
    drop(held);
}
