//! Connecting: passwords and ACL users, wrong credentials, missing permissions, unreachable
//! servers and bad settings all give typed errors that say what to fix.

mod common;

use std::time::{Duration, Instant};

use common::{connect, fresh_redis};
use testkit::redis::{Redis, RedisOptions};
use tumbler_core::Error;
use tumbler_redis::{RedisConfig, RedisNode};

async fn connect_err(url: &str) -> Error {
    match tumbler_redis::connect_url(url).await {
        Err(e) => e,
        Ok(_) => panic!("connecting to {url} succeeded"),
    }
}

#[tokio::test]
async fn password_and_acl_user() {
    let redis = Redis::start_with(RedisOptions {
        password: Some("s3cret pass".into()),
        acl_user: Some(("locker".into(), "w0rd".into())),
        ..Default::default()
    })
    .await
    .unwrap();
    let port = redis.port();
    for url in [
        format!("redis://:s3cret%20pass@127.0.0.1:{port}"),
        format!("redis://locker:w0rd@127.0.0.1:{port}"),
    ] {
        let locks = connect(&url).await;
        let guard = locks
            .mutex("auth/ok")
            .unwrap()
            .lock_timeout(common::PROMPT)
            .await
            .unwrap();
        guard
            .expect("locked with credentials")
            .release()
            .await
            .unwrap();
    }
    for (url, why) in [
        (format!("redis://:wrong@127.0.0.1:{port}"), "wrong password"),
        (
            format!("redis://locker:wrong@127.0.0.1:{port}"),
            "wrong user password",
        ),
        (
            format!("redis://nobody:w0rd@127.0.0.1:{port}"),
            "unknown user",
        ),
        (format!("redis://127.0.0.1:{port}"), "no credentials"),
    ] {
        match connect_err(&url).await {
            Error::Auth { message, addr, .. } => {
                assert!(!addr.contains("w0rd") && !addr.contains("s3cret"), "{addr}");
                assert!(!message.is_empty(), "{why}");
            }
            other => panic!("{why}: expected an Auth error, got {other}"),
        }
    }
}

#[tokio::test]
async fn a_user_without_script_rights_is_told_what_it_needs() {
    let redis = fresh_redis().await;
    let setuser = [
        "ACL",
        "SETUSER",
        "weak",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-@scripting",
    ];
    assert_eq!(redis.cmd(&setuser).await.unwrap().as_str(), Some("OK"));
    let url = format!("redis://weak:pw@127.0.0.1:{}", redis.port());
    let locks = tumbler_redis::connect_url(&url).await.unwrap();
    match locks.mutex("auth/weak").unwrap().try_lock().await {
        Err(Error::Auth { message, .. }) => assert!(message.contains("+@scripting"), "{message}"),
        other => panic!("a user without scripting got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_a_connection_error() {
    let port = testkit::free_port();
    let started = Instant::now();
    match connect_err(&format!("redis://127.0.0.1:{port}")).await {
        Error::Connection { addr, .. } => assert_eq!(addr, format!("redis://127.0.0.1:{port}")),
        other => panic!("expected a connection error, got {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bad_settings_are_invalid_arguments() {
    for (config, what) in [
        (
            RedisConfig::single(RedisNode::new("127.0.0.1", 6379)).ttl(Duration::ZERO),
            "ttl",
        ),
        (
            RedisConfig::single(RedisNode::new("127.0.0.1", 6379))
                .ttl(Duration::from_secs(1 << 40)),
            "ttl",
        ),
        (
            RedisConfig::single(RedisNode::new("127.0.0.1", 6379)).drift(Duration::from_secs(20)),
            "drift",
        ),
        (RedisConfig::redlock(vec![]), "redis servers"),
        (
            RedisConfig::single(RedisNode::new("127.0.0.1", 6379)).tls_ca_file("/nonexistent.pem"),
            "tls_ca",
        ),
    ] {
        match config.connect().await {
            Err(Error::InvalidArgument { what: w, problem }) => {
                assert!(w.contains(what), "{w}: {problem}")
            }
            Err(other) => panic!("{what}: expected InvalidArgument, got {other}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
    match connect_err("redis://127.0.0.1:6379?ttl=1s&colour=blue").await {
        Error::InvalidArgument { what, .. } => assert!(what.contains("colour")),
        other => panic!("unknown parameter gave {other}"),
    }
}
