//! The ZooKeeper harness of `tests/zk.rs` and the explorer (`tests/explore.rs`): one server,
//! sessions of [`SESSION`] ([`ZkHarness::start`]); and of `tests/zk_ensemble.rs`: a 3-node
//! ensemble whose members that test kills and restarts ([`ZkHarness::ensemble`]). Every client
//! reaches each server through its own fault proxy.
//!
//! A test file that includes this module also includes `shared/zk_hooks.rs` as `zk_hooks` at
//! its root.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conformance::routes::{hosts, proxies_to};
use conformance::{Foreign, Harness, Holder, HookError, HookResult, ProxiedClients, TestClient};
use testkit::proxy::ProxyMode;
use testkit::zk::{ZkEnsemble, ZooKeeper};
use tumbler_core::{LockName, SharedBackend};
use tumbler_zookeeper::{ZkBackend, ZkConfig};

use crate::zk_hooks;

/// The session timeout of every client on one server.
// Each test file builds one of the two variants.
#[allow(dead_code)]
pub const SESSION: Duration = Duration::from_secs(3);

/// An ensemble and the lock its test holds while it kills or restarts members, so that those
/// and [`Harness::restart_server`] do not mix.
pub struct Ensemble {
    /// The members.
    pub ens: ZkEnsemble,
    /// Held while members are killed or restarted.
    pub topology: tokio::sync::Mutex<()>,
}

/// The servers under test.
// Each test file builds one of the two variants.
#[allow(dead_code)]
enum Servers {
    Standalone(Box<ZooKeeper>),
    Ensemble(Arc<Ensemble>),
}

/// Real ZooKeeper under test, each client behind its own fault proxies.
pub struct ZkHarness {
    servers: Servers,
    /// Every client's session timeout.
    session: Duration,
    clients: ProxiedClients<ZkBackend>,
}

impl ZkHarness {
    /// Starts one server (a JVM start takes about a second); sessions of [`SESSION`].
    // Each test file builds one of the two variants.
    #[allow(dead_code)]
    pub async fn start() -> ZkHarness {
        let zk = ZooKeeper::start()
            .await
            .unwrap_or_else(|e| panic!("starting zookeeper: {e}"));
        ZkHarness::over(Servers::Standalone(Box::new(zk)), SESSION)
    }

    /// Runs on `ensemble` (whose test kills and restarts members) with sessions of `session`.
    /// The servers cannot be paused: stopping the whole ensemble would expire every session.
    // Each test file builds one of the two variants.
    #[allow(dead_code)]
    pub fn ensemble(ensemble: Arc<Ensemble>, session: Duration) -> ZkHarness {
        ZkHarness::over(Servers::Ensemble(ensemble), session)
    }

    fn over(servers: Servers, session: Duration) -> ZkHarness {
        ZkHarness {
            servers,
            session,
            clients: ProxiedClients::new(ProxyMode::Refuse),
        }
    }

    /// A client configuration for `hosts` with the harness's session timeout.
    pub fn config(&self, hosts: &str) -> tumbler_core::Result<ZkConfig> {
        ZkConfig::new(hosts)?.session_timeout(self.session)
    }

    fn servers(&self) -> &[ZooKeeper] {
        match &self.servers {
            Servers::Standalone(zk) => std::slice::from_ref(zk.as_ref()),
            Servers::Ensemble(e) => e.ens.nodes(),
        }
    }

    /// Every server, directly (no proxy).
    pub fn connect_string(&self) -> String {
        match &self.servers {
            Servers::Standalone(zk) => zk.connect_string(),
            Servers::Ensemble(e) => e.ens.connect_string(),
        }
    }

    /// The one server, or `Unsupported` on an ensemble (which is never stopped whole).
    fn standalone(&self) -> HookResult<&ZooKeeper> {
        match &self.servers {
            Servers::Standalone(zk) => Ok(zk.as_ref()),
            Servers::Ensemble(_) => Err(HookError::Unsupported(
                "stopping the whole ensemble would expire the sentinels' sessions; the \
                 standalone suite stalls its server"
                    .into(),
            )),
        }
    }
}

#[async_trait]
impl Harness for ZkHarness {
    fn name(&self) -> String {
        match &self.servers {
            Servers::Standalone(_) => "zookeeper".into(),
            Servers::Ensemble(_) => "zookeeper-ensemble".into(),
        }
    }

    async fn client(&self) -> Result<TestClient, String> {
        let servers: Vec<_> = self.servers().iter().map(ZooKeeper::addr).collect();
        let proxies = proxies_to(&servers).await?;
        let config = self.config(&hosts(&proxies)).map_err(|e| e.to_string())?;
        let backend = ZkBackend::connect(config)
            .await
            .map_err(|e| format!("connect through the proxies: {e}"))?;
        Ok(self.clients.add(backend, proxies))
    }

    fn crash_release_bound(&self) -> Duration {
        match &self.servers {
            Servers::Standalone(_) => self.session * 3,
            Servers::Ensemble(_) => self.session * 2 + Duration::from_secs(2),
        }
    }

    /// Closes the session from a second connection; see `shared/zk_hooks.rs`.
    async fn expire_session(&self, client: &TestClient) -> HookResult {
        zk_hooks::expire_session(&self.clients, client, &self.connect_string(), self.session).await
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        self.clients.cut(client)
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        self.clients.heal(client)
    }

    fn hold_ttl(&self) -> Duration {
        self.session
    }

    /// Issue 12 A.2: the session timeout (the server expires sessions on its tick), plus slack.
    fn killed_waiter_bound(&self) -> Duration {
        self.session + Duration::from_secs(4)
    }

    /// No request timeout is configured: the backend's limit is the session timeout.
    fn request_timeout(&self) -> Duration {
        self.session
    }

    async fn spawn_waiter(&self, name: &LockName, _ttl: Duration) -> HookResult<Box<dyn Holder>> {
        zk_hooks::spawn_waiter(&self.connect_string(), self.session, name).await
    }

    fn bad_urls(&self) -> HookResult<Vec<(String, &'static str)>> {
        let port = self.servers().first().map_or(2181, ZooKeeper::port);
        Ok(zk_hooks::bad_urls(port))
    }

    async fn pause_server(&self) -> HookResult {
        self.standalone()?
            .pause()
            .map_err(|e| HookError::Failed(format!("stopping zookeeper: {e}")))
    }

    async fn resume_server(&self) -> HookResult {
        self.standalone()?
            .resume()
            .map_err(|e| HookError::Failed(format!("continuing zookeeper: {e}")))
    }

    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        zk_hooks::write_foreign(&self.connect_string(), name, what).await
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        zk_hooks::spawn_holder(&self.connect_string(), self.session, name).await
    }

    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        zk_hooks::spawn_leader(&self.connect_string(), self.session, name).await
    }

    /// Restarts the server, or every member of the ensemble at once (with their data).
    async fn restart_server(&self) -> HookResult {
        let ensemble = match &self.servers {
            Servers::Standalone(zk) => {
                return zk
                    .restart()
                    .await
                    .map_err(|e| HookError::Failed(format!("restarting zookeeper: {e}")))
            }
            Servers::Ensemble(e) => e,
        };
        let _topology = ensemble.topology.lock().await;
        let [a, b, c] = [0, 1, 2].map(|i| ensemble.ens.node(i));
        let (a, b, c) = tokio::join!(a.restart(), b.restart(), c.restart());
        for result in [a, b, c] {
            result.map_err(|e| HookError::Failed(format!("restarting a member: {e}")))?;
        }
        ensemble
            .ens
            .leader()
            .await
            .map(|_| ())
            .map_err(|e| HookError::Failed(format!("no leader after the restart: {e}")))
    }

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Ok(
            match ZkConfig::new(&self.connect_string()).and_then(|c| c.session_timeout(ttl)) {
                Ok(config) => config.connect().await,
                Err(e) => Err(e),
            },
        )
    }

    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
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
