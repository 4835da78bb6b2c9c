//! The Redis Sentinel harness of `tests/redis.rs` (module `sentinel`): testkit's deployment of
//! one master, two replicas and three sentinels; every client connects with a
//! `redis+sentinel://` URL and finds the master through the sentinels. Lock TTL 2 s.
//!
//! The clients reach the master the sentinels name directly (the sentinels hand out its real
//! address), so the per-client connection faults are unsupported here; so are pausing and
//! restarting the server, which would make the sentinels fail over (failover is tested in
//! `backend-redis/tests/sentinel.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conformance::routes::ProxiedClients;
use conformance::{Foreign, Harness, Holder, HookError, HookResult, ProcessHolder, TestClient};
use testkit::proxy::ProxyMode;
use testkit::redis_sentinel::RedisSentinel;
use tumbler_core::{LockName, SharedBackend};
use tumbler_redis::{RedisBackend, RedisConfig};

use crate::redis_hooks;

/// The lock TTL of every client.
pub const TTL: Duration = Duration::from_secs(2);

/// A real Sentinel deployment under test.
pub struct RedisSentinelHarness {
    deployment: RedisSentinel,
    /// The server that was master when the harness started (no hook moves it).
    master: usize,
    /// A client through the sentinels, for the store-side hooks.
    admin: Arc<RedisBackend>,
    clients: ProxiedClients<RedisBackend>,
}

impl RedisSentinelHarness {
    /// Starts the deployment and the admin client, and declares the master fresh.
    pub async fn start() -> RedisSentinelHarness {
        let deployment = RedisSentinel::start()
            .await
            .unwrap_or_else(|e| panic!("starting Redis Sentinel: {e}"));
        let master = deployment
            .master()
            .await
            .unwrap_or_else(|e| panic!("asking for the master: {e}"));
        let admin = RedisConfig::from_url(&sentinel_url(&deployment, TTL))
            .unwrap_or_else(|e| panic!("admin URL: {e}"))
            .connect_backend()
            .await
            .unwrap_or_else(|e| panic!("connecting the admin client: {e}"));
        admin
            .declare_fresh_servers()
            .await
            .unwrap_or_else(|e| panic!("declaring the master fresh: {e}"));
        RedisSentinelHarness {
            deployment,
            master,
            admin,
            clients: ProxiedClients::new(ProxyMode::Blackhole),
        }
    }

    /// `redis://` straight to the master, for the holder processes (the facade they connect
    /// through takes the single-server URL).
    fn master_url(&self, ttl: Duration) -> String {
        format!(
            "{}?ttl={}ms&connect_timeout=1s",
            self.deployment.servers()[self.master].url(),
            ttl.as_millis()
        )
    }
}

/// A client URL through the sentinels with a lock TTL of `ttl`.
fn sentinel_url(deployment: &RedisSentinel, ttl: Duration) -> String {
    format!(
        "redis+sentinel://{}/{}?ttl={}ms&connect_timeout=1s",
        deployment.sentinel_hosts(),
        deployment.master_name(),
        ttl.as_millis()
    )
}

const DIRECT: &str =
    "clients reach the master the sentinels name directly, not through a fault proxy";

#[async_trait]
impl Harness for RedisSentinelHarness {
    fn name(&self) -> String {
        "redis-sentinel".into()
    }

    async fn client(&self) -> Result<TestClient, String> {
        let backend = RedisConfig::from_url(&sentinel_url(&self.deployment, TTL))
            .map_err(|e| e.to_string())?
            .connect_backend()
            .await
            .map_err(|e| format!("connect through the sentinels: {e}"))?;
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
            &self.master_url(ttl),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn(
            env!("CARGO_BIN_EXE_holder"),
            &self.master_url(TTL),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn_leader(
            env!("CARGO_BIN_EXE_holder"),
            &self.master_url(TTL),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        redis_hooks::write_foreign(
            &self.deployment.servers()[self.master..=self.master],
            name,
            what,
        )
        .await
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
            "pausing the master makes the sentinels fail over; failover has its own tests".into(),
        ))
    }

    async fn restart_server(&self) -> HookResult {
        Err(HookError::Unsupported(
            "restarting the master makes the sentinels fail over; failover has its own tests"
                .into(),
        ))
    }

    fn bad_urls(&self) -> HookResult<Vec<(String, &'static str)>> {
        Ok(bad_sentinel_urls(
            &self.deployment.sentinel_hosts(),
            self.deployment.master_name(),
        ))
    }

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Ok(
            match RedisConfig::from_url(&sentinel_url(&self.deployment, TTL)) {
                Ok(config) => config.ttl(ttl).connect().await,
                Err(e) => Err(e),
            },
        )
    }

    /// Free ports where no sentinel listens.
    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
        let url = format!(
            "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{}?connect_timeout=2s",
            testkit::free_port(),
            testkit::free_port(),
            self.deployment.master_name()
        );
        Ok(tumbler_redis::connect_url(&url).await)
    }
}

/// Sentinel URLs that `tumbler_locks::connect` must refuse, built on the live sentinels'
/// `hosts` (`H1:P1,H2:P2,...`) and the monitored `master` name.
pub fn bad_sentinel_urls(hosts: &str, master: &str) -> Vec<(String, &'static str)> {
    let first = hosts.split(',').next().unwrap_or("127.0.0.1:26379");
    vec![
        (format!("redis+sentinel://{hosts}"), "no master name"),
        (
            format!("redis+sentinel://{hosts},127.0.0.1:0/{master}"),
            "port 0 among the sentinels",
        ),
        (
            format!("redis+sentinel://{hosts},{first}/{master}"),
            "one sentinel listed twice",
        ),
        (
            format!("redis+sentinel://{hosts}/{master}/x"),
            "a database that is not a number",
        ),
        (
            format!("redis+sentinel://{hosts}/{master}?sentinel_user=u"),
            "a sentinel user without a password",
        ),
        (
            format!("redis+sentinel://alice:secret@{hosts}/{master}?user=bob"),
            "credentials given twice",
        ),
    ]
}
