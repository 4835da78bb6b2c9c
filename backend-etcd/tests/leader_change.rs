//! Waiters keep their place in the queue through a leader election, however long it takes.
//!
//! A queued key lies on the instance's short waiting lease. While a cluster has no leader, no
//! keep-alive is answered; the new leader extends every lease, so the queued keys survive.
//! The backend used to give the waiting lease up once 3/4 of its 2 s TTL had passed without an
//! answer, revoke it when the new leader answered, and queue every waiter again at the back:
//! an election longer than 1.5 s broke FIFO order.

use std::time::Duration;

use testkit::etcd::{EtcdCluster, EtcdOptions, StoredKey};
use tokio::time::Instant;
use tumbler_core::{LockName, SharedBackend};
use tumbler_etcd::EtcdConfig;

async fn connect(url: &str) -> SharedBackend {
    tumbler_core::share(
        EtcdConfig::from_url(url)
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    )
}

/// Waits until `backend` sees `n` waiters on `name`.
async fn until_waiters(backend: &SharedBackend, name: &LockName, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = backend.state(name).await.expect("state");
        if state.waiters == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "never {n} waiters: {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_keep_their_place_through_a_long_election() {
    // Followers wait 3 to 6 s before they elect a new leader: far longer than the 1.5 s a
    // waiting lease was trusted without an answer.
    let cluster = EtcdCluster::start_with(
        3,
        EtcdOptions {
            election_timeout: Some(Duration::from_secs(3)),
            ..Default::default()
        },
    )
    .await
    .expect("start a 3-member cluster");
    let url = format!("etcd://{}?ttl=20s&timeout=10s", cluster.hosts());
    let (a, b, c) = (
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
    );
    let name = LockName::new("election/queue").expect("name");
    let held = a
        .mutex(&name)
        .expect("mutex")
        .lock()
        .await
        .expect("A's lock");

    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for (who, backend) in [("B", b.clone()), ("C", c.clone())] {
        let mutex = backend.mutex(&name).expect("mutex");
        let order_tx = order_tx.clone();
        waiters.push(tokio::spawn(async move {
            let guard = mutex.lock().await.expect("waiter's lock");
            let _ = order_tx.send((who, guard.fencing_token()));
            guard.release().await.expect("waiter's release");
        }));
        until_waiters(&a, &name, waiters.len()).await;
    }
    drop(order_tx);

    let leader = cluster.leader().await.expect("leader");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let before = queue(&cluster, others[0]).await;
    assert_eq!(before.len(), 3, "A's key and two queued keys: {before:?}");

    cluster.members()[leader].pause().expect("pause the leader");
    let deadline = Instant::now() + Duration::from_secs(30);
    'elected: loop {
        for &i in &others {
            if cluster.members()[i].is_leader().await.unwrap_or(false) {
                break 'elected;
            }
        }
        assert!(Instant::now() < deadline, "no new leader within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.members()[leader]
        .resume()
        .expect("resume the old leader");

    held.release().await.expect("A's release");
    for waiter in waiters {
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("waiters served within 30 s")
            .expect("waiter task");
    }
    let mut served = Vec::new();
    while let Some(grant) = order_rx.recv().await {
        served.push(grant);
    }
    // A waiter's token is its key's create revision: the key queued before the election, if
    // it kept its place.
    let queued: Vec<(&str, u64)> = vec![
        ("B", u64::try_from(before[1].1).expect("revision")),
        ("C", u64::try_from(before[2].1).expect("revision")),
    ];
    assert_eq!(
        served, queued,
        "after the election the waiters were not served in their place with their queued keys \
         (queue before: {before:?}): they were queued again"
    );
}

/// The lock's keys with their create revisions, oldest first, read through member `i`.
async fn queue(cluster: &EtcdCluster, i: usize) -> Vec<(String, i64)> {
    let keys: Vec<StoredKey> = cluster.members()[i]
        .range("election/queue/")
        .await
        .expect("range");
    let mut keys: Vec<(String, i64)> = keys
        .into_iter()
        .map(|k| (k.key, k.create_revision))
        .collect();
    keys.sort_by_key(|(_, revision)| *revision);
    keys
}
