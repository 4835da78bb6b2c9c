//! The etcd harness of `tests/etcd.rs` and the explorer (`tests/explore.rs`): one server
//! ([`EtcdHarness::standalone`], the explorer's) or a 3-member cluster whose leader is killed
//! a while into each case ([`EtcdHarness::cluster`], the suite's `cluster::*`).
//!
//! Every client reaches each member through its own fault proxy, so its connection can be cut
//! alone. Leases last 2 s on one server, 5 s on the cluster.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use conformance::routes::{hosts, proxies_to};
use conformance::{
    Foreign, Harness, Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient,
};
use serde_json::json;
use testkit::etcd::{Etcd, EtcdCluster};
use testkit::proxy::ProxyMode;
use tumbler_core::{ConnectionEvent, LockBackend, LockName, SharedBackend};
use tumbler_etcd::{EtcdBackend, EtcdConfig};

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
        killer: Mutex<Option<Killer>>,
    },
}

impl Store {
    fn members(&self) -> Vec<&Etcd> {
        match self {
            Store::Standalone(e) => vec![e],
            Store::Cluster { cluster, .. } => cluster.members().iter().collect(),
        }
    }

    /// The members that run (a member the case's leader kill took down stays down).
    fn running(&self) -> Vec<&Etcd> {
        self.members()
            .into_iter()
            .filter(|m| m.pid().is_some())
            .collect()
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
        let (cancel, mut cancelled) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut cancelled => return,
            }
            let Some(store) = store.upgrade() else { return };
            if let Store::Cluster { cluster, .. } = &*store {
                // Not cancellable from here on: a kill stopped halfway would leave a member
                // signalled but not reaped, neither running nor known to be down.
                match cluster.kill_leader().await {
                    Ok(i) => tracing::info!(member = i, ?delay, "killed the etcd leader"),
                    Err(e) => tracing::warn!(%e, "could not kill the etcd leader"),
                }
            }
        });
        *killer = Some(Killer {
            cancel: Some(cancel),
            task: Some(task),
        });
    }

    /// Cancels a pending leader kill, or waits for one under way to finish, so the members'
    /// states are settled when this returns (the slot stays taken: the case schedules no
    /// other kill).
    async fn stop_killer(&self) {
        let Store::Cluster { killer, .. } = self else {
            return;
        };
        let task = {
            let mut killer = killer.lock().unwrap_or_else(|p| p.into_inner());
            let Some(killer) = killer.as_mut() else {
                return;
            };
            if let Some(cancel) = killer.cancel.take() {
                let _ = cancel.send(());
            }
            killer.task.take()
        };
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// A scheduled leader kill.
struct Killer {
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Store::Cluster { killer, .. } = self {
            let killer = killer.get_mut().unwrap_or_else(|p| p.into_inner());
            if let Some(task) = killer.as_ref().and_then(|k| k.task.as_ref()) {
                task.abort();
            }
        }
    }
}

/// Real etcd under test, each client behind its own fault proxies.
pub struct EtcdHarness {
    store: Arc<Store>,
    clients: ProxiedClients<EtcdBackend>,
}

impl EtcdHarness {
    /// One server.
    pub async fn standalone() -> EtcdHarness {
        let etcd = Etcd::start()
            .await
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        EtcdHarness::over(Store::Standalone(etcd))
    }

    /// A 3-member cluster whose leader is killed `kill_after` after the first client connects
    /// (once; a pause or restart cancels a kill not yet begun and waits for one under way).
    pub async fn cluster(kill_after: Duration) -> EtcdHarness {
        let cluster = EtcdCluster::start(3)
            .await
            .unwrap_or_else(|e| panic!("starting an etcd cluster: {e}"));
        EtcdHarness::over(Store::Cluster {
            cluster,
            kill_after,
            killer: Mutex::new(None),
        })
    }

    fn over(store: Store) -> EtcdHarness {
        EtcdHarness {
            store: Arc::new(store),
            clients: ProxiedClients::new(ProxyMode::Refuse),
        }
    }

    /// The lease TTL: 2 s on one server; 5 s on the cluster. A hold is vouched for 3/4 of the
    /// TTL after the last answered keep-alive was sent, and a keep-alive sent while the leader
    /// is killed is answered only once a new leader is elected: on a loaded 2-core machine that
    /// took over 1.5 s, more than a 3 s TTL leaves (CI lost a lease that way).
    fn ttl(&self) -> Duration {
        match &*self.store {
            Store::Standalone(_) => Duration::from_secs(2),
            Store::Cluster { .. } => Duration::from_secs(5),
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
        for member in self.store.running() {
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

    fn hold_ttl(&self) -> Duration {
        self.ttl()
    }

    /// Issue 12 A.2: 3 s whatever the lease TTL, plus slack.
    fn killed_waiter_bound(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// `timeout=2s` in every client's URL.
    fn request_timeout(&self) -> Duration {
        Duration::from_secs(2)
    }

    async fn spawn_waiter(&self, name: &LockName, ttl: Duration) -> HookResult<Box<dyn Holder>> {
        let url = format!(
            "etcd://{}?ttl={}s&{PARAMS}",
            self.direct_hosts(),
            ttl.as_secs().max(1)
        );
        ProcessHolder::spawn_waiting(
            env!("CARGO_BIN_EXE_holder"),
            &url,
            name.as_str(),
            Duration::from_secs(20),
        )
        .await
    }

    /// Stops every running member (SIGSTOP); a cluster's pending leader kill is cancelled first.
    async fn pause_server(&self) -> HookResult {
        self.store.stop_killer().await;
        for member in self.store.running() {
            member
                .pause()
                .map_err(|e| HookError::Failed(format!("stopping etcd: {e}")))?;
        }
        Ok(())
    }

    async fn resume_server(&self) -> HookResult {
        for member in self.store.running() {
            member
                .resume()
                .map_err(|e| HookError::Failed(format!("continuing etcd: {e}")))?;
        }
        Ok(())
    }

    /// Keys no tumbler backend writes, under the lock's `NAME/` (the suite's clients use no
    /// key prefix): a key whose name fits no row of backend-etcd's layout (`NAME/notes.txt`), and
    /// a semaphore contender whose value is not `<permits>/<limit>`. etcd keeps no fencing
    /// counter (tokens are revisions), so there is nothing to overflow.
    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        let (key, value) = match what {
            Foreign::WrongType => (format!("{name}/notes.txt"), "not a lock"),
            Foreign::GarbageCounter => (format!("{name}/#sem/ff_1"), "garbage"),
            Foreign::OverflowCounter => {
                return Err(HookError::Unsupported(
                    "etcd keeps no fencing counter: tokens are revisions".into(),
                ))
            }
        };
        // Any running member, retried while a leader is being elected.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = String::from("no member is running");
        loop {
            for member in self.store.running() {
                match member.put(&key, value).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HookError::Failed(format!("putting {key}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn bad_urls(&self) -> HookResult<Vec<(String, &'static str)>> {
        let port = self
            .store
            .members()
            .first()
            .map(|m| m.port())
            .unwrap_or(2379);
        Ok(vec![
            ("etcd://127.0.0.1:0".to_string(), "port 0"),
            (
                format!("etcd://127.0.0.1:{port},127.0.0.1:0"),
                "port 0 in the endpoint list",
            ),
            (
                format!("etcd://alice:secret@127.0.0.1:{port}?user=bob"),
                "credentials given twice",
            ),
        ])
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

    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        let url = format!("etcd://{}?{}", self.direct_hosts(), self.params());
        ProcessHolder::spawn_leader(
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
                self.store.stop_killer().await;
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

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        let endpoints = self
            .store
            .members()
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port()))
            .collect::<Vec<_>>();
        let config = EtcdConfig::new(endpoints).ttl(ttl);
        Ok(match config {
            Ok(config) => config.connect().await.map(tumbler_core::share),
            Err(e) => Err(e),
        })
    }

    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
        let port = testkit::free_port();
        Ok(tumbler_etcd::connect_url(&format!("etcd://127.0.0.1:{port}?connect_timeout=2s")).await)
    }
}
