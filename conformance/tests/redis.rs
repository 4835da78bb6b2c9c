//! The whole conformance suite on a real Redis server (one server per case, one fault proxy per
//! client, lock TTL 2 s).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backend_redis::{RedisBackend, RedisConfig};
use conformance::{Harness, Holder, HookError, HookResult, ProcessHolder, TestClient};
use lockcore::{LockBackend, LockName, SharedBackend};
use testkit::proxy::{FaultProxy, ProxyMode};
use testkit::redis::Redis;

/// The lock TTL of every client in this suite.
const TTL: Duration = Duration::from_secs(2);

struct RedisHarness {
    redis: Redis,
    /// A client straight to the server, for the store-side hooks.
    admin: Arc<RedisBackend>,
    clients: Mutex<Vec<(Arc<RedisBackend>, Arc<FaultProxy>)>>,
}

fn url_of(addr: std::net::SocketAddr) -> String {
    format!(
        "redis://{addr}?ttl={}ms&connect_timeout=1s",
        TTL.as_millis()
    )
}

impl RedisHarness {
    fn entry(&self, client: &TestClient) -> HookResult<(Arc<RedisBackend>, Arc<FaultProxy>)> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let (backend, proxy) = clients
            .get(client.index)
            .ok_or_else(|| HookError::Failed(format!("no client {}", client.index)))?;
        Ok((backend.clone(), proxy.clone()))
    }
}

#[async_trait]
impl Harness for RedisHarness {
    fn name(&self) -> String {
        "redis".into()
    }

    async fn client(&self) -> Result<TestClient, String> {
        let proxy = FaultProxy::start(self.redis.addr())
            .await
            .map_err(|e| format!("fault proxy: {e}"))?;
        let backend = RedisConfig::from_url(&url_of(proxy.addr()))
            .map_err(|e| e.to_string())?
            .connect_backend()
            .await
            .map_err(|e| format!("connect through the proxy: {e}"))?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.push((backend.clone(), Arc::new(proxy)));
        Ok(TestClient {
            locks: backend as SharedBackend,
            index: clients.len() - 1,
        })
    }

    fn crash_release_bound(&self) -> Duration {
        TTL * 3
    }

    /// The store drops every hold of the client at once: a forced release by another client
    /// (Redis has no sessions; a hold lives in its key). The forced release publishes the
    /// removal on the lock's channel, which the holder's connection receives before the reply
    /// to its next request; that request is made here, so the holder has been told when the
    /// hook returns.
    async fn expire_session(&self, client: &TestClient) -> HookResult {
        let (backend, _) = self.entry(client)?;
        let failed = |what: &str, e: lockcore::Error| HookError::Failed(format!("{what}: {e}"));
        backend
            .settle()
            .await
            .map_err(|e| failed("holder subscriptions", e))?;
        for name in backend.held_locks() {
            self.admin
                .force_release(&name)
                .await
                .map_err(|e| failed("forced release", e))?;
            LockBackend::state(&*backend, &name)
                .await
                .map_err(|e| failed("the holder's round trip", e))?;
        }
        Ok(())
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        let (_, proxy) = self.entry(client)?;
        proxy.set_mode(ProxyMode::Blackhole);
        proxy.cut_all();
        Ok(())
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        let (_, proxy) = self.entry(client)?;
        proxy.set_mode(ProxyMode::Pass);
        Ok(())
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
        clients: Mutex::new(Vec::new()),
    })
}

conformance::suite!(harness);
