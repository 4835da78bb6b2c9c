//! Failures say what to fix. These tests change process-wide environment variables, so they
//! live alone in this file and run one after another inside a single test.

use testkit::etcd::Etcd;
use testkit::redis::Redis;
use testkit::zk::ZooKeeper;

#[tokio::test]
async fn missing_servers_and_servers_that_never_come_up_say_what_to_do() {
    // A missing binary names itself and scripts/setup.
    std::env::set_var("TESTKIT_REDIS_SERVER", "/nonexistent/redis-server");
    std::env::set_var("TESTKIT_ETCD", "/nonexistent/etcd");
    std::env::set_var("TESTKIT_JAVA", "/nonexistent/java");
    for (name, err) in [
        ("redis-server", Redis::start().await.expect_err("no redis")),
        ("etcd", Etcd::start().await.expect_err("no etcd")),
        ("java", ZooKeeper::start().await.expect_err("no java")),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, testkit::Error::NotInstalled { .. }), "{msg}");
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains("scripts/setup"), "{msg}");
    }
    std::env::remove_var("TESTKIT_ETCD");
    std::env::remove_var("TESTKIT_JAVA");

    // A server that runs but never answers: the error carries the tail of its log.
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("redis-server");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fake server: warming up forever'\nexec sleep 600\n",
    )
    .expect("write fake server");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::env::set_var("TESTKIT_REDIS_SERVER", &fake);
    std::env::set_var("TESTKIT_START_TIMEOUT_SECS", "1");
    let err = Redis::start()
        .await
        .expect_err("a server that never answers");
    std::env::remove_var("TESTKIT_REDIS_SERVER");
    std::env::remove_var("TESTKIT_START_TIMEOUT_SECS");
    let msg = err.to_string();
    assert!(matches!(err, testkit::Error::StartTimeout { .. }), "{msg}");
    assert!(
        msg.contains("warming up forever"),
        "log tail missing: {msg}"
    );
    assert!(
        msg.contains("last probe"),
        "the last probe failure is shown: {msg}"
    );

    // And the variables are honoured when they point at the real thing again.
    Redis::start().await.expect("redis starts again");
}
