//! The whole conformance suite on Redlock over three real Redis masters (three servers per
//! case, one fault proxy per client and master, lock TTL 2 s). Read-write locks, semaphores,
//! FIFO order and strict fencing are not offered in Redlock mode; those cases report skips.

#[path = "shared/redis_hooks.rs"]
mod redis_hooks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_redis::{RedisBackend, RedisConfig};
use conformance::routes::proxies_to;
use conformance::{
    Harness, Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient,
};
use lockcore::{LockName, SharedBackend};
use testkit::proxy::ProxyMode;
use testkit::redis::Redis;

/// The lock TTL of every client in this suite.
const TTL: Duration = Duration::from_secs(2);

struct RedlockHarness {
    masters: Vec<Redis>,
    /// A client straight to the masters, for the store-side hooks.
    admin: Arc<RedisBackend>,
    clients: ProxiedClients<RedisBackend>,
}

fn url_of(addrs: &[std::net::SocketAddr]) -> String {
    let hosts: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    format!(
        "redis+redlock://{}?ttl={}ms&connect_timeout=1s",
        hosts.join(","),
        TTL.as_millis()
    )
}

impl RedlockHarness {
    fn direct_url(&self) -> String {
        url_of(&self.masters.iter().map(Redis::addr).collect::<Vec<_>>())
    }
}

#[async_trait]
impl Harness for RedlockHarness {
    fn name(&self) -> String {
        "redis-redlock".into()
    }

    async fn client(&self) -> Result<TestClient, String> {
        let masters: Vec<_> = self.masters.iter().map(Redis::addr).collect();
        let proxies = proxies_to(&masters).await?;
        let url = url_of(&proxies.iter().map(|p| p.addr()).collect::<Vec<_>>());
        let backend = RedisConfig::from_url(&url)
            .map_err(|e| e.to_string())?
            .connect_backend()
            .await
            .map_err(|e| format!("connect through the proxies: {e}"))?;
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
            &self.direct_url(),
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn restart_server(&self) -> HookResult {
        for master in &self.masters {
            master
                .restart()
                .await
                .map_err(|e| HookError::Failed(format!("restarting a master: {e}")))?;
        }
        Ok(())
    }

    async fn connect_with_ttl(&self, ttl: Duration) -> HookResult<lockcore::Result<SharedBackend>> {
        Ok(match RedisConfig::from_url(&self.direct_url()) {
            Ok(config) => config.ttl(ttl).connect().await,
            Err(e) => Err(e),
        })
    }

    async fn connect_unreachable(&self) -> HookResult<lockcore::Result<SharedBackend>> {
        let ports = [
            testkit::free_port(),
            testkit::free_port(),
            testkit::free_port(),
        ];
        let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        Ok(backend_redis::connect_url(&format!("redis+redlock://{}", hosts.join(","))).await)
    }
}

async fn harness() -> Arc<dyn Harness> {
    let masters = Redis::start_many(3)
        .await
        .unwrap_or_else(|e| panic!("starting 3 redis masters: {e}"));
    let url = url_of(&masters.iter().map(Redis::addr).collect::<Vec<_>>());
    let admin = RedisConfig::from_url(&url)
        .unwrap_or_else(|e| panic!("admin URL: {e}"))
        .connect_backend()
        .await
        .unwrap_or_else(|e| panic!("connecting the admin client: {e}"));
    // Servers started just now hold no locks from before a restart.
    admin
        .declare_fresh_servers()
        .await
        .unwrap_or_else(|e| panic!("declaring the masters fresh: {e}"));
    Arc::new(RedlockHarness {
        masters,
        admin,
        clients: ProxiedClients::new(ProxyMode::Blackhole),
    })
}

conformance::suite!(harness);
