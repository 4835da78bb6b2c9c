//! The whole conformance suite on real etcd: `standalone::*` on one server, `cluster::*` on a
//! 3-member cluster whose leader is killed while each case runs.
//!
//! Every case gets its own server or cluster, so restarting it in one case disturbs no other.
//! Every client reaches each member through its own fault proxy, so its connection can be cut
//! alone. Leases last 2 s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backend_etcd::{EtcdBackend, EtcdConfig};
use conformance::routes::{hosts, proxies_to};
use conformance::{
    Harness, Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient,
};
use lockcore::{ConnectionEvent, LockBackend, LockName, SharedBackend};
use serde_json::json;
use testkit::etcd::{Etcd, EtcdCluster};
use testkit::proxy::ProxyMode;

/// URL parameters of every client: short lease, short deadlines.
const PARAMS: &str = "timeout=2s&connect_timeout=5s";

/// The servers under test.
enum Store {
    Standalone(Etcd),
    Cluster {
        cluster: EtcdCluster,
        /// When to kill the leader, counted from the case's first client.
        kill_after: Duration,
        /// Kills the leader a little while into the case (scheduled by the first client).
        killer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    },
}

impl Store {
    fn members(&self) -> Vec<&Etcd> {
        match self {
            Store::Standalone(e) => vec![e],
            Store::Cluster { cluster, .. } => cluster.members().iter().collect(),
        }
    }

    /// Schedules the leader kill, once per case, `kill_after` from now.
    fn arm_killer(self: &Arc<Self>) {
        let Store::Cluster {
            kill_after, killer, ..
        } = &**self
        else {
            return;
        };
        let mut killer = killer.lock().unwrap_or_else(|p| p.into_inner());
        if killer.is_some() {
            return;
        }
        let store = Arc::downgrade(self);
        let delay = *kill_after;
        *killer = Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(store) = store.upgrade() else { return };
            if let Store::Cluster { cluster, .. } = &*store {
                match cluster.kill_leader().await {
                    Ok(i) => tracing::info!(member = i, ?delay, "killed the etcd leader"),
                    Err(e) => tracing::warn!(%e, "could not kill the etcd leader"),
                }
            }
        }));
    }

    /// Cancels a pending leader kill (the handle stays, so the case does not schedule another).
    fn stop_killer(&self) {
        if let Store::Cluster { killer, .. } = self {
            if let Some(task) = killer.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                task.abort();
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_killer();
    }
}

struct EtcdHarness {
    store: Arc<Store>,
    clients: ProxiedClients<EtcdBackend>,
}

impl EtcdHarness {
    /// The lease TTL: 2 s on one server; 3 s on the cluster, where a leader election (up to
    /// about a second here) must not eat the whole renewal margin.
    fn ttl(&self) -> Duration {
        match &*self.store {
            Store::Standalone(_) => Duration::from_secs(2),
            Store::Cluster { .. } => Duration::from_secs(3),
        }
    }

    /// Every client's URL parameters.
    fn params(&self) -> String {
        format!("ttl={}s&{PARAMS}", self.ttl().as_secs())
    }

    /// Every member, directly (no proxy).
    fn direct_hosts(&self) -> String {
        self.store
            .members()
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Revokes `lease` through any member that answers.
    async fn revoke(&self, lease: i64) -> HookResult {
        let mut last = String::from("no member is running");
        for member in self.store.members() {
            if member.pid().is_none() {
                continue;
            }
            match member
                .call("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.to_string().contains("lease not found") => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(HookError::Failed(format!(
            "revoking lease {lease:x}: {last}"
        )))
    }
}

#[async_trait]
impl Harness for EtcdHarness {
    fn name(&self) -> String {
        match &*self.store {
            Store::Standalone(_) => "etcd".into(),
            Store::Cluster { .. } => "etcd-cluster".into(),
        }
    }

    async fn client(&self) -> Result<TestClient, String> {
        let members: Vec<_> = self.store.members().into_iter().map(Etcd::addr).collect();
        let proxies = proxies_to(&members).await?;
        let url = format!("etcd://{}?{}", hosts(&proxies), self.params());
        let backend = EtcdConfig::from_url(&url)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect through the proxies: {e}"))?;
        self.store.arm_killer();
        Ok(self.clients.add(backend, proxies))
    }

    fn crash_release_bound(&self) -> Duration {
        self.ttl() * 3
    }

    /// Revokes the client's lease through another connection, then waits until the client
    /// has noticed (its keeper reports `Lost` and moves to a new lease).
    async fn expire_session(&self, client: &TestClient) -> HookResult {
        let backend = self.clients.backend(client)?;
        let mut events = backend.connection_events();
        let lease = backend
            .lease_id()
            .ok_or_else(|| HookError::Failed("the client has no lease".into()))?;
        self.revoke(lease).await?;
        let noticed = tokio::time::timeout(self.ttl() * 3, async {
            loop {
                if events.current() == ConnectionEvent::Lost
                    || backend.lease_id().is_some_and(|now| now != lease)
                {
                    return;
                }
                if events.next().await.is_none() {
                    return;
                }
            }
        })
        .await;
        noticed.map_err(|_| HookError::Failed("the client did not notice its revoked lease".into()))
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        self.clients.cut(client)
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        self.clients.heal(client)
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        let url = format!("etcd://{}?{}", self.direct_hosts(), self.params());
        ProcessHolder::spawn(
            env!("CARGO_BIN_EXE_holder"),
            &url,
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    async fn restart_server(&self) -> HookResult {
        match &*self.store {
            Store::Standalone(e) => e
                .restart()
                .await
                .map_err(|e| HookError::Failed(format!("restarting etcd: {e}"))),
            Store::Cluster { cluster, .. } => {
                self.store.stop_killer();
                // Every member at once, as a whole-cluster outage: one member alone has no quorum.
                for member in cluster.members() {
                    member.kill().await;
                }
                let [a, b, c] = cluster.members() else {
                    return Err(HookError::Unsupported(
                        "restart needs a 3-member cluster".into(),
                    ));
                };
                let (a, b, c) = tokio::join!(a.restart(), b.restart(), c.restart());
                for result in [a, b, c] {
                    result.map_err(|e| HookError::Failed(format!("restarting a member: {e}")))?;
                }
                Ok(())
            }
        }
    }

    async fn connect_with_ttl(&self, ttl: Duration) -> HookResult<lockcore::Result<SharedBackend>> {
        let config = EtcdConfig::new([self.direct_hosts()]).ttl(ttl);
        Ok(match config {
            Ok(config) => config
                .connect()
                .await
                .map(|backend| backend as SharedBackend),
            Err(e) => Err(e),
        })
    }

    async fn connect_unreachable(&self) -> HookResult<lockcore::Result<SharedBackend>> {
        let port = testkit::free_port();
        Ok(backend_etcd::connect_url(&format!("etcd://127.0.0.1:{port}?connect_timeout=2s")).await)
    }
}

/// Logs to the test output when `RUST_LOG` is set.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}

mod standalone {
    use super::*;

    async fn harness() -> Arc<dyn Harness> {
        init_logging();
        let etcd = Etcd::start()
            .await
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        Arc::new(EtcdHarness {
            store: Arc::new(Store::Standalone(etcd)),
            clients: ProxiedClients::new(ProxyMode::Refuse),
        })
    }

    conformance::suite!(harness);
}

mod cluster {
    use super::*;

    /// When, after a case's first client connects, the leader is killed: cases differ, so
    /// the kill lands at different steps of different cases.
    fn kill_after() -> Duration {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        const DELAYS_MS: [u64; 5] = [0, 30, 80, 150, 300];
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as usize;
        Duration::from_millis(DELAYS_MS[n % DELAYS_MS.len()])
    }

    async fn harness() -> Arc<dyn Harness> {
        init_logging();
        let cluster = EtcdCluster::start(3)
            .await
            .unwrap_or_else(|e| panic!("starting an etcd cluster: {e}"));
        Arc::new(EtcdHarness {
            store: Arc::new(Store::Cluster {
                cluster,
                kill_after: kill_after(),
                killer: Mutex::new(None),
            }),
            clients: ProxiedClients::new(ProxyMode::Refuse),
        })
    }

    conformance::suite!(harness);
}
