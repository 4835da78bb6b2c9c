//! The Redis Cluster harness of `tests/redis.rs` (modules `cluster` and
//! `cluster_master_killed`): testkit's cluster of three masters and three replicas; every client
//! connects with a `redis+cluster://` URL listing all six nodes. Lock TTL 2 s.
//!
//! Clients reach the masters at the addresses the cluster announces, so the per-client
//! connection faults are unsupported here; so are pausing and restarting the servers, which
//! would make the cluster fail over (a master killed while the suite runs is
//! `cluster_master_killed`). The servers start empty, so every URL has `restart_delay=0s`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conformance::routes::ProxiedClients;
use conformance::{Foreign, Harness, Holder, HookError, HookResult, ProcessHolder, TestClient};
use testkit::proxy::ProxyMode;
use testkit::redis_cluster::RedisCluster;
use tumbler_core::{LockName, SharedBackend};
use tumbler_redis::{RedisBackend, RedisConfig};

use crate::redis_hooks;

/// The lock TTL of every client.
pub const TTL: Duration = Duration::from_secs(2);

/// A real Redis Cluster under test.
pub struct RedisClusterHarness {
    cluster: Arc<RedisCluster>,
    /// A client of the cluster, for the store-side hooks.
    admin: Arc<RedisBackend>,
    clients: ProxiedClients<RedisBackend>,
}

impl RedisClusterHarness {
    /// A harness on a running cluster (shared with a test that kills its masters).
    pub async fn on(cluster: Arc<RedisCluster>) -> RedisClusterHarness {
        let admin = RedisConfig::from_url(&cluster_url(&cluster, TTL))
            .unwrap_or_else(|e| panic!("admin URL: {e}"))
            .connect_backend()
            .await
            .unwrap_or_else(|e| panic!("connecting the admin client: {e}"));
        RedisClusterHarness {
            cluster,
            admin,
            clients: ProxiedClients::new(ProxyMode::Blackhole),
        }
    }
}

/// A client URL of `cluster` with a lock TTL of `ttl`.
pub fn cluster_url(cluster: &RedisCluster, ttl: Duration) -> String {
    format!(
        "redis+cluster://{}?ttl={}ms&connect_timeout=1s&restart_delay=0s",
        cluster.seed_hosts(),
        ttl.as_millis()
    )
}

const DIRECT: &str =
    "clients reach the masters at the addresses the cluster announces, not through a fault proxy";

#[async_trait]
impl Harness for RedisClusterHarness {
    fn name(&self) -> String {
        "redis-cluster".into()
    }

    async fn client(&self) -> Result<TestClient, String> {
        let backend = RedisConfig::from_url(&cluster_url(&self.cluster, TTL))
            .map_err(|e| e.to_string())?
            .connect_backend()
            .await
            .map_err(|e| format!("connect to the cluster: {e}"))?;
        Ok(self.clients.add(backend, Vec::new()))
    }

    fn crash_release_bound(&self) -> Duration {
        TTL * 3
    }

    fn hold_ttl(&self) -> Duration {
        TTL
    }

    fn killed_waiter_bound(&self) -> Duration {
        redis_hooks::KILLED_WAITER_BOUND
    }

    fn request_timeout(&self) -> Duration {
        TTL / 2
    }

    fn expiry_is_deletion(&self) -> bool {
        true
    }

    async fn spawn_waiter(&self, name: &LockName, ttl: Duration) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn_waiting(
            env!("CARGO_BIN_EXE_holder"),
            &cluster_url(&self.cluster, ttl),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn(
            env!("CARGO_BIN_EXE_holder"),
            &cluster_url(&self.cluster, TTL),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn_leader(
            env!("CARGO_BIN_EXE_holder"),
            &cluster_url(&self.cluster, TTL),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    /// On the master that serves the name's slot (the lock key and its fence share it).
    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        let failed = |e: testkit::Error| HookError::Failed(e.to_string());
        let slot = self.cluster.slot_of(name.as_str()).await.map_err(failed)?;
        let master = self.cluster.master_of(slot).await.map_err(failed)?;
        redis_hooks::write_foreign(&self.cluster.nodes()[master..=master], name, what).await
    }

    /// A forced release by another client; see `shared/redis_hooks.rs`.
    async fn expire_session(&self, client: &TestClient) -> HookResult {
        let holder = self.clients.backend(client)?;
        redis_hooks::expire_holds(&holder, &self.admin).await
    }

    async fn cut_connection(&self, _client: &TestClient) -> HookResult {
        Err(HookError::Unsupported(DIRECT.into()))
    }

    async fn heal_connection(&self, _client: &TestClient) -> HookResult {
        Err(HookError::Unsupported(DIRECT.into()))
    }

    async fn pause_server(&self) -> HookResult {
        Err(HookError::Unsupported(
            "pausing a master makes the cluster fail over; see cluster_master_killed".into(),
        ))
    }

    async fn restart_server(&self) -> HookResult {
        Err(HookError::Unsupported(
            "restarting a master makes the cluster fail over; see cluster_master_killed".into(),
        ))
    }

    fn bad_urls(&self) -> HookResult<Vec<(String, &'static str)>> {
        let hosts = self.cluster.seed_hosts();
        let first = hosts
            .split(',')
            .next()
            .unwrap_or("127.0.0.1:7000")
            .to_owned();
        Ok(vec![
            (
                format!("redis+cluster://{hosts},127.0.0.1:0"),
                "port 0 among the nodes",
            ),
            (
                format!("redis+cluster://{hosts},{first}"),
                "one node listed twice",
            ),
            (
                format!("redis+cluster://{hosts}/1"),
                "a database other than 0",
            ),
            (
                format!("redis+cluster://alice:secret@{hosts}?user=bob"),
                "credentials given twice",
            ),
            (format!("redis://{first}"), "redis:// at a cluster node"),
        ])
    }

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Ok(
            match RedisConfig::from_url(&cluster_url(&self.cluster, TTL)) {
                Ok(config) => config.ttl(ttl).connect().await,
                Err(e) => Err(e),
            },
        )
    }

    /// Free ports where no node listens.
    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
        let url = format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}?connect_timeout=2s",
            testkit::free_port(),
            testkit::free_port(),
        );
        Ok(tumbler_redis::connect_url(&url).await)
    }
}
