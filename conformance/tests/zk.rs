//! The whole conformance suite on a real standalone ZooKeeper server.
//!
//! Every test gets its own server (a JVM start takes about a second), so restarting it in one
//! case disturbs no other. Every client reaches the server through its own fault proxy, so its
//! connection can be cut alone; sessions last 3 s.

#[path = "shared/zk_hooks.rs"]
mod zk_hooks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_zk::{ZkBackend, ZkConfig};
use conformance::routes::{hosts, proxies_to};
use conformance::{Harness, Holder, HookError, HookResult, ProxiedClients, TestClient};
use lockcore::{LockName, SharedBackend};
use testkit::proxy::ProxyMode;
use testkit::zk::ZooKeeper;

/// The session timeout of every client in this suite.
const SESSION: Duration = Duration::from_secs(3);

struct ZkHarness {
    zk: ZooKeeper,
    clients: ProxiedClients<ZkBackend>,
}

impl ZkHarness {
    fn config(&self, hosts: &str) -> lockcore::Result<ZkConfig> {
        ZkConfig::new(hosts)?.session_timeout(SESSION)
    }
}

#[async_trait]
impl Harness for ZkHarness {
    fn name(&self) -> String {
        "zookeeper".into()
    }

    async fn client(&self) -> Result<TestClient, String> {
        let proxies = proxies_to(&[self.zk.addr()]).await?;
        let config = self.config(&hosts(&proxies)).map_err(|e| e.to_string())?;
        let backend = ZkBackend::connect(config)
            .await
            .map_err(|e| format!("connect through the proxy: {e}"))?;
        Ok(self.clients.add(backend, proxies))
    }

    fn crash_release_bound(&self) -> Duration {
        SESSION * 3
    }

    /// Closes the session from a second connection; see `shared/zk_hooks.rs`.
    async fn expire_session(&self, client: &TestClient) -> HookResult {
        zk_hooks::expire_session(&self.clients, client, &self.zk.connect_string(), SESSION).await
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        self.clients.cut(client)
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        self.clients.heal(client)
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        zk_hooks::spawn_holder(&self.zk.connect_string(), SESSION, name).await
    }

    async fn restart_server(&self) -> HookResult {
        self.zk
            .restart()
            .await
            .map_err(|e| HookError::Failed(format!("restarting zookeeper: {e}")))
    }

    async fn connect_with_ttl(&self, ttl: Duration) -> HookResult<lockcore::Result<SharedBackend>> {
        Ok(
            match ZkConfig::new(&self.zk.connect_string()).and_then(|c| c.session_timeout(ttl)) {
                Ok(config) => config.connect().await,
                Err(e) => Err(e),
            },
        )
    }

    async fn connect_unreachable(&self) -> HookResult<lockcore::Result<SharedBackend>> {
        let port = testkit::free_port();
        let config = self
            .config(&format!("127.0.0.1:{port}"))
            .and_then(|c| c.connect_timeout(Duration::from_secs(3)));
        Ok(match config {
            Ok(config) => config.connect().await,
            Err(e) => Err(e),
        })
    }
}

async fn harness() -> Arc<dyn Harness> {
    let zk = ZooKeeper::start()
        .await
        .unwrap_or_else(|e| panic!("starting zookeeper: {e}"));
    Arc::new(ZkHarness {
        zk,
        clients: ProxiedClients::new(ProxyMode::Refuse),
    })
}

conformance::suite!(harness);
