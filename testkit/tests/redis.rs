//! Redis servers: real requests, credentials, many instances, pause/resume, restart, kill.

use std::time::Duration;

use testkit::redis::{Redis, RedisOptions};
use testkit::resp::{Reply, RespConn};

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

#[tokio::test]
async fn serves_set_and_get() {
    let r = Redis::start().await.expect("start redis");
    assert_eq!(r.cmd(&["SET", "k", "v"]).await.expect("SET"), ok());
    assert_eq!(r.cmd(&["GET", "k"]).await.expect("GET"), bulk("v"));
    assert_eq!(r.url(), format!("redis://127.0.0.1:{}", r.port()));
    assert_eq!(r.addr().port(), r.port());
    assert!(r.pid().is_some());
}

#[tokio::test]
async fn requirepass_is_enforced_and_in_the_url() {
    let r = Redis::start_with(RedisOptions {
        password: Some("p@ss word".into()),
        ..Default::default()
    })
    .await
    .expect("start redis with a password");
    let mut anonymous = RespConn::connect(r.addr()).await.expect("connect");
    match anonymous.cmd(&["GET", "k"]).await.expect("GET") {
        Reply::Error(e) => assert!(e.starts_with("NOAUTH"), "{e}"),
        other => panic!("GET without AUTH answered {other:?}"),
    }
    assert_eq!(r.cmd(&["SET", "k", "v"]).await.expect("SET"), ok());
    assert_eq!(
        r.url(),
        format!("redis://:p%40ss%20word@127.0.0.1:{}", r.port())
    );
}

#[tokio::test]
async fn acl_user_can_log_in() {
    let r = Redis::start_with(RedisOptions {
        acl_user: Some(("alice".into(), "wonder".into())),
        ..Default::default()
    })
    .await
    .expect("start redis with an ACL user");
    let mut c = RespConn::connect(r.addr()).await.expect("connect");
    match c.cmd(&["AUTH", "alice", "wrong"]).await.expect("AUTH") {
        Reply::Error(e) => assert!(e.contains("WRONGPASS"), "{e}"),
        other => panic!("AUTH with a wrong password answered {other:?}"),
    }
    assert_eq!(
        r.cmd(&["ACL", "WHOAMI"]).await.expect("WHOAMI"),
        bulk("alice")
    );
    assert_eq!(
        r.url(),
        format!("redis://alice:wonder@127.0.0.1:{}", r.port())
    );
}

#[tokio::test]
async fn many_instances_are_independent() {
    let rs = Redis::start_many(3).await.expect("start 3 redis");
    assert_eq!(rs.len(), 3);
    let mut ports: Vec<u16> = rs.iter().map(Redis::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "ports must differ: {ports:?}");
    assert_eq!(rs[0].cmd(&["SET", "k", "0"]).await.expect("SET"), ok());
    assert_eq!(
        rs[1].cmd(&["GET", "k"]).await.expect("GET"),
        Reply::Bulk(None)
    );
}

#[tokio::test]
async fn paused_redis_stops_answering_until_resumed() {
    let r = Redis::start().await.expect("start redis");
    let mut c = r.connect().await.expect("connect");
    assert_eq!(
        c.cmd(&["PING"]).await.expect("PING"),
        Reply::Simple("PONG".into())
    );

    r.pause().expect("pause");
    c.send(&["PING"]).await.expect("send PING");
    let while_paused = tokio::time::timeout(Duration::from_millis(500), c.read_reply()).await;
    assert!(
        while_paused.is_err(),
        "a paused redis answered: {while_paused:?}"
    );

    r.resume().expect("resume");
    let after = tokio::time::timeout(Duration::from_secs(5), c.read_reply())
        .await
        .expect("an answer after resume")
        .expect("a reply");
    assert_eq!(after, Reply::Simple("PONG".into()));
}

#[tokio::test]
async fn restart_keeps_the_port_and_empties_the_data() {
    let r = Redis::start().await.expect("start redis");
    let (port, pid) = (r.port(), r.pid());
    assert_eq!(r.cmd(&["SET", "k", "v"]).await.expect("SET"), ok());
    r.restart().await.expect("restart");
    assert_eq!(r.port(), port);
    assert_ne!(r.pid(), pid, "a restart runs a new process");
    assert_eq!(r.cmd(&["GET", "k"]).await.expect("GET"), Reply::Bulk(None));
}

#[tokio::test]
async fn killed_redis_refuses_connections_until_restarted() {
    let r = Redis::start().await.expect("start redis");
    r.kill().await;
    assert_eq!(r.pid(), None);
    let e = RespConn::connect(r.addr())
        .await
        .expect_err("connect to a killed redis");
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(r.pause().is_err(), "pausing a killed server must fail");
    r.restart().await.expect("restart after kill");
    r.ping().await.expect("PING after restart");
}

#[tokio::test]
async fn a_server_that_cannot_start_reports_its_log() {
    let e = Redis::start_with(RedisOptions {
        extra_args: vec!["--no-such-directive".into(), "1".into()],
        ..Default::default()
    })
    .await
    .expect_err("redis with a bad directive must not start");
    let msg = e.to_string();
    assert!(matches!(e, testkit::Error::Exited { .. }), "{msg}");
    assert!(msg.contains("no-such-directive"), "log tail missing: {msg}");
}

/// A cluster node's bus listens on a port the kit handed out (not the client port + 10000,
/// which nobody reserved and another test process may hold: a CI failure).
#[tokio::test]
async fn a_cluster_nodes_bus_port_comes_from_the_allocator() {
    let r = Redis::start_with(RedisOptions {
        cluster: true,
        ..Default::default()
    })
    .await
    .expect("start a cluster node");
    let bus = r.cluster_bus_port().expect("a cluster node has a bus port");
    assert_ne!(u32::from(bus), u32::from(r.port()) + 10_000);
    let reply = r
        .cmd(&["CONFIG", "GET", "cluster-port"])
        .await
        .expect("CONFIG GET");
    let Reply::Array(Some(items)) = reply else {
        panic!("CONFIG GET cluster-port: {reply:?}")
    };
    assert_eq!(
        items.get(1).and_then(Reply::as_str),
        Some(bus.to_string().as_str())
    );
    std::net::TcpListener::bind(("127.0.0.1", bus))
        .expect_err("the node's bus listens on the port it was given");
    assert!(Redis::start()
        .await
        .expect("plain")
        .cluster_bus_port()
        .is_none());
}

/// The server's `TIME` in milliseconds.
async fn server_ms(r: &Redis) -> u64 {
    match r.cmd(&["TIME"]).await.expect("TIME") {
        Reply::Array(Some(parts)) => {
            let num = |i: usize| match &parts[i] {
                Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).parse::<u64>().expect("number"),
                other => panic!("TIME part {i} is {other:?}"),
            };
            num(0) * 1000 + num(1) / 1000
        }
        other => panic!("TIME answered {other:?}"),
    }
}

#[tokio::test]
async fn a_wall_clock_jump_expires_keys_at_once() {
    use std::sync::Arc;
    use testkit::clock::{MovableClock, WallClock};
    let clock = Arc::new(WallClock::new().expect("wall clock"));
    let r = Redis::start_with(RedisOptions {
        wall_clock: Some(clock.clone()),
        ..Default::default()
    })
    .await
    .expect("start redis on a movable clock");
    let before = server_ms(&r).await;
    assert_eq!(
        r.cmd(&["SET", "k", "v", "PX", "60000"]).await.expect("SET"),
        ok()
    );
    clock.jump(Duration::from_secs(120)).expect("jump");
    assert_eq!(clock.offset(), Duration::from_secs(120));
    let after = server_ms(&r).await;
    assert!(
        after >= before + 120_000,
        "the server's clock did not move: {before} then {after}"
    );
    assert_eq!(
        r.cmd(&["GET", "k"]).await.expect("GET"),
        Reply::Bulk(None),
        "a key with 60 s to live survived a 120 s jump"
    );
    // The server still works on the moved clock, restarts included.
    r.restart().await.expect("restart");
    assert!(server_ms(&r).await >= before + 120_000);
}
