//! Helpers shared by the backend's integration tests: a fresh server and clients of it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use testkit::redis::Redis;
use testkit::resp::Reply;
use tumbler_core::SharedBackend;
use tumbler_redis::{RedisBackend, RedisConfig};

/// The lock TTL the tests use.
pub const TTL: Duration = Duration::from_secs(2);

/// How long a test waits for something that should happen promptly.
pub const PROMPT: Duration = Duration::from_secs(10);

/// Starts a Redis server and declares it fresh (no restart delay for the first locks).
pub async fn fresh_redis() -> Redis {
    let redis = Redis::start().await.expect("start redis");
    let admin = connect_backend(&redis.url()).await;
    admin
        .declare_fresh_servers()
        .await
        .expect("declare the server fresh");
    redis
}

/// `url` with the test TTL and short timeouts.
pub fn with_test_params(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}ttl=2s&connect_timeout=1s")
}

/// A client of the server at `url` (test TTL).
pub async fn connect(url: &str) -> SharedBackend {
    connect_backend(url).await
}

/// The concrete backend of a client of the server at `url` (test TTL).
pub async fn connect_backend(url: &str) -> Arc<RedisBackend> {
    RedisConfig::from_url(&with_test_params(url))
        .expect("test URL")
        .connect_backend()
        .await
        .expect("connect to the test redis")
}

/// Waits until `check` holds, polling every 10 ms, for at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Installs a log subscriber once (RUST_LOG controls it).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A Sentinel URL of `deployment` with the test TTL and short timeouts, then `params`
/// (`&key=value…`).
pub fn sentinel_url(deployment: &testkit::redis_sentinel::RedisSentinel, params: &str) -> String {
    format!(
        "redis+sentinel://{}/{}?ttl=2s&connect_timeout=1s{params}",
        deployment.sentinel_hosts(),
        deployment.master_name()
    )
}

/// A client through the sentinels at `url` (taken as it is).
pub async fn sentinel_backend(url: &str) -> Arc<RedisBackend> {
    RedisConfig::from_url(url)
        .expect("sentinel URL")
        .connect_backend()
        .await
        .expect("connect through the sentinels")
}

/// A Sentinel deployment whose master counts as fresh (no restart delay for the first
/// grants).
pub async fn fresh_sentinel() -> testkit::redis_sentinel::RedisSentinel {
    let deployment = testkit::redis_sentinel::RedisSentinel::start()
        .await
        .expect("start Redis Sentinel");
    let admin = sentinel_backend(&sentinel_url(&deployment, "")).await;
    admin
        .declare_fresh_servers()
        .await
        .expect("declare the master fresh");
    deployment
}

/// Calls per command since the last `CONFIG RESETSTAT`, without this probe's own commands.
pub async fn command_calls(redis: &Redis) -> BTreeMap<String, u64> {
    let info = match redis.cmd(&["INFO", "commandstats"]).await.unwrap() {
        Reply::Bulk(Some(text)) => String::from_utf8(text).unwrap(),
        other => panic!("INFO answered {other:?}"),
    };
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let count = stats
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no call count in {line:?}"));
        calls.insert(name.to_owned(), count);
    }
    // The probe: CONFIG RESETSTAT, then this INFO on a connection of its own (its HELLO).
    for own in ["config|resetstat", "info", "hello"] {
        if let Some(n) = calls.get_mut(own) {
            *n -= 1;
        }
    }
    calls.retain(|_, n| *n > 0);
    calls
}

/// Zeroes the server's command counts.
pub async fn reset_stats(redis: &Redis) {
    redis.cmd(&["CONFIG", "RESETSTAT"]).await.unwrap();
}

/// The subscribed channels matching `pattern`.
pub async fn channels(redis: &Redis, pattern: &str) -> Vec<String> {
    match redis.cmd(&["PUBSUB", "CHANNELS", pattern]).await.unwrap() {
        Reply::Array(Some(items)) => items
            .iter()
            .map(|c| c.as_str().unwrap_or_default().to_owned())
            .collect(),
        other => panic!("PUBSUB CHANNELS answered {other:?}"),
    }
}

/// Asserts that `outcome` (a call's result, formatted with `{:?}`) is a `Conflict` naming `key`.
pub fn assert_conflict_naming(outcome: String, key: &str) {
    assert!(
        outcome.contains("Conflict") && outcome.contains(key),
        "expected a conflict naming {key}: {outcome}"
    )
}

/// Names under `base`, one served by each master of `cluster` (the slot decides the master).
pub async fn one_name_per_master(
    cluster: &testkit::redis_cluster::RedisCluster,
    base: &str,
) -> Vec<String> {
    let mut found: Vec<(usize, String)> = Vec::new();
    for n in 0..1000 {
        let name = format!("{base}/{n}");
        let master = cluster
            .master_of(cluster.slot_of(&name).await.unwrap())
            .await
            .unwrap();
        if !found.iter().any(|(m, _)| *m == master) {
            found.push((master, name));
        }
        if found.len() == 3 {
            break;
        }
    }
    assert_eq!(found.len(), 3, "names on all three masters: {found:?}");
    found.into_iter().map(|(_, name)| name).collect()
}
