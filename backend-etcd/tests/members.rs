//! A member that dies must not keep failing requests: once the backend has noticed it is down,
//! every request goes to the members that answer (etcd-client's balancer alone keeps choosing
//! a dead member, so about one request in three failed, and keep-alives failing in a row lost
//! leases while two members of three were fine).

use std::time::Duration;

use testkit::etcd::EtcdCluster;
use tokio::time::Instant;
use tumbler_core::{LockBackend, LockName};
use tumbler_etcd::EtcdConfig;

/// How many requests in a row must meet no failure.
const CLEAN_RUN: usize = 30;
/// How long the backend may take to find a clean run after the kill.
const DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_member_gets_no_requests() {
    let cluster = EtcdCluster::start(3)
        .await
        .expect("start a 3-member cluster");
    let url = format!("etcd://{}?ttl=3s&timeout=2s", cluster.hosts());
    let backend = tumbler_core::share(
        EtcdConfig::from_url(&url)
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    );
    let name = LockName::new("members/held").expect("name");
    let guard = backend
        .mutex(&name)
        .expect("mutex")
        .lock()
        .await
        .expect("lock");

    // Kill a member that is not the leader: no election, so nothing but the dead member
    // itself can make a request fail.
    let leader = cluster.leader().await.expect("leader");
    let victim = (leader + 1) % 3;
    cluster.members()[victim].kill().await;

    // Every failed request reports the connection Suspended (and the next answer
    // Reconnected): count the changes while issuing requests.
    let mut events = backend.connection_events();
    let started = Instant::now();
    let mut clean = 0;
    let mut requests = 0;
    while clean < CLEAN_RUN {
        assert!(
            started.elapsed() < DEADLINE,
            "{requests} requests in {DEADLINE:?} after a member died, never {CLEAN_RUN} in a \
             row without a failure: requests still go to the dead member"
        );
        backend.state(&name).await.expect("state");
        requests += 1;
        if drain(&mut events).await > 0 {
            clean = 0;
        } else {
            clean += 1;
        }
    }
    assert!(
        guard.lost_reason().is_none(),
        "the hold was lost while two members of three answered: {:?}",
        guard.lost_reason()
    );
    guard.release().await.expect("release");
}

/// Takes every event already emitted; returns how many there were.
async fn drain(events: &mut tumbler_core::ConnectionEvents) -> usize {
    let mut seen = 0;
    // A zero timeout polls the stream once: an event already there is taken, none waits.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {
        seen += 1;
    }
    seen
}
