//! etcd: standalone, with authentication, and a 3-member cluster.

use std::time::Duration;

use serde_json::json;
use testkit::etcd::{Etcd, EtcdCluster, EtcdOptions};

#[tokio::test]
async fn standalone_serves_writes_keeps_data_and_pauses() {
    let e = Etcd::start().await.expect("start etcd");
    assert_eq!(e.endpoint(), format!("http://127.0.0.1:{}", e.port()));
    assert!(e.healthy().await.expect("health"));
    let rev = e.put("testkit/k", "v1").await.expect("put");
    assert!(rev > 1, "revision {rev}");
    assert_eq!(
        e.get("testkit/k").await.expect("get").as_deref(),
        Some("v1")
    );
    assert!(e.is_leader().await.expect("status"), "a lone member leads");

    let pid = e.pid();
    e.restart().await.expect("restart");
    assert_ne!(e.pid(), pid);
    assert_eq!(
        e.get("testkit/k")
            .await
            .expect("get after restart")
            .as_deref(),
        Some("v1"),
        "data survives a restart"
    );

    e.pause().expect("pause");
    let paused = tokio::time::timeout(Duration::from_millis(500), e.get("testkit/k")).await;
    assert!(
        !matches!(paused, Ok(Ok(_))),
        "a paused etcd answered: {paused:?}"
    );
    e.resume().expect("resume");
    assert_eq!(
        e.get("testkit/k").await.expect("get").as_deref(),
        Some("v1")
    );
}

#[tokio::test]
async fn auth_requires_login_and_the_user_can_read_and_write() {
    let e = Etcd::start_with(EtcdOptions {
        auth: Some(("alice".into(), "wonder".into())),
        ..Default::default()
    })
    .await
    .expect("start etcd with auth");
    assert_eq!(e.credentials(), Some(("alice", "wonder")));

    // Helpers log in as alice.
    e.put("any/key", "v").await.expect("put as alice");
    assert_eq!(
        e.get("any/key").await.expect("get as alice").as_deref(),
        Some("v")
    );

    // Without a token the gateway refuses; with a wrong password login fails.
    let err = raw_put_without_token(&e).await;
    assert!(err.contains("user name is empty"), "{err}");
    let wrong = e.authenticate("alice", "nope").await;
    assert!(wrong.is_err(), "a wrong password logged in");
    e.authenticate("root", testkit::etcd::ROOT_PASSWORD)
        .await
        .expect("root can log in");
}

/// A put through the gateway without an Authorization header; returns the error text.
async fn raw_put_without_token(e: &Etcd) -> String {
    let body = json!({"key": "YQ==", "value": "Yg=="}).to_string();
    let req = format!(
        "POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(e.addr())
        .await
        .expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn cluster_keeps_serving_after_leader_kill_and_member_rejoins() {
    let c = EtcdCluster::start(3).await.expect("start cluster");
    assert_eq!(c.endpoints().len(), 3);
    c.put("before", "1").await.expect("put before");

    let old = c.kill_leader().await.expect("kill leader");
    assert_eq!(c.member(old).pid(), None);
    let new = c.leader().await.expect("a new leader");
    assert_ne!(new, old);
    c.member(new)
        .put("after", "2")
        .await
        .expect("put after the leader died");

    c.restart(old).await.expect("restart old leader");
    let back = c.member(old);
    assert!(back.healthy().await.expect("health"));
    assert!(!back.is_leader().await.expect("status") || c.leader().await.expect("leader") == old);
    assert_eq!(back.get("after").await.expect("get").as_deref(), Some("2"));
    assert_eq!(back.get("before").await.expect("get").as_deref(), Some("1"));
    back.put("rejoined", "3")
        .await
        .expect("put through the rejoined member");
}

#[tokio::test]
async fn cluster_with_auth_applies_it_to_every_member() {
    let c = EtcdCluster::start_with(
        1,
        EtcdOptions {
            auth: Some(("bob".into(), "builder".into())),
            ..Default::default()
        },
    )
    .await
    .expect("start a cluster with auth");
    assert_eq!(c.member(0).credentials(), Some(("bob", "builder")));
    c.put("k", "v").await.expect("put as bob");
    let err = raw_put_without_token(c.member(0)).await;
    assert!(err.contains("user name is empty"), "{err}");
}

/// The threads of a process that are not stopped (`/proc/PID/task/*/stat`).
fn running_threads(pid: u32) -> Vec<String> {
    let mut running = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read the tasks") {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_ascii_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        if !matches!(state.as_str(), "T" | "t" | "Z" | "X") {
            running.push(format!("{:?}: {state}", task.file_name()));
        }
    }
    running
}

/// `pause()` returns only once every thread of the server is stopped, also while the server is
/// busy serving requests (kill(2) only queues SIGSTOP; a thread on another CPU runs on until it
/// takes the signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_returns_with_every_thread_stopped() {
    let e = std::sync::Arc::new(Etcd::start().await.expect("start etcd"));
    let pid = e.pid().expect("etcd runs");
    let load = {
        let e = e.clone();
        tokio::spawn(async move {
            loop {
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), e.put("load/k", "v")).await;
            }
        })
    };
    for round in 0..40 {
        e.pause().expect("pause");
        let running = running_threads(pid);
        e.resume().expect("resume");
        assert!(
            running.is_empty(),
            "round {round}: pause() returned while threads still ran: {running:?}"
        );
        tokio::time::timeout(Duration::from_secs(5), e.put("testkit/after", "v"))
            .await
            .expect("etcd answers after resume")
            .expect("put after resume");
    }
    load.abort();
}

#[tokio::test]
async fn a_partitionable_cluster_cuts_one_member_off_and_lets_it_back() {
    let c = EtcdCluster::start_partitionable(3).await.expect("cluster");
    let leader = c.leader().await.expect("leader");
    let lonely = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.member(other)
        .put("before", "1")
        .await
        .expect("put before");
    c.isolate(lonely).expect("isolate");
    // The majority goes on without the cut-off member.
    c.member(other)
        .put("during", "2")
        .await
        .expect("put during");
    assert_eq!(
        c.member(leader).get("during").await.expect("get"),
        Some("2".into())
    );
    // The cut-off member hears nothing of it, and cannot write through the leader.
    let write =
        tokio::time::timeout(Duration::from_secs(2), c.member(lonely).put("cut", "3")).await;
    assert!(
        !matches!(write, Ok(Ok(_))),
        "a write through the cut-off member succeeded: {write:?}"
    );
    assert_eq!(
        c.member(lonely).get("during").await.ok().flatten(),
        None,
        "the cut-off member saw a write made during the partition"
    );
    c.rejoin(lonely).expect("rejoin");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if c.member(lonely).get("during").await.ok().flatten() == Some("2".into()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rejoined member did not catch up within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A cluster started without links refuses to cut.
    let plain = EtcdCluster::start(3).await.expect("plain cluster");
    assert!(plain.isolate(0).is_err());
}
