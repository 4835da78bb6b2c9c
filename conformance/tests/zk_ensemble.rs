//! The whole conformance suite on a 3-node ZooKeeper ensemble whose leader is killed twice
//! while the cases run (and restarted so that it rejoins).
//!
//! Checked: every case passes (no safety violation in any recorded history), and three
//! sentinel clients that hold a lock through both leader changes keep their sessions: their
//! `lost()` never fires (their sessions survive a reconnect to another member), nobody else can
//! take their locks, and their releases are confirmed at the end.

#[path = "shared/zk_hooks.rs"]
mod zk_hooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backend_zk::{ZkBackend, ZkConfig};
use conformance::routes::{hosts, proxies_to};
use conformance::runner::{run_all, Outcome};
use conformance::{Harness, Holder, HookError, HookResult, ProxiedClients, TestClient};
use lockcore::{LockName, MutexGuard, SharedBackend};
use testkit::proxy::ProxyMode;
use testkit::zk::ZkEnsemble;

/// The session timeout of every client: `lost()` fires after 2/3 of it without the leader, so
/// this rides out an election plus the client's reconnect backoff on a loaded machine.
const SESSION: Duration = Duration::from_secs(10);
/// When the leader is killed, counted from the start of the run.
const KILLS_AT: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(40)];
/// How long a sentinel may take to reconnect after a new leader is elected.
const SETTLE: Duration = Duration::from_secs(20);

struct EnsembleHarness {
    ens: ZkEnsemble,
    /// Held while members are killed or restarted, so the chaos and `restart_server` do not mix.
    topology: tokio::sync::Mutex<()>,
    clients: ProxiedClients<ZkBackend>,
}

impl EnsembleHarness {
    fn config(&self, hosts: &str) -> lockcore::Result<ZkConfig> {
        ZkConfig::new(hosts)?.session_timeout(SESSION)
    }
}

#[async_trait]
impl Harness for EnsembleHarness {
    fn name(&self) -> String {
        "zookeeper-ensemble".into()
    }

    /// A client that reaches every member through its own fault proxy.
    async fn client(&self) -> Result<TestClient, String> {
        let nodes: Vec<_> = self.ens.nodes().iter().map(|node| node.addr()).collect();
        let proxies = proxies_to(&nodes).await?;
        let config = self.config(&hosts(&proxies)).map_err(|e| e.to_string())?;
        let backend = ZkBackend::connect(config)
            .await
            .map_err(|e| format!("connect through the proxies: {e}"))?;
        Ok(self.clients.add(backend, proxies))
    }

    fn crash_release_bound(&self) -> Duration {
        SESSION * 2 + Duration::from_secs(2)
    }

    /// Closes the session from a second connection; see `shared/zk_hooks.rs`.
    async fn expire_session(&self, client: &TestClient) -> HookResult {
        zk_hooks::expire_session(&self.clients, client, &self.ens.connect_string(), SESSION).await
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        self.clients.cut(client)
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        self.clients.heal(client)
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        zk_hooks::spawn_holder(&self.ens.connect_string(), SESSION, name).await
    }

    /// Restarts every member at once (with their data).
    async fn restart_server(&self) -> HookResult {
        let _topology = self.topology.lock().await;
        let [a, b, c] = [0, 1, 2].map(|i| self.ens.node(i));
        let (a, b, c) = tokio::join!(a.restart(), b.restart(), c.restart());
        for result in [a, b, c] {
            result.map_err(|e| HookError::Failed(format!("restarting a member: {e}")))?;
        }
        self.ens
            .leader()
            .await
            .map(|_| ())
            .map_err(|e| HookError::Failed(format!("no leader after the restart: {e}")))
    }

    async fn connect_with_ttl(&self, ttl: Duration) -> HookResult<lockcore::Result<SharedBackend>> {
        Ok(
            match ZkConfig::new(&self.ens.connect_string()).and_then(|c| c.session_timeout(ttl)) {
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

/// A client holding one lock through the leader changes.
struct Sentinel {
    backend: Arc<ZkBackend>,
    guard: MutexGuard,
    session: Option<String>,
}

/// Kills the leader at each of [`KILLS_AT`] (unless the run is over), waits for a new leader,
/// checks the sentinels, and restarts the killed member. Returns what went wrong.
async fn chaos(
    harness: Arc<EnsembleHarness>,
    sentinels: Arc<Vec<Sentinel>>,
    rival: SharedBackend,
    started: Instant,
) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut kills = 0;
    for at in KILLS_AT {
        tokio::time::sleep_until((started + at).into()).await;
        let _topology = harness.topology.lock().await;
        let killed = match harness.ens.kill_leader().await {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("killing the leader: {e}"));
                continue;
            }
        };
        kills += 1;
        let killed_at = Instant::now();
        if let Err(e) = harness.ens.leader().await {
            problems.push(format!("no new leader: {e}"));
        }
        tracing::info!(after = ?killed_at.elapsed(), killed, "new leader elected");
        problems.extend(check_sentinels(&sentinels, &rival).await);
        if let Err(e) = harness.ens.restart(killed).await {
            problems.push(format!("restarting member {killed}: {e}"));
        }
    }
    (kills, problems)
}

/// Every sentinel reconnects, keeps its session and its lock, and reports no loss.
async fn check_sentinels(sentinels: &[Sentinel], rival: &SharedBackend) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, sentinel) in sentinels.iter().enumerate() {
        // A write through the sentinel's session proves it is connected again.
        let probe = sentinel.backend.clone() as SharedBackend;
        let probed = tokio::time::timeout(SETTLE, async {
            loop {
                match probe.mutex(format!("probe/{i}")) {
                    Ok(m) => match m.try_lock().await {
                        Ok(Some(g)) => return g.release().await,
                        Ok(None) => return Ok(()),
                        Err(e) if e.is_transient() => continue,
                        Err(e) => return Err(e),
                    },
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match probed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("sentinel {i}: probe failed: {e}")),
            Err(_) => problems.push(format!("sentinel {i}: not reconnected within {SETTLE:?}")),
        }
        if let Some(reason) = sentinel.guard.lost_reason() {
            problems.push(format!("sentinel {i}: false lost(): {reason}"));
        }
        if sentinel.backend.session_id() != sentinel.session {
            problems.push(format!(
                "sentinel {i}: session changed from {:?} to {:?}",
                sentinel.session,
                sentinel.backend.session_id()
            ));
        }
        match rival.mutex(format!("sentinel/{i}")) {
            Ok(m) => match m.try_lock().await {
                Ok(None) => {}
                Ok(Some(_)) => problems.push(format!("sentinel {i}: a rival got its lock")),
                Err(e) => problems.push(format!("sentinel {i}: rival's try failed: {e}")),
            },
            Err(e) => problems.push(format!("sentinel {i}: {e}")),
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_an_ensemble_whose_leader_is_killed_mid_run() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let ens = ZkEnsemble::start(3)
        .await
        .unwrap_or_else(|e| panic!("starting the ensemble: {e}"));
    let harness = Arc::new(EnsembleHarness {
        ens,
        topology: tokio::sync::Mutex::new(()),
        clients: ProxiedClients::new(ProxyMode::Refuse),
    });
    let hosts = harness.ens.connect_string();
    let connect = || async {
        let config = harness.config(&hosts).expect("config");
        ZkBackend::connect(config).await.expect("connect")
    };
    let mut sentinels = Vec::new();
    for i in 0..3 {
        let backend = connect().await;
        let guard = (backend.clone() as SharedBackend)
            .mutex(format!("sentinel/{i}"))
            .expect("mutex")
            .lock()
            .await
            .expect("sentinel lock");
        let session = backend.session_id();
        sentinels.push(Sentinel {
            backend,
            guard,
            session,
        });
    }
    let sentinels = Arc::new(sentinels);
    let rival = connect().await as SharedBackend;

    let started = Instant::now();
    let chaos = tokio::spawn(chaos(
        harness.clone(),
        sentinels.clone(),
        rival.clone(),
        started,
    ));
    let results = run_all(harness.clone(), 1).await;
    let run_took = started.elapsed();
    let (kills, mut problems) = chaos.await.expect("chaos task");

    let mut passed = 0;
    for (case, outcome) in &results {
        match outcome {
            Outcome::Passed => passed += 1,
            Outcome::Skipped(why) => problems.push(format!("{} skipped: {why}", case.name)),
            Outcome::Failed(why) => problems.push(format!("{} failed: {why}", case.name)),
        }
    }
    problems.extend(check_sentinels(&sentinels, &rival).await);
    let sentinels = Arc::try_unwrap(sentinels)
        .unwrap_or_else(|_| panic!("the chaos task still holds the sentinels"));
    for (i, sentinel) in sentinels.into_iter().enumerate() {
        if let Err(e) = sentinel.guard.release().await {
            problems.push(format!("sentinel {i}: release not confirmed: {e}"));
        }
    }
    eprintln!(
        "zookeeper ensemble: {passed}/{} cases passed in {run_took:?}, {kills} leader kills",
        results.len()
    );
    assert_eq!(
        kills,
        KILLS_AT.len(),
        "the leader was not killed while the suite ran"
    );
    assert!(
        run_took > KILLS_AT[KILLS_AT.len() - 1],
        "the suite finished before the last kill"
    );
    assert!(problems.is_empty(), "problems:\n{}", problems.join("\n"));
}
