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

/// An isolated member stops serving (it lost the quorum) while the majority keeps a leader and
/// takes writes; once its links are back it follows again and has those writes.
#[tokio::test]
async fn isolated_member_stops_serving_and_rejoins() {
    let ens = ZkEnsemble::start_partitionable(3)
        .await
        .expect("start a partitionable ensemble");
    let leader = ens.leader().await.expect("leader");
    let lonely = (leader + 1) % 3;
    ens.isolate(lonely).expect("isolate a follower");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ens.node(lonely).mode().await.is_ok_and(|m| m == "follower") {
        assert!(
            Instant::now() < deadline,
            "the isolated member kept following"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let majority: Vec<String> = (0..3)
        .filter(|i| *i != lonely)
        .map(|i| ens.node(i).connect_string())
        .collect();
    create_eventually(&majority.join(","), "/while-isolated", b"3").await;

    ens.rejoin(lonely).expect("rejoin");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ens.node(lonely).mode().await.is_ok_and(|m| m == "follower") {
        assert!(
            Instant::now() < deadline,
            "the member did not follow again after its links came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = client(&ens.node(lonely).connect_string()).await;
    let (data, _) = c
        .get_data("/while-isolated")
        .await
        .expect("read on the rejoined member");
    assert_eq!(data, b"3");
    assert!(
        ZkEnsemble::start(3)
            .await
            .expect("plain")
            .isolate(0)
            .is_err(),
        "a plain ensemble refuses isolate with a typed error"
    );
}

/// A server clock moved forward leaps both of the server's clocks at once: its elapsed time
/// (`mntr`'s uptime, which session expiry is measured by) and its wall clock (a node's creation
/// time). Whether a jump then expires a session is a race the test cannot decide: a ping that
/// reaches the server before its session tracker's next tick renews the session on the new
/// clock (the lab measures that race; this test checks the clock itself).
#[tokio::test]
async fn clock_jump_moves_the_servers_clocks() {
    let clock = std::sync::Arc::new(testkit::clock::FakeClock::new().expect("libfaketime"));
    let zk = ZooKeeper::start_with(testkit::zk::ZkOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await
    .expect("start zookeeper on a fake clock");
    let c = client(&zk.connect_string()).await;
    c.create("/before", b"1", &persistent())
        .await
        .expect("create a node before the jump");
    let uptime_before = uptime_ms(&zk).await;
    let jump = Duration::from_secs(20);
    clock.jump(jump).expect("jump");
    assert_eq!(clock.offset(), jump);
    let uptime_after = uptime_ms(&zk).await;
    // The jump may expire the first session (see above), so the rest uses a session opened on
    // the new clock.
    drop(c);
    let c = client(&zk.connect_string()).await;
    c.create("/after", b"1", &persistent())
        .await
        .expect("create a node after the jump");
    let ctime = |path: &'static str| {
        let c = &c;
        async move {
            c.check_stat(path)
                .await
                .expect("stat")
                .unwrap_or_else(|| panic!("{path} exists"))
                .ctime
        }
    };
    let jump_ms = jump.as_millis() as i64;
    assert!(
        uptime_after - uptime_before >= jump_ms,
        "the server's elapsed time moved {} ms across a {jump_ms} ms jump",
        uptime_after - uptime_before
    );
    let (before, after) = (ctime("/before").await, ctime("/after").await);
    assert!(
        after - before >= jump_ms,
        "the server's wall clock moved {} ms across a {jump_ms} ms jump",
        after - before
    );
}

/// The server's `zk_uptime` from `mntr`, in milliseconds.
async fn uptime_ms(zk: &ZooKeeper) -> i64 {
    let mntr = zk.four_letter("mntr").await.expect("mntr");
    mntr.lines()
        .find_map(|line| line.strip_prefix("zk_uptime"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("mntr has no zk_uptime: {mntr}"))
}
