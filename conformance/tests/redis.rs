//! The whole conformance suite on a real Redis server (one server per case, one fault proxy per
//! client, lock TTL 2 s).

#[path = "shared/redis_hooks.rs"]
mod redis_hooks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_redis::{RedisBackend, RedisConfig};
use conformance::routes::{hosts, proxies_to};
use conformance::{
    Harness, Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient,
};
use lockcore::{LockName, SharedBackend};
use testkit::proxy::ProxyMode;
use testkit::redis::Redis;

/// The lock TTL of every client in this suite.
const TTL: Duration = Duration::from_secs(2);

struct RedisHarness {
    redis: Redis,
    /// A client straight to the server, for the store-side hooks.
    admin: Arc<RedisBackend>,
    clients: ProxiedClients<RedisBackend>,
}

fn url_of(addr: impl std::fmt::Display) -> String {
    format!(
        "redis://{addr}?ttl={}ms&connect_timeout=1s",
        TTL.as_millis()
    )
}

#[async_trait]
impl Harness for RedisHarness {
    fn name(&self) -> String {
        "redis".into()
    }

    async fn client(&self) -> Result<TestClient, String> {
        let proxies = proxies_to(&[self.redis.addr()]).await?;
        let backend = RedisConfig::from_url(&url_of(hosts(&proxies)))
            .map_err(|e| e.to_string())?
            .connect_backend()
            .await
            .map_err(|e| format!("connect through the proxy: {e}"))?;
        Ok(self.clients.add(backend, proxies))
    }

    fn crash_release_bound(&self) -> Duration {
        TTL * 3
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
            &url_of(self.redis.addr()),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn restart_server(&self) -> HookResult {
        self.redis
            .restart()
            .await
            .map_err(|e| HookError::Failed(format!("restarting redis: {e}")))
    }

    async fn connect_with_ttl(&self, ttl: Duration) -> HookResult<lockcore::Result<SharedBackend>> {
        Ok(RedisConfig::single(backend_redis::RedisNode::new(
            "127.0.0.1",
            self.redis.port(),
        ))
        .ttl(ttl)
        .connect()
        .await)
    }

    async fn connect_unreachable(&self) -> HookResult<lockcore::Result<SharedBackend>> {
        let port = testkit::free_port();
        Ok(
            backend_redis::connect_url(&format!("redis://127.0.0.1:{port}?connect_timeout=2s"))
                .await,
        )
    }
}

async fn harness() -> Arc<dyn Harness> {
    let redis = Redis::start()
        .await
        .unwrap_or_else(|e| panic!("starting redis: {e}"));
    let admin = RedisConfig::from_url(&url_of(redis.addr()))
        .unwrap_or_else(|e| panic!("admin URL: {e}"))
        .connect_backend()
        .await
        .unwrap_or_else(|e| panic!("connecting the admin client: {e}"));
    // A server started just now holds no locks from before a restart.
    admin
        .declare_fresh_servers()
        .await
        .unwrap_or_else(|e| panic!("declaring the server fresh: {e}"));
    Arc::new(RedisHarness {
        redis,
        admin,
        clients: ProxiedClients::new(ProxyMode::Blackhole),
    })
}

conformance::suite!(harness);
