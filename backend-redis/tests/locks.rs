//! The primitives on a real Redis server: exclusion, tokens, FIFO hand-off by notification,
//! cancellation, semaphores, read-write locks, revocation, forced release, state.

mod common;

use std::time::{Duration, Instant};

use common::{connect, connect_backend, eventually, fresh_redis, logs, PROMPT};
use testkit::resp::Reply;
use tumbler_core::{Error, HoldMode, LostReason};
use tumbler_redis::RedisConfig;

#[tokio::test]
async fn mutex_excludes_and_tokens_increase() {
    logs();
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let first = a.mutex("jobs/nightly").unwrap().lock().await.unwrap();
    assert!(b
        .mutex("jobs/nightly")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    // The key is exactly the name, holding our value (redis-py and rslock see it as held).
    match redis.cmd(&["GET", "jobs/nightly"]).await.unwrap() {
        Reply::Bulk(Some(v)) => {
            let v = String::from_utf8(v).unwrap();
            assert!(v.ends_with(&format!(":x:{}", first.fencing_token())), "{v}");
        }
        other => panic!("the lock key holds {other:?}"),
    }
    let token = first.fencing_token();
    first.release().await.unwrap();
    let second = b
        .mutex("jobs/nightly")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("free");
    assert!(second.fencing_token() > token);
    second.release().await.unwrap();
    assert_eq!(
        redis.cmd(&["EXISTS", "jobs/nightly"]).await.unwrap(),
        Reply::Int(0)
    );
}

#[tokio::test]
async fn release_wakes_the_waiter_without_waiting_for_a_timer() {
    let redis = fresh_redis().await;
    // A long TTL: the fallback retry would come only after ttl/3 = 10 s.
    let url = format!("{}?ttl=30s", redis.url());
    let connect_long = || async {
        RedisConfig::from_url(&url)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let (a, b) = (connect_long().await, connect_long().await);
    let held = a.mutex("handoff").unwrap().lock().await.unwrap();
    let waiter = b.mutex("handoff").unwrap();
    let task = tokio::spawn(async move {
        let guard = waiter.lock().await?;
        Ok::<_, Error>((Instant::now(), guard))
    });
    eventually(PROMPT, "the waiter queued", || async {
        a.state("handoff").await.unwrap().waiters == Some(1)
    })
    .await;
    let released_at = Instant::now();
    held.release().await.unwrap();
    let (granted_at, guard) = tokio::time::timeout(PROMPT, task)
        .await
        .expect("waiter granted")
        .unwrap()
        .unwrap();
    let handoff = granted_at.duration_since(released_at);
    assert!(
        handoff < Duration::from_secs(5),
        "hand-off took {handoff:?}: the waiter was not woken by the release"
    );
    guard.release().await.unwrap();
}

/// Issue 14: a release grants the head of the queue only for what was left of its queue entry
/// (under 3 s, so a waiter that died meanwhile blocks no longer); the new holder must renew it
/// to its TTL before that runs out, and keeps the lock with the key's whole TTL.
#[tokio::test]
async fn a_handed_off_hold_outlives_its_short_grant() {
    logs();
    let redis = fresh_redis().await;
    let url = format!("{}?ttl=30s", redis.url());
    let connect_long = || async {
        RedisConfig::from_url(&url)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let (a, b) = (connect_long().await, connect_long().await);
    let held = a.mutex("handoff/long").unwrap().lock().await.unwrap();
    let waiter = b.mutex("handoff/long").unwrap();
    let task = tokio::spawn(async move { waiter.lock().await });
    eventually(PROMPT, "the waiter queued", || async {
        a.state("handoff/long").await.unwrap().waiters == Some(1)
    })
    .await;
    held.release().await.unwrap();
    let guard = tokio::time::timeout(PROMPT, task)
        .await
        .expect("waiter granted")
        .unwrap()
        .unwrap();
    // Past the grant's life on the server (at most 2.5 s here).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(guard.lost_reason(), None);
    match redis.cmd(&["PTTL", "handoff/long"]).await.unwrap() {
        Reply::Int(ms) => assert!(ms > 20_000, "the key lives {ms} ms more, not a TTL"),
        other => panic!("PTTL answered {other:?}"),
    }
    guard.release().await.unwrap();
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let redis = fresh_redis().await;
    let a = connect(&redis.url()).await;
    let held = a.mutex("fifo").unwrap().lock().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for position in 1..=4usize {
        let client = connect(&redis.url()).await;
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let guard = client.mutex("fifo").unwrap().lock().await.unwrap();
            tx.send(position).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            guard.release().await.unwrap();
        }));
        eventually(PROMPT, "the waiter queued", || async {
            a.state("fifo").await.unwrap().waiters == Some(position)
        })
        .await;
    }
    // A newcomer's try_lock does not jump the queue.
    held.release().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    drop(tx);
    let mut order = Vec::new();
    while let Some(p) = rx.recv().await {
        order.push(p);
    }
    assert_eq!(order, [1, 2, 3, 4]);
}

#[tokio::test]
async fn cancelled_waiter_leaves_the_queue_and_nothing_leaks() {
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let held = a.mutex("cancel").unwrap().lock().await.unwrap();
    let waiter = b.mutex("cancel").unwrap();
    let task = tokio::spawn(async move { waiter.lock().await });
    eventually(PROMPT, "the waiter queued", || async {
        a.state("cancel").await.unwrap().waiters == Some(1)
    })
    .await;
    task.abort();
    let _ = task.await;
    eventually(PROMPT, "the cancelled waiter left the queue", || async {
        a.state("cancel").await.unwrap().waiters == Some(0)
    })
    .await;
    held.release().await.unwrap();
    // Acquisitions cancelled at many points leave nothing behind.
    let mutex = b.mutex("cancel").unwrap();
    for step in 0..40u64 {
        let attempt = tokio::time::timeout(Duration::from_micros(100 * step), mutex.lock()).await;
        if let Ok(guard) = attempt {
            guard.unwrap().release().await.unwrap();
        }
    }
    eventually(PROMPT, "the lock is free and unqueued", || async {
        let state = a.state("cancel").await.unwrap();
        !state.is_held() && state.waiters == Some(0)
    })
    .await;
    // Only the fencing counter (and the restart epoch) remain.
    let keys = match redis.cmd(&["KEYS", "*"]).await.unwrap() {
        Reply::Array(Some(keys)) => keys,
        other => panic!("KEYS answered {other:?}"),
    };
    let mut names: Vec<String> = keys
        .iter()
        .map(|k| k.as_str().expect("a key name").to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["#tumbler:epoch", "{cancel}#tumbler:fence"]);
}

#[tokio::test]
async fn semaphore_is_all_or_nothing_and_checks_the_limit() {
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let pool = a.semaphore("pool", 3).unwrap();
    let two = pool.acquire(2).await.unwrap();
    let other = b.semaphore("pool", 3).unwrap();
    assert!(
        other.try_acquire(2).await.unwrap().is_none(),
        "only 1 of 3 free"
    );
    let waiting = tokio::spawn(async move { other.acquire(2).await });
    eventually(PROMPT, "the semaphore waiter queued", || async {
        a.state("pool").await.unwrap().waiters == Some(1)
    })
    .await;
    let state = a.state("pool").await.unwrap();
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].mode, HoldMode::Permits(2));
    assert_eq!(state.holders[0].token, Some(two.fencing_token()));
    let mismatched = b.semaphore("pool", 5).unwrap();
    match mismatched.try_acquire(1).await {
        Err(Error::Conflict { problem, .. }) => assert!(problem.contains("limit 3"), "{problem}"),
        other => panic!("a different limit gave {other:?}"),
    }
    two.release().await.unwrap();
    let lease = tokio::time::timeout(PROMPT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(lease.permits(), 2);
    lease.release().await.unwrap();
}

#[tokio::test]
async fn rwlock_readers_share_and_a_queued_writer_keeps_new_readers_out() {
    let redis = fresh_redis().await;
    let clients = [
        connect(&redis.url()).await,
        connect(&redis.url()).await,
        connect(&redis.url()).await,
    ];
    let rw: Vec<_> = clients
        .iter()
        .map(|c| c.rwlock("config").unwrap())
        .collect();
    let r0 = rw[0].read().await.unwrap();
    let r1 = rw[1].try_read().await.unwrap().expect("readers share");
    // One name, one kind: a mutex of the same name is refused, naming both kinds.
    match clients[2].mutex("config").unwrap().try_lock().await {
        Err(Error::Conflict { problem, .. }) => {
            assert!(
                problem.contains("read-write lock") && problem.contains("mutex"),
                "{problem}"
            )
        }
        other => panic!("a mutex on a read-locked name: {other:?}"),
    }
    let writer = rw[2].clone();
    let waiting = tokio::spawn(async move { writer.write().await });
    eventually(PROMPT, "the writer queued", || async {
        clients[0].state("config").await.unwrap().waiters == Some(1)
    })
    .await;
    let late = clients[2].rwlock("config").unwrap();
    assert!(
        late.try_read().await.unwrap().is_none(),
        "a reader jumped the waiting writer"
    );
    r0.release().await.unwrap();
    r1.release().await.unwrap();
    let w = tokio::time::timeout(PROMPT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let token = w.fencing_token();
    let read = w.downgrade().await.unwrap();
    assert_eq!(read.fencing_token(), token);
    let state = clients[0].state("config").await.unwrap();
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].mode, HoldMode::Read);
    let shared = rw[0]
        .try_read()
        .await
        .unwrap()
        .expect("readers share after a downgrade");
    assert!(rw[1].try_write().await.unwrap().is_none());
    shared.release().await.unwrap();
    read.release().await.unwrap();
    assert!(rw[1].try_write().await.unwrap().is_some());
}

#[tokio::test]
async fn hold_outlives_its_ttl_while_renewed() {
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let held = a.mutex("renew").unwrap().lock().await.unwrap();
    let intruder = b
        .mutex("renew")
        .unwrap()
        .lock_timeout(common::TTL * 3)
        .await
        .unwrap();
    assert!(
        intruder.is_none(),
        "the lock expired while its holder was healthy"
    );
    assert_eq!(held.lost_reason(), None);
    held.release().await.unwrap();
}

#[tokio::test]
async fn revocation_and_forced_release_reach_the_holder() {
    let redis = fresh_redis().await;
    let (a, b) = (
        connect_backend(&redis.url()).await,
        connect_backend(&redis.url()).await,
    );
    let (la, lb): (tumbler_core::SharedBackend, tumbler_core::SharedBackend) =
        (a.clone(), b.clone());
    let held = la.mutex("revoke").unwrap().lock().await.unwrap();
    assert_eq!(lb.request_revoke("revoke").await.unwrap(), 1);
    tokio::time::timeout(PROMPT, held.revoke_requested())
        .await
        .unwrap();
    assert_eq!(held.lost_reason(), None);
    assert_eq!(
        a.held_locks(),
        vec![tumbler_core::LockName::new("revoke").unwrap()]
    );
    a.settle().await.unwrap();
    let waiter = lb.mutex("revoke").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    eventually(PROMPT, "the waiter queued", || async {
        lb.state("revoke").await.unwrap().waiters == Some(1)
    })
    .await;
    assert_eq!(b.force_release("revoke").await.unwrap(), 1);
    let next = tokio::time::timeout(PROMPT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The forced release tells A and grants B in one script; the two notifications reach
    // two connections at once, so A's lost() fires promptly but need not come first (the
    // fencing token is what keeps A's late writes out).
    let reason = tokio::time::timeout(PROMPT, held.lost())
        .await
        .expect("lost() did not fire promptly after the forced release");
    assert_eq!(reason, LostReason::Deleted);
    assert_eq!(held.lost_reason(), Some(LostReason::Deleted));
    assert!(next.fencing_token() > held.fencing_token());
    assert!(matches!(held.release().await, Err(Error::NotOwner { .. })));
    next.release().await.unwrap();
}

#[tokio::test]
async fn deleting_the_key_fires_lost() {
    let redis = fresh_redis().await;
    let a = connect(&redis.url()).await;
    let held = a.mutex("deleted").unwrap().lock().await.unwrap();
    redis.cmd(&["DEL", "deleted"]).await.unwrap();
    let reason = tokio::time::timeout(PROMPT, held.lost()).await.unwrap();
    assert_eq!(reason, LostReason::Deleted);
    assert!(matches!(held.release().await, Err(Error::NotOwner { .. })));
}

#[tokio::test]
async fn after_a_restart_no_lock_is_granted_before_old_holds_ran_out() {
    logs();
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let held = a.mutex("restart").unwrap().lock().await.unwrap();
    let restarted_at = Instant::now();
    redis.restart().await.unwrap();
    let guard = b
        .mutex("restart")
        .unwrap()
        .lock_timeout(PROMPT)
        .await
        .unwrap()
        .expect("the lock after the restart");
    let waited = restarted_at.elapsed();
    assert!(
        held.lost_reason().is_some(),
        "B got the lock before A heard it was lost"
    );
    assert!(
        waited >= common::TTL - Duration::from_millis(100),
        "granted after {waited:?}"
    );
    assert!(
        guard.fencing_token() > held.fencing_token(),
        "tokens went backwards across the restart"
    );
    guard.release().await.unwrap();
}

#[tokio::test]
async fn shutdown_releases_every_hold() {
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let held = a.mutex("bye").unwrap().lock().await.unwrap();
    a.shutdown().await.unwrap();
    assert_eq!(held.lost_reason(), Some(LostReason::Abandoned));
    assert!(b.mutex("bye").unwrap().try_lock().await.unwrap().is_some());
    assert!(matches!(
        a.mutex("bye").unwrap().try_lock().await,
        Err(Error::Closed { .. })
    ));
    drop(held);
}
