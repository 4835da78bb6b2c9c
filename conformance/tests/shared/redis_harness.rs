//! The Redis harness of `tests/redis.rs` (one server), `tests/redis_redlock.rs` (Redlock over
//! three masters) and the explorer (`tests/explore.rs`): one fault proxy per client and
//! server, lock TTL 2 s.
//!
//! A test file that includes this module also includes `shared/redis_hooks.rs` as
//! `redis_hooks` at its root.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conformance::routes::proxies_to;
use conformance::{
    Foreign, Harness, Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient,
};
use testkit::proxy::ProxyMode;
use testkit::redis::Redis;
use tumbler_core::{LockName, SharedBackend};
use tumbler_redis::{RedisBackend, RedisConfig};

use crate::redis_hooks;

/// The lock TTL of every client.
pub const TTL: Duration = Duration::from_secs(2);

/// Which deployment the harness runs.
// Each suite builds one variant; only the explorer builds both.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One server, `redis://`.
    Single,
    /// Redlock over three masters, `redis+redlock://`.
    Redlock,
}

impl Mode {
    fn scheme(self) -> &'static str {
        match self {
            Mode::Single => "redis",
            Mode::Redlock => "redis+redlock",
        }
    }

    fn servers(self) -> usize {
        match self {
            Mode::Single => 1,
            Mode::Redlock => 3,
        }
    }
}

/// Real Redis servers under test, each client behind its own fault proxies.
pub struct RedisHarness {
    mode: Mode,
    masters: Vec<Redis>,
    /// A client straight to the servers, for the store-side hooks.
    admin: Arc<RedisBackend>,
    clients: ProxiedClients<RedisBackend>,
}

/// A client URL for `addrs` with a lock TTL of `ttl`.
fn url_of(mode: Mode, addrs: &[SocketAddr], ttl: Duration) -> String {
    let hosts: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    format!(
        "{}://{}?ttl={}ms&connect_timeout=1s",
        mode.scheme(),
        hosts.join(","),
        ttl.as_millis()
    )
}

impl RedisHarness {
    /// Starts the servers of `mode` and the admin client, and declares the servers fresh (a
    /// server started just now holds no locks from before a restart).
    pub async fn start(mode: Mode) -> RedisHarness {
        let masters = Redis::start_many(mode.servers())
            .await
            .unwrap_or_else(|e| panic!("starting {} redis server(s): {e}", mode.servers()));
        let addrs: Vec<SocketAddr> = masters.iter().map(Redis::addr).collect();
        let admin = RedisConfig::from_url(&url_of(mode, &addrs, TTL))
            .unwrap_or_else(|e| panic!("admin URL: {e}"))
            .connect_backend()
            .await
            .unwrap_or_else(|e| panic!("connecting the admin client: {e}"));
        admin
            .declare_fresh_servers()
            .await
            .unwrap_or_else(|e| panic!("declaring the servers fresh: {e}"));
        RedisHarness {
            mode,
            masters,
            admin,
            clients: ProxiedClients::new(ProxyMode::Blackhole),
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.masters.iter().map(Redis::addr).collect()
    }

    /// A URL straight to the servers (no proxy) with a lock TTL of `ttl`.
    fn direct_url(&self, ttl: Duration) -> String {
        url_of(self.mode, &self.addrs(), ttl)
    }
}

#[async_trait]
impl Harness for RedisHarness {
    fn name(&self) -> String {
        match self.mode {
            Mode::Single => "redis".into(),
            Mode::Redlock => "redis-redlock".into(),
        }
    }

    async fn client(&self) -> Result<TestClient, String> {
        let proxies = proxies_to(&self.addrs()).await?;
        let through: Vec<SocketAddr> = proxies.iter().map(|p| p.addr()).collect();
        let backend = RedisConfig::from_url(&url_of(self.mode, &through, TTL))
            .map_err(|e| e.to_string())?
            .connect_backend()
            .await
            .map_err(|e| format!("connect through the proxies: {e}"))?;
        Ok(self.clients.add(backend, proxies))
    }

    fn crash_release_bound(&self) -> Duration {
        TTL * 3
    }

    fn hold_ttl(&self) -> Duration {
        TTL
    }

    /// Issue 12 A.2: 3 s whatever the TTL, plus slack.
    fn killed_waiter_bound(&self) -> Duration {
        redis_hooks::KILLED_WAITER_BOUND
    }

    /// The backend's default request timeout, TTL / 4, with room for a retry.
    fn request_timeout(&self) -> Duration {
        TTL / 2
    }

    fn expiry_is_deletion(&self) -> bool {
        true
    }

    async fn spawn_waiter(&self, name: &LockName, ttl: Duration) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn_waiting(
            env!("CARGO_BIN_EXE_holder"),
            &self.direct_url(ttl),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    /// Stops every server (SIGSTOP).
    async fn pause_server(&self) -> HookResult {
        for master in &self.masters {
            master
                .pause()
                .map_err(|e| HookError::Failed(format!("stopping redis {}: {e}", master.addr())))?;
        }
        Ok(())
    }

    async fn resume_server(&self) -> HookResult {
        for master in &self.masters {
            master.resume().map_err(|e| {
                HookError::Failed(format!("continuing redis {}: {e}", master.addr()))
            })?;
        }
        Ok(())
    }

    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        redis_hooks::write_foreign(&self.masters, name, what).await
    }

    fn bad_urls(&self) -> HookResult<Vec<(String, &'static str)>> {
        Ok(redis_hooks::bad_urls(self.mode.scheme(), &self.addrs()))
    }

    /// A forced release by another client; see `shared/redis_hooks.rs`.
    async fn expire_session(&self, client: &TestClient) -> HookResult {
        let holder = self.clients.backend(client)?;
        redis_hooks::expire_holds(&holder, &self.admin).await
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        self.clients.cut(client)
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        self.clients.heal(client)
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn(
            env!("CARGO_BIN_EXE_holder"),
            &self.direct_url(TTL),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn_leader(
            env!("CARGO_BIN_EXE_holder"),
            &self.direct_url(TTL),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn restart_server(&self) -> HookResult {
        for master in &self.masters {
            master.restart().await.map_err(|e| {
                HookError::Failed(format!("restarting redis {}: {e}", master.addr()))
            })?;
        }
        Ok(())
    }

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Ok(match RedisConfig::from_url(&self.direct_url(TTL)) {
            Ok(config) => config.ttl(ttl).connect().await,
            Err(e) => Err(e),
        })
    }

    /// Free ports where no server listens, as many as the mode has servers.
    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
        let hosts: Vec<String> = (0..self.mode.servers())
            .map(|_| format!("127.0.0.1:{}", testkit::free_port()))
            .collect();
        let url = match self.mode {
            Mode::Single => format!("redis://{}?connect_timeout=2s", hosts.join(",")),
            Mode::Redlock => format!("redis+redlock://{}", hosts.join(",")),
        };
        Ok(tumbler_redis::connect_url(&url).await)
    }
}
