//! `connect(url)`: the store is chosen by the URL's scheme.

use lockcore::memory::{MemoryOptions, MemoryStore};
use lockcore::params::Params;
use lockcore::{Error, Result, SharedBackend};

/// Connects to the store named by `url` and returns a shared backend.
///
/// | scheme | store | feature |
/// |---|---|---|
/// | `memory://NAME?ttl=10s` | in-process store `NAME` (shared within this process only) | always |
/// | `redis://[USER:PASS@]HOST:PORT[/DB]?ttl=30s&prefix=P` (`rediss://` for TLS; `redis+redlock://H1:P1,H2:P2,H3:P3` for Redlock) | Redis, `SET NX PX` keys compatible with redis-py's `Lock` and rslock (see `backend_redis`) | `redis` |
/// | `zk://[USER:PASS@]HOST:PORT[,HOST:PORT...][/BASE]?session_timeout=10s` | ZooKeeper ensemble, Curator-compatible recipes under `/BASE` (see `backend_zk`) | `zookeeper` |
/// | `etcd://[USER:PASS@]HOST:PORT[,HOST:PORT...][/PREFIX]?ttl=10s` (`etcds://` for TLS, `&ca=…&cert=…&key=…`) | etcd cluster, `etcdctl lock`-compatible mutex keys under `PREFIX` (see `backend_etcd`) | `etcd` |
/// | `consul://HOST[:PORT]?ttl=15s&lock_delay=15s&prefix=tumbler/&token=T` (`consuls://` for https, `&ca_file=…`) | Consul agent: sessions + KV, `consul lock`/api.Lock-compatible mutex keys `PREFIX NAME/.lock`, api.Semaphore layout (see `backend_consul`) | `consul` |
///
/// A scheme whose feature is not enabled fails with a message naming the feature to enable.
/// Malformed URLs and unknown query parameters fail with [`Error::InvalidArgument`] naming the
/// bad part.
pub async fn connect(url: &str) -> Result<SharedBackend> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::invalid(
            "URL",
            format!("{url:?} has no scheme; write e.g. memory://name, redis://host:6379, zk://host:2181, etcd://host:2379 or consul://host:8500"),
        ));
    };
    match scheme {
        "memory" => connect_memory(rest).await,
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+redlock" | "rediss+redlock" => {
            backend_redis::connect_url(url).await
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" | "redis+redlock" | "rediss+redlock" => not_compiled("redis", "redis"),
        #[cfg(feature = "zookeeper")]
        "zk" | "zookeeper" => backend_zk::connect_url(url).await,
        #[cfg(not(feature = "zookeeper"))]
        "zk" | "zookeeper" => not_compiled("zookeeper", "zookeeper"),
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => backend_etcd::connect_url(url).await,
        #[cfg(not(feature = "etcd"))]
        "etcd" | "etcds" => not_compiled("etcd", "etcd"),
        #[cfg(feature = "consul")]
        "consul" | "consuls" => backend_consul::connect_url(url).await,
        #[cfg(not(feature = "consul"))]
        "consul" | "consuls" => not_compiled("consul", "consul"),
        other => Err(Error::invalid(
            "URL scheme",
            format!("{other:?} is not a known store; use memory, redis, rediss, redis+redlock, rediss+redlock, zk, etcd, etcds, consul or consuls"),
        )),
    }
}

#[allow(dead_code)]
fn not_compiled(backend: &str, feature: &str) -> Result<SharedBackend> {
    Err(Error::invalid(
        "URL scheme",
        format!("backend {backend} is not compiled in; enable the `{feature}` feature of tumbler"),
    ))
}

async fn connect_memory(rest: &str) -> Result<SharedBackend> {
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    let name = if name.is_empty() { "default" } else { name };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(
            "memory URL",
            format!("store name {name:?} may only use A-Z a-z 0-9 - _ ."),
        ));
    }
    let mut params = Params::new("memory", query_pairs(query)?);
    let mut options = MemoryOptions::default();
    if let Some(ttl) = params.duration("ttl")? {
        options = options.session_ttl(Some(ttl))?;
    }
    params.finish(&["ttl"])?;
    MemoryStore::named(name).connect(options).await
}

/// Splits `a=1&b=2` into pairs. Values are taken as written (no percent-decoding needed for
/// the memory store's parameters).
fn query_pairs(query: &str) -> Result<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(Error::invalid(
                "URL query",
                format!("{part:?} has no value; write key=value"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(result: Result<SharedBackend>) -> String {
        match result {
            Err(Error::InvalidArgument { what, problem }) => format!("{what}: {problem}"),
            Err(other) => panic!("expected InvalidArgument, got {other}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[tokio::test]
    async fn memory_urls() {
        let a = connect("memory://facade-test").await.unwrap();
        let b = connect("memory://facade-test?ttl=2s").await.unwrap();
        let held = a.mutex("x").unwrap().lock().await.unwrap();
        assert!(
            b.mutex("x").unwrap().try_lock().await.unwrap().is_none(),
            "same named store"
        );
        held.release().await.unwrap();
    }

    #[tokio::test]
    async fn bad_urls_point_at_the_bad_part() {
        assert!(invalid(connect("localhost:6379").await).contains("no scheme"));
        assert!(invalid(connect("mysql://x").await).contains("\"mysql\""));
        assert!(invalid(connect("memory://x?tll=1s").await).contains("`tll`"));
        assert!(invalid(connect("memory://x?ttl=fast").await).contains("ttl=fast"));
        assert!(invalid(connect("memory://x?ttl").await).contains("no value"));
        assert!(invalid(connect("memory://x?ttl=0s").await).contains("out of range"));
        assert!(invalid(connect("memory://a/b").await).contains("store name"));
    }

    /// Each store's URL grammar as seen through the facade: malformed parts and unknown
    /// parameters are named, without any server being contacted.
    #[tokio::test]
    #[cfg(feature = "all")]
    async fn every_store_names_the_bad_part() {
        for (url, needle) in [
            ("redis://127.0.0.1:1?tll=5s", "tll"),
            ("redis://127.0.0.1:1?ttl=soon", "ttl=soon"),
            ("redis+redlock://127.0.0.1:1,127.0.0.1:2?ttl=0s", "ttl"),
            ("zk://127.0.0.1:1?sesion_timeout=5s", "sesion_timeout"),
            ("zk://127.0.0.1:1?session_timeout=0s", "session"),
            ("etcd://127.0.0.1:1?ttl=5s&bogus=1", "bogus"),
            ("etcd://127.0.0.1:1?ttl=0s", "ttl"),
            ("consul://127.0.0.1:1?lock_delay=5m", "lock_delay"),
            ("consul://127.0.0.1:1?tokn=x", "tokn"),
        ] {
            let message = invalid(connect(url).await);
            assert!(message.contains(needle), "{url}: {message}");
        }
    }

    /// Without a store's feature, its scheme says which feature to enable.
    #[tokio::test]
    async fn schemes_without_their_feature_name_it() {
        #[cfg(not(feature = "redis"))]
        assert!(invalid(connect("redis://127.0.0.1:6379").await)
            .contains("enable the `redis` feature of tumbler"));
        #[cfg(not(feature = "zookeeper"))]
        assert!(invalid(connect("zk://127.0.0.1:2181").await)
            .contains("backend zookeeper is not compiled in; enable the `zookeeper` feature"));
        #[cfg(not(feature = "etcd"))]
        assert!(invalid(connect("etcd://127.0.0.1:2379").await)
            .contains("enable the `etcd` feature of tumbler"));
        #[cfg(not(feature = "consul"))]
        assert!(invalid(connect("consul://127.0.0.1:8500").await)
            .contains("enable the `consul` feature of tumbler"));
        // With every feature on, the same URLs reach their backends: an unreachable server is
        // a connection error, not a missing feature.
        #[cfg(feature = "all")]
        for url in [
            "redis://127.0.0.1:1?connect_timeout=1s",
            "etcd://127.0.0.1:1?ttl=5s",
        ] {
            if let Err(Error::InvalidArgument { problem, .. }) = connect(url).await {
                assert!(!problem.contains("not compiled in"), "{url}: {problem}");
            }
        }
    }
}
