//! `redis+cluster://` on a real Redis Cluster (testkit: three masters, three replicas): every
//! primitive on every shard, a killed master followed by the same client, a waiter that rides
//! out the failover, `min_replicas` on the shards, and the connect errors.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, logs, one_name_per_master, PROMPT};
use testkit::redis_cluster::RedisCluster;
use testkit::resp::Reply;
use tumbler_core::{Error, SharedBackend};
use tumbler_redis::RedisConfig;

/// How long a client may take to find the new master after a failover has completed.
const FOLLOW: Duration = Duration::from_secs(30);

/// The URL of `cluster` with the test TTL and short timeouts, then `params` (`&key=value…`).
/// The servers start empty, so no restart delay is needed.
fn cluster_url(cluster: &RedisCluster, params: &str) -> String {
    format!(
        "redis+cluster://{}?ttl=2s&connect_timeout=1s&restart_delay=0s{params}",
        cluster.seed_hosts()
    )
}

async fn connect(url: &str) -> SharedBackend {
    RedisConfig::from_url(url)
        .expect("cluster URL")
        .connect()
        .await
        .expect("connect to the cluster")
}

/// What the master serving `key` has at `key`.
async fn on_master(cluster: &RedisCluster, key: &str) -> Reply {
    let master = cluster
        .master_of(cluster.slot_of(key).await.unwrap())
        .await
        .unwrap();
    cluster.nodes()[master].cmd(&["GET", key]).await.unwrap()
}

/// Keeps trying to take `name` (a failover in progress is a transient error) until `within`.
async fn lock_eventually(
    locks: &SharedBackend,
    name: &str,
    within: Duration,
) -> tumbler_core::MutexGuard {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match locks.mutex(name).unwrap().lock_timeout(PROMPT).await {
            Ok(Some(guard)) => return guard,
            Ok(None) => last = "still busy".into(),
            Err(error) => {
                assert!(error.is_transient(), "not a transient error: {error}");
                last = error.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no grant within {within:?} after the failover; last: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_primitive_works_on_every_shard() {
    logs();
    let cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    let url = cluster_url(&cluster, "&prefix=app:");
    let a = connect(&url).await;
    let b = connect(&url).await;
    assert!(
        a.address().starts_with("redis+cluster://"),
        "{}",
        a.address()
    );
    for name in one_name_per_master(&cluster, "jobs").await {
        // Mutex: exclusion, the key on the master of its slot, hand-off to a waiter.
        let first = a.mutex(name.as_str()).unwrap().lock().await.unwrap();
        assert!(b
            .mutex(name.as_str())
            .unwrap()
            .try_lock()
            .await
            .unwrap()
            .is_none());
        match on_master(&cluster, &format!("app:{name}")).await {
            Reply::Bulk(Some(v)) => {
                let v = String::from_utf8(v).unwrap();
                assert!(v.ends_with(&format!(":x:{}", first.fencing_token())), "{v}");
            }
            other => panic!("the master of {name} holds {other:?} at the lock key"),
        }
        let waiter = b.mutex(name.as_str()).unwrap();
        let waiting = tokio::spawn(async move { waiter.lock().await });
        eventually(PROMPT, "the waiter queued", || async {
            a.state(name.as_str()).await.unwrap().waiters == Some(1)
        })
        .await;
        let token = first.fencing_token();
        first.release().await.unwrap();
        let second = tokio::time::timeout(PROMPT, waiting)
            .await
            .expect("the waiter was granted")
            .unwrap()
            .unwrap();
        assert!(second.fencing_token() > token);
        // Revocation reaches the holder.
        assert_eq!(a.request_revoke(name.as_str()).await.unwrap(), 1);
        tokio::time::timeout(PROMPT, second.revoke_requested())
            .await
            .expect("revocation heard");
        second.release().await.unwrap();

        // Semaphore, read-write lock and election on names of the same slot.
        let pool = format!("{name}/pool");
        let two = a
            .semaphore(pool.as_str(), 3)
            .unwrap()
            .acquire(2)
            .await
            .unwrap();
        let sem = b.semaphore(pool.as_str(), 3).unwrap();
        assert!(sem.try_acquire(2).await.unwrap().is_none());
        let one = sem.try_acquire(1).await.unwrap().expect("one permit left");
        two.release().await.unwrap();
        one.release().await.unwrap();

        let config = format!("{name}/config");
        let ra = a.rwlock(config.as_str()).unwrap().read().await.unwrap();
        let rb = b.rwlock(config.as_str()).unwrap().read().await.unwrap();
        assert!(a
            .rwlock(config.as_str())
            .unwrap()
            .try_write()
            .await
            .unwrap()
            .is_none());
        ra.release().await.unwrap();
        rb.release().await.unwrap();
        let w = a.rwlock(config.as_str()).unwrap().write().await.unwrap();
        let r = w.downgrade().await.unwrap();
        r.release().await.unwrap();

        let leader = format!("{name}/leader");
        let election = a.election(leader.as_str()).unwrap();
        let leadership = election.campaign("node-a").await.unwrap();
        let seen = b.election(leader.as_str()).unwrap().leader().await.unwrap();
        let seen = seen.expect("b sees a leader");
        assert_eq!(
            (seen.value, seen.term),
            (b"node-a".to_vec(), leadership.term())
        );
        let mut observer = b.election(leader.as_str()).unwrap().observe();
        assert!(observer.next().await.unwrap().is_some());
        leadership.resign().await.unwrap();
        let after = tokio::time::timeout(PROMPT, observer.next())
            .await
            .expect("the observer heard the resignation")
            .unwrap();
        assert!(after.is_none(), "{after:?}");

        // One name, one kind, on a cluster too.
        let _held = a.mutex(name.as_str()).unwrap().lock().await.unwrap();
        match b.semaphore(name.as_str(), 2).unwrap().try_acquire(1).await {
            Err(Error::Conflict { .. }) => {}
            other => panic!(
                "a semaphore on a held mutex's name: {:?}",
                other.map(|g| g.is_some())
            ),
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_follows_a_killed_master_and_a_waiter_rides_it_out() {
    logs();
    let cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    let url = cluster_url(&cluster, "");
    let locks = connect(&url).await;
    let other = connect(&url).await;
    let name = "failover/held";
    let slot = cluster.slot_of(name).await.unwrap();
    let master = cluster.master_of(slot).await.unwrap();
    let holder = locks.mutex(name).unwrap().lock().await.unwrap();
    let token = holder.fencing_token();
    let waiter = other.mutex(name).unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    eventually(PROMPT, "the waiter queued", || async {
        locks.state(name).await.unwrap().waiters == Some(1)
    })
    .await;

    cluster.kill_master(master).await.expect("kill the master");
    let promoted = cluster.master_of(slot).await.unwrap();
    assert_ne!(promoted, master);
    // The holder gives the lock back (if the failover kept it) or has lost it; either way the
    // waiter, which rode out the failover, gets it.
    let _ = holder.release().await;
    let granted = tokio::time::timeout(FOLLOW, waiting)
        .await
        .expect("the waiter was granted after the failover")
        .unwrap()
        .expect("the waiter's wait rode out the failover");
    assert!(granted.fencing_token() > token);
    assert!(matches!(
        cluster.nodes()[promoted]
            .cmd(&["EXISTS", name])
            .await
            .unwrap(),
        Reply::Int(1)
    ));
    granted.release().await.unwrap();

    // New acquisitions on that slot go to the promoted master.
    let guard = lock_eventually(&locks, name, FOLLOW).await;
    assert!(guard.fencing_token() > token);
    guard.release().await.unwrap();
    locks.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_is_checked_on_every_shard() {
    logs();
    let cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    // WAIT gets 1.5 s: six servers on a loaded 2-core machine can take longer than the
    // default (half the 500 ms request timeout) to acknowledge.
    let locks = connect(&cluster_url(
        &cluster,
        "&min_replicas=1&request_timeout=2s&min_replicas_timeout=1500ms",
    ))
    .await;
    for name in one_name_per_master(&cluster, "acked").await {
        let guard = locks.mutex(name.as_str()).unwrap().lock().await.unwrap();
        guard.release().await.unwrap();
    }
    // Each master has one replica: two cannot acknowledge.
    match RedisConfig::from_url(&cluster_url(&cluster, "&min_replicas=2"))
        .unwrap()
        .connect()
        .await
    {
        Err(Error::InvalidArgument { what, problem }) => {
            assert_eq!(what, "min_replicas");
            assert!(problem.contains("1 connected replica"), "{problem}");
        }
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_setups_are_typed_errors() {
    logs();
    // A cluster URL at a server without cluster support.
    let plain = testkit::redis::Redis::start().await.expect("start redis");
    let url = format!("redis+cluster://{}?connect_timeout=2s", plain.addr());
    match RedisConfig::from_url(&url).unwrap().connect().await {
        Err(Error::InvalidArgument { what, problem }) => {
            assert!(what.contains("redis+cluster"), "{what}");
            assert!(problem.contains("not a Redis Cluster node"), "{problem}");
            assert!(problem.contains("redis://"), "{problem}");
        }
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
    // No node reachable: a typed error within the connect timeout, not a hang.
    let (p1, p2) = (testkit::free_port(), testkit::free_port());
    let url = format!("redis+cluster://127.0.0.1:{p1},127.0.0.1:{p2}?connect_timeout=1s");
    let connecting = RedisConfig::from_url(&url).unwrap().connect();
    match tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("connect hung")
    {
        Err(Error::Connection { message, .. }) => {
            assert!(message.contains("no cluster node answered"), "{message}")
        }
        other => panic!("expected Connection, got {:?}", other.map(|_| ())),
    }
    // A plain redis:// URL at one cluster node: refused at connect, saying to use
    // redis+cluster:// (a plain connection would reach only that node's slots).
    let cluster = RedisCluster::start().await.expect("start a Redis Cluster");
    let node = cluster.nodes()[0].addr();
    let url = format!("redis://{node}?connect_timeout=2s");
    match RedisConfig::from_url(&url).unwrap().connect().await {
        Err(Error::InvalidArgument { problem, .. }) => {
            assert!(
                problem.contains(&format!("redis+cluster://{node}")),
                "{problem}"
            )
        }
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
}
