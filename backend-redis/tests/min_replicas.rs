//! `min_replicas=N` on a real Sentinel deployment (one master, two replicas): grants confirmed
//! with replicas up; a typed error (not a hang, not `Ok`) and an undone grant with the
//! replicas paused or killed; a renewal the replicas do not confirm fires `lost()`; more
//! replicas asked for than the master has is a connect error.

mod common;

use common::{fresh_sentinel, logs, sentinel_backend, sentinel_url, PROMPT};
use testkit::redis_sentinel::RedisSentinel;
use testkit::resp::Reply;
use tumbler_core::{Error, LostReason, SharedBackend};
use tumbler_redis::{RedisConfig, ReplicasMissing};

/// The replicas' shortfall under an acquisition's error.
fn shortfall(error: &Error) -> &ReplicasMissing {
    let Error::Connection { source, .. } = error else {
        panic!("expected a Connection error, got {error:?}");
    };
    source
        .as_deref()
        .and_then(|s| s.downcast_ref::<ReplicasMissing>())
        .unwrap_or_else(|| panic!("no ReplicasMissing under {error:?}"))
}

async fn exists(deployment: &RedisSentinel, key: &str) -> bool {
    let master = &deployment.servers()[deployment.master().await.unwrap()];
    master.cmd(&["EXISTS", key]).await.unwrap() == Reply::Int(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_wait_for_replicas_and_fail_typed_without_them() {
    logs();
    let deployment = fresh_sentinel().await;
    let master = deployment.master().await.unwrap();
    let replicas: Vec<usize> = (0..3).filter(|i| *i != master).collect();
    let locks: SharedBackend =
        sentinel_backend(&sentinel_url(&deployment, "&min_replicas=1")).await;
    // Also on a redis:// URL to the master, with both replicas.
    let direct: SharedBackend = sentinel_backend(&format!(
        "{}?ttl=2s&min_replicas=2&min_replicas_timeout=400ms",
        deployment.servers()[master].url()
    ))
    .await;

    // Replicas up: granted, on the replicas too, and a waiter handed the lock is confirmed.
    let guard = locks.mutex("wait/up").unwrap().lock().await.unwrap();
    let waiter = direct.mutex("wait/up").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    common::eventually(PROMPT, "the waiter queued", || async {
        locks.state("wait/up").await.unwrap().waiters == Some(1)
    })
    .await;
    guard.release().await.unwrap();
    let handed = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("the waiter was granted")
        .unwrap()
        .unwrap();
    for r in &replicas {
        let on_replica = deployment.servers()[*r]
            .cmd(&["EXISTS", "wait/up"])
            .await
            .unwrap();
        assert_eq!(on_replica, Reply::Int(1), "replica {r} lacks the hold");
    }
    handed.release().await.unwrap();
    let sem = locks.semaphore("wait/sem", 2).unwrap().acquire(1).await;
    sem.unwrap().release().await.unwrap();

    // Replicas paused: still connected, but WAIT cannot be satisfied.
    for r in &replicas {
        deployment.servers()[*r].pause().unwrap();
    }
    let outcome = tokio::time::timeout(PROMPT, locks.mutex("wait/paused").unwrap().try_lock())
        .await
        .expect("the acquisition hung");
    let error = match outcome {
        Ok(got) => panic!("granted without replicas: {:?}", got.is_some()),
        Err(error) => error,
    };
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("min_replicas=1"), "{error}");
    let missing = shortfall(&error);
    assert_eq!((missing.wanted, missing.acknowledged), (1, 0), "{missing}");
    // The grant was undone: the lock is free on the master.
    assert!(
        !exists(&deployment, "wait/paused").await,
        "the grant was left held"
    );
    let sem = tokio::time::timeout(PROMPT, locks.semaphore("wait/sem", 2).unwrap().acquire(1))
        .await
        .expect("the semaphore acquisition hung");
    match sem {
        Ok(_) => panic!("permits granted without replicas"),
        Err(error) => assert_eq!(shortfall(&error).wanted, 1),
    }
    for r in &replicas {
        deployment.servers()[*r].resume().unwrap();
    }

    // Back up: granted again.
    let guard = tokio::time::timeout(PROMPT, locks.mutex("wait/back").unwrap().lock())
        .await
        .expect("granted again")
        .unwrap();
    guard.release().await.unwrap();

    // Replicas killed: the master has none; a typed error again.
    for r in &replicas {
        deployment.servers()[*r].kill().await;
    }
    let outcome = tokio::time::timeout(PROMPT, locks.mutex("wait/killed").unwrap().try_lock())
        .await
        .expect("the acquisition hung");
    let Err(error) = outcome else {
        panic!("granted without replicas");
    };
    assert!(shortfall(&error).acknowledged < 1, "{error}");
    assert!(
        !exists(&deployment, "wait/killed").await,
        "the grant was left held"
    );
    locks.shutdown().await.unwrap();
    direct.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_the_replicas_do_not_confirm_fires_lost() {
    logs();
    let deployment = fresh_sentinel().await;
    let master = deployment.master().await.unwrap();
    let locks: SharedBackend =
        sentinel_backend(&sentinel_url(&deployment, "&min_replicas=2")).await;
    let guard = locks.mutex("renew").unwrap().lock().await.unwrap();
    for r in (0..3).filter(|i| *i != master) {
        deployment.servers()[r].pause().unwrap();
    }
    // Renewals fail from now on: lost() fires by the end of the validity (2 s TTL).
    let reason = tokio::time::timeout(PROMPT, guard.lost())
        .await
        .expect("lost() fired");
    assert_eq!(reason, LostReason::RenewalFailed);
    for r in (0..3).filter(|i| *i != master) {
        deployment.servers()[r].resume().unwrap();
    }
    drop(guard);
    locks.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_than_the_master_has_is_a_connect_error() {
    logs();
    let deployment = RedisSentinel::start().await.expect("start Redis Sentinel");
    let master = deployment.master().await.unwrap();
    for url in [
        sentinel_url(&deployment, "&min_replicas=5"),
        format!("{}?min_replicas=5", deployment.servers()[master].url()),
    ] {
        match RedisConfig::from_url(&url).unwrap().connect().await {
            Err(Error::InvalidArgument { what, problem }) => {
                assert_eq!(what, "min_replicas");
                assert!(problem.contains("has 2 connected replica"), "{problem}");
            }
            other => panic!(
                "{url}: expected InvalidArgument, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // A replica cannot confirm writes to replicas.
    let replica = (0..3).find(|i| *i != master).unwrap();
    let url = format!("{}?min_replicas=1", deployment.servers()[replica].url());
    match RedisConfig::from_url(&url).unwrap().connect().await {
        Err(Error::InvalidArgument { what, problem }) => {
            assert_eq!(what, "min_replicas");
            assert!(problem.contains("is a replica"), "{problem}");
        }
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
}
