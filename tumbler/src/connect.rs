//! `connect(url)`: the store is chosen by the URL's scheme.

use tumbler_core::memory::{MemoryOptions, MemoryStore};
use tumbler_core::params::Params;
use tumbler_core::{Error, Result, SharedBackend};

use crate::{query, scheme};

/// Connects to the store named by `url` and returns a shared backend.
///
/// | scheme | store | feature |
/// |---|---|---|
/// | `memory://NAME?ttl=10s` | in-process store `NAME` (shared within this process only) | always |
/// | `redis://[USER:PASS@]HOST:PORT[/DB]?ttl=30s&prefix=P` (`rediss://` for TLS; `redis+redlock://H1:P1,H2:P2,H3:P3` for Redlock; `redis+cluster://H1:P1,H2:P2` for a Redis Cluster; `redis+sentinel://S1:P1,S2:P2/MASTER` through Sentinel) | Redis, `SET NX PX` keys compatible with redis-py's `Lock` and rslock (see `tumbler_redis`) | `redis` |
/// | `zk://[USER:PASS@]HOST:PORT[,HOST:PORT...][/BASE]?session_timeout=10s` (`zk+tls://` for TLS) | ZooKeeper ensemble, Curator-compatible recipes under `/BASE` (see `tumbler_zookeeper`) | `zookeeper` |
/// | `etcd://[USER:PASS@]HOST:PORT[,HOST:PORT...][/PREFIX]?ttl=10s` (`etcds://` for TLS) | etcd cluster, `etcdctl lock`-compatible mutex keys under `PREFIX` (see `tumbler_etcd`) | `etcd` |
/// | `consul://HOST[:PORT]?ttl=15s&lock_delay=15s&prefix=tumbler/&token=T` (`consuls://` for https) | Consul agent: sessions + KV, `consul lock`/api.Lock-compatible mutex keys `PREFIX NAME/.lock`, api.Semaphore layout (see `tumbler_consul`) | `consul` |
///
/// TLS takes the same parameters on every store: `tls_ca` (the CA's PEM file), `tls_cert` and
/// `tls_key` (a client certificate), `tls_insecure=true` (tests only); each backend's docs
/// list the older names it still accepts.
///
/// Schemes are case-insensitive and whitespace around the URL is ignored.
///
/// # Errors
///
/// - A scheme whose feature is not enabled: [`Error::InvalidArgument`] naming the feature to
///   enable.
/// - A malformed URL, an unknown scheme, an unknown query parameter or one given twice:
///   [`Error::InvalidArgument`] naming the bad part (and, for near misses such as
///   `redis:host:6379`, `localhost:6379` or `http://`, what to write instead).
/// - A store that cannot be reached: [`Error::Connection`] or [`Error::Timeout`]; refused
///   credentials: [`Error::Auth`].
pub async fn connect(url: &str) -> Result<SharedBackend> {
    let split = scheme::split(url)?;
    #[allow(unused_variables)] // without store features only memory:// is matched
    let url = split.url.as_str();
    match split.scheme.as_str() {
        "memory" => connect_memory(split.rest()).await,
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+redlock" | "rediss+redlock" | "redis+cluster"
        | "rediss+cluster" | "redis+sentinel" | "rediss+sentinel" => {
            tumbler_redis::connect_url(url).await
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" | "redis+redlock" | "rediss+redlock" | "redis+cluster"
        | "rediss+cluster" | "redis+sentinel" | "rediss+sentinel" => not_compiled("redis", "redis"),
        #[cfg(feature = "zookeeper")]
        "zk" | "zookeeper" | "zk+tls" | "zookeeper+tls" => {
            tumbler_zookeeper::connect_url(url).await
        }
        #[cfg(not(feature = "zookeeper"))]
        "zk" | "zookeeper" | "zk+tls" | "zookeeper+tls" => not_compiled("zookeeper", "zookeeper"),
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => tumbler_etcd::connect_url(url).await,
        #[cfg(not(feature = "etcd"))]
        "etcd" | "etcds" => not_compiled("etcd", "etcd"),
        #[cfg(feature = "consul")]
        "consul" | "consuls" => tumbler_consul::connect_url(url).await,
        #[cfg(not(feature = "consul"))]
        "consul" | "consuls" => not_compiled("consul", "consul"),
        // `scheme::split` lets only the schemes above through.
        other => Err(Error::invalid(
            "URL scheme",
            format!("{other:?} is not a known store"),
        )),
    }
}

#[allow(dead_code)]
fn not_compiled(backend: &str, feature: &str) -> Result<SharedBackend> {
    Err(Error::invalid(
        "URL scheme",
        format!(
            "backend {backend} is not compiled in; enable the `{feature}` feature of tumbler-locks"
        ),
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
    let mut params = Params::new("memory", query::pairs(query)?);
    let mut options = MemoryOptions::default();
    if let Some(ttl) = params.duration("ttl")? {
        options = options.session_ttl(Some(ttl))?;
    }
    params.finish(&["ttl"])?;
    MemoryStore::named(name).connect(options).await
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

    /// Newcomer near misses get an error that says what to write; a parameter given twice is
    /// refused on every store; case and whitespace around a URL do not matter.
    #[tokio::test]
    async fn near_misses_say_what_to_write() {
        assert!(invalid(connect("redis:127.0.0.1:6379").await).contains("write redis://"));
        assert!(invalid(connect("localhost:2181").await).contains("write zk://localhost:2181"));
        assert!(invalid(connect("http://127.0.0.1:8500").await).contains("consul://"));
        assert!(invalid(connect("").await).contains("empty"));
        // Each store's parser refuses the repeat (lockcore's Params); stores compiled out
        // answer that their feature is off instead.
        let repeated = [
            (true, "memory://x?ttl=1s&ttl=2s"),
            (cfg!(feature = "redis"), "redis://127.0.0.1:1?ttl=5s&ttl=6s"),
            (
                cfg!(feature = "zookeeper"),
                "zk://127.0.0.1:1?session_timeout=5s&session_timeout=6s",
            ),
            (cfg!(feature = "etcd"), "etcd://127.0.0.1:1?ttl=5s&ttl=6s"),
            (
                cfg!(feature = "consul"),
                "consul://127.0.0.1:1?ttl=15s&ttl=20s",
            ),
        ];
        for url in repeated
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, url)| url)
        {
            assert!(
                invalid(connect(url).await).contains("more than once"),
                "{url}"
            );
        }
        let upper = connect(" MEMORY://facade-case\n").await.unwrap();
        let lower = connect("memory://facade-case").await.unwrap();
        let held = upper.mutex("x").unwrap().lock().await.unwrap();
        assert!(
            lower
                .mutex("x")
                .unwrap()
                .try_lock()
                .await
                .unwrap()
                .is_none(),
            "MEMORY:// and memory:// name the same store"
        );
        held.release().await.unwrap();
    }

    /// With every feature on, every scheme (in any case) reaches its backend: what fails is
    /// the connection or the backend's own check, never the scheme.
    #[tokio::test]
    #[cfg(feature = "all")]
    async fn every_scheme_reaches_its_backend() {
        for url in [
            "REDIS://127.0.0.1:1?connect_timeout=1s",
            "rediss+redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?connect_timeout=1s",
            "redis+sentinel://127.0.0.1:1/mymaster?connect_timeout=1s",
            "Redis+Cluster://127.0.0.1:1,127.0.0.1:2?connect_timeout=1s",
            "rediss+sentinel://127.0.0.1:1/mymaster?connect_timeout=1s",
            "Etcd://127.0.0.1:1",
            "zk+tls://127.0.0.1:1",
            "zookeeper+tls://127.0.0.1:1",
            "consuls://127.0.0.1:1",
        ] {
            match connect(url).await {
                Err(Error::InvalidArgument { what, problem }) => assert!(
                    what != "URL scheme" && !problem.contains("not a known store"),
                    "{url}: {what}: {problem}"
                ),
                Err(_) => {}
                Ok(_) => panic!("{url}: connected to nothing"),
            }
        }
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
            .contains("enable the `redis` feature of tumbler-locks"));
        #[cfg(not(feature = "zookeeper"))]
        assert!(invalid(connect("zk://127.0.0.1:2181").await)
            .contains("backend zookeeper is not compiled in; enable the `zookeeper` feature"));
        #[cfg(not(feature = "etcd"))]
        assert!(invalid(connect("etcd://127.0.0.1:2379").await)
            .contains("enable the `etcd` feature of tumbler-locks"));
        #[cfg(not(feature = "consul"))]
        assert!(invalid(connect("consul://127.0.0.1:8500").await)
            .contains("enable the `consul` feature of tumbler-locks"));
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
