//! What the server does per acquisition, counted with `INFO commandstats` (commands inside
//! scripts included) and `PUBSUB`: deterministic counts, not timings.

mod common;

use std::collections::BTreeMap;

use common::{
    channels, command_calls, connect, eventually, fresh_redis, logs, reset_stats, PROMPT,
};
use testkit::resp::Reply;

/// Issue 14: taking and releasing a free mutex costs at most 6 commands, scripts included.
#[tokio::test]
async fn a_free_mutex_costs_six_commands_per_cycle() {
    logs();
    let redis = fresh_redis().await;
    let locks = connect(&redis.url()).await;
    let mutex = locks.mutex("count/free").unwrap();
    // The first grant of a connection and of a name takes the slow path (restart delay,
    // fencing counter anchored to the clock); the holder's inbox is subscribed once.
    let warm = mutex.lock().await.unwrap();
    let mut token = warm.fencing_token();
    warm.release().await.unwrap();
    eventually(PROMPT, "the holder's inbox is subscribed", || async {
        channels(&redis, "*count/free*").await.len() == 1
    })
    .await;
    const CYCLES: u64 = 50;
    reset_stats(&redis).await;
    for _ in 0..CYCLES {
        let guard = mutex.lock().await.unwrap();
        assert!(guard.fencing_token() > token, "tokens increase");
        token = guard.fencing_token();
        guard.release().await.unwrap();
    }
    let calls = command_calls(&redis).await;
    let total: u64 = calls.values().sum();
    eprintln!(
        "{:.2} commands per cycle: {calls:?}",
        total as f64 / CYCLES as f64
    );
    assert!(
        total <= 6 * CYCLES,
        "{total} commands for {CYCLES} cycles: {calls:?}"
    );
    let expected: BTreeMap<String, u64> = [
        ("evalsha", 2),
        ("incrby", 1),
        ("set", 1),
        ("get", 1),
        ("del", 1),
    ]
    .into_iter()
    .map(|(c, n)| (c.to_owned(), n * CYCLES))
    .collect();
    assert_eq!(calls, expected);
}

/// Issue 14: a release hands the lock to the head of the queue inside the script and tells
/// that waiter alone: one message per hand-off, on a channel only its client listens to.
#[tokio::test]
async fn a_hand_off_is_one_message_to_one_waiter() {
    logs();
    let redis = fresh_redis().await;
    const WAITERS: usize = 8;
    let holder = connect(&redis.url()).await;
    let mut clients = Vec::new();
    for _ in 0..WAITERS {
        clients.push(connect(&redis.url()).await);
    }
    let first = holder.mutex("count/busy").unwrap().lock().await.unwrap();
    let mut waiting = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        waiting.push(tokio::spawn(async move {
            let guard = client.mutex("count/busy").unwrap().lock().await.unwrap();
            (i, guard)
        }));
        // One at a time, so the queue order is the spawn order.
        eventually(PROMPT, "the waiter is queued", || async {
            holder.state("count/busy").await.unwrap().waiters == Some(i + 1)
        })
        .await;
    }
    // Every channel of the lock has one subscriber at most: no broadcast to every waiter.
    let channels = channels(&redis, "*count/busy*").await;
    assert!(
        channels.len() >= WAITERS,
        "one inbox per client: {channels:?}"
    );
    for channel in &channels {
        let subscribers = match redis.cmd(&["PUBSUB", "NUMSUB", channel]).await.unwrap() {
            Reply::Array(Some(items)) => items[1].clone(),
            other => panic!("PUBSUB NUMSUB answered {other:?}"),
        };
        assert_eq!(subscribers, Reply::Int(1), "{channel}");
    }
    reset_stats(&redis).await;
    first.release().await.unwrap();
    let mut served = Vec::new();
    for task in waiting {
        let (i, guard) = task.await.unwrap();
        served.push(i);
        // Each hand-off so far was one release script and one message.
        let calls = command_calls(&redis).await;
        assert_eq!(
            calls.get("publish").copied().unwrap_or(0),
            served.len() as u64,
            "{calls:?}"
        );
        guard.release().await.unwrap();
    }
    assert_eq!(served, (0..WAITERS).collect::<Vec<_>>(), "FIFO");
    let calls = command_calls(&redis).await;
    assert_eq!(
        calls.get("publish").copied(),
        Some(WAITERS as u64),
        "{calls:?}"
    );
}
