//! ZooKeeper: standalone and a 3-node ensemble, with real client writes.

use std::time::{Duration, Instant};

use testkit::zk::{ZkEnsemble, ZooKeeper};
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions};

fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

async fn client(connect: &str) -> Client {
    Client::connector()
        .with_session_timeout(Duration::from_secs(6))
        .connect(connect)
        .await
        .unwrap_or_else(|e| panic!("connect to zookeeper {connect}: {e}"))
}

/// Connects and creates `path`, retrying while the ensemble is still settling (a member that has
/// not synced with the new leader yet drops the connection). Polls with a deadline.
async fn create_eventually(connect: &str, path: &str, data: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let c = Client::connector()
                .with_session_timeout(Duration::from_secs(6))
                .connect(connect)
                .await?;
            c.create(path, data, &persistent()).await.map(|_| ())
        };
        match attempt.await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("create {path} on {connect}: {e}; retrying")
            }
            Err(e) => panic!("create {path} on {connect}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn standalone_serves_writes_keeps_data_and_pauses() {
    let zk = ZooKeeper::start().await.expect("start zookeeper");
    assert_eq!(zk.mode().await.expect("mode"), "standalone");
    assert_eq!(zk.connect_string(), format!("127.0.0.1:{}", zk.port()));

    let c = client(&zk.connect_string()).await;
    c.create("/testkit", b"hello", &persistent())
        .await
        .expect("create");
    drop(c);

    let pid = zk.pid();
    zk.restart().await.expect("restart");
    assert_ne!(zk.pid(), pid);
    let c = client(&zk.connect_string()).await;
    let (data, _) = c.get_data("/testkit").await.expect("get after restart");
    assert_eq!(data, b"hello", "data survives a restart");
    drop(c);

    zk.pause().expect("pause");
    let paused = tokio::time::timeout(Duration::from_millis(500), zk.srvr()).await;
    assert!(
        !matches!(paused, Ok(Ok(_))),
        "a paused zookeeper answered srvr: {paused:?}"
    );
    zk.resume().expect("resume");
    assert!(zk
        .srvr()
        .await
        .expect("srvr after resume")
        .contains("Mode: standalone"));

    zk.kill().await;
    assert_eq!(zk.pid(), None);
    assert!(zk.srvr().await.is_err(), "a killed zookeeper answered");
}

#[tokio::test]
async fn ensemble_keeps_serving_after_leader_kill_and_node_rejoins() {
    let ens = ZkEnsemble::start(3).await.expect("start ensemble");
    assert_eq!(ens.len(), 3);
    let mut modes = Vec::new();
    for n in ens.nodes() {
        modes.push(n.mode().await.expect("mode"));
    }
    modes.sort();
    assert_eq!(modes, ["follower", "follower", "leader"]);
    assert_eq!(ens.connect_string().split(',').count(), 3);

    let c = client(&ens.connect_string()).await;
    c.create("/before", b"1", &persistent())
        .await
        .expect("create before");
    drop(c);

    let old = ens.kill_leader().await.expect("kill leader");
    assert_eq!(ens.node(old).pid(), None);
    let new = ens.leader().await.expect("a new leader");
    assert_ne!(new, old);

    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != old)
        .map(|i| ens.node(i).connect_string())
        .collect();
    create_eventually(&survivors.join(","), "/after", b"2").await;

    ens.restart(old).await.expect("restart old leader");
    assert_eq!(ens.node(old).mode().await.expect("mode"), "follower");
    let c = client(&ens.node(old).connect_string()).await;
    let (data, _) = c
        .get_data("/after")
        .await
        .expect("read on the rejoined node");
    assert_eq!(
        data, b"2",
        "the rejoined node has the write made while it was down"
    );
    let (data, _) = c
        .get_data("/before")
        .await
        .expect("read on the rejoined node");
    assert_eq!(data, b"1");
}
