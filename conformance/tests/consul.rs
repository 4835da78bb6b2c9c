//! The whole conformance suite on the Consul backend, against testkit's in-process Consul HTTP
//! API test server (no Consul build can be installed here; `consul_real.rs` runs the same suite
//! against a real agent when `CONSUL_HTTP_ADDR` is set).
//!
//! Every case gets its own server; every client reaches it through its own fault proxy, so its
//! connection can be cut alone. Sessions have a 3 s TTL (the server's minimum is lowered to 1 s
//! for this) and a 1 s lock-delay.
//!
//! `restart_server`: the test server keeps its state in memory and has no process to restart.
//! The hook reproduces what clients see when a Consul server that keeps its Raft state restarts:
//! every connection is reset and refused for 3 × TTL, then the same state is served again. The
//! session timers keep running, so every session expires during the outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backend_consul::{ConsulBackend, ConsulConfig};
use conformance::routes::{hosts, proxies_to};
use conformance::{
    Harness, Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient,
};
use lockcore::{LockName, SharedBackend};
use testkit::consul::{ConsulServer, ConsulServerOptions};
use testkit::proxy::ProxyMode;

/// Session TTL of every client.
const TTL: Duration = Duration::from_secs(3);
/// Lock-delay of every client.
const LOCK_DELAY: Duration = Duration::from_secs(1);
/// URL parameters of every client: short TTL, short deadlines.
const PARAMS: &str = "ttl=3s&lock_delay=1s&request_timeout=2s&connect_timeout=2s&query_wait=30s";

fn url(addr: impl std::fmt::Display) -> String {
    format!("consul://{addr}/?{PARAMS}")
}

struct ConsulHarness {
    server: ConsulServer,
    clients: ProxiedClients<ConsulBackend>,
}

impl ConsulHarness {
    async fn start() -> ConsulHarness {
        let options = ConsulServerOptions::default().with_min_session_ttl(Duration::from_secs(1));
        let server = ConsulServer::start_with(options)
            .await
            .unwrap_or_else(|e| panic!("cannot start the Consul test server: {e}"));
        ConsulHarness {
            server,
            clients: ProxiedClients::new(ProxyMode::Blackhole),
        }
    }
}

#[async_trait]
impl Harness for ConsulHarness {
    fn name(&self) -> String {
        "consul".into()
    }

    async fn client(&self) -> Result<TestClient, String> {
        let proxies = proxies_to(&[self.server.addr()]).await?;
        let config = ConsulConfig::from_url(&url(hosts(&proxies))).map_err(|e| e.to_string())?;
        let backend = Arc::new(
            ConsulBackend::connect(config)
                .await
                .map_err(|e| e.to_string())?,
        );
        Ok(self.clients.add(backend, proxies))
    }

    fn crash_release_bound(&self) -> Duration {
        TTL * 2 + LOCK_DELAY + Duration::from_secs(5)
    }

    async fn expire_session(&self, client: &TestClient) -> HookResult {
        let ids = self.clients.backend(client)?.session_ids();
        if ids.is_empty() {
            return Err(HookError::Failed("the client has no live session".into()));
        }
        for id in ids {
            self.server.invalidate_session(&id);
        }
        Ok(())
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
            &url(self.server.addr()),
            name.as_str(),
            Duration::from_secs(30),
        )
        .await
    }

    async fn restart_server(&self) -> HookResult {
        for proxy in self.clients.all_proxies() {
            proxy.set_mode(ProxyMode::Refuse);
            proxy.cut_all();
        }
        self.server.cut_connections();
        // The outage itself is the fault under test, not a wait for something to happen.
        tokio::time::sleep(TTL * 3).await;
        for proxy in self.clients.all_proxies() {
            proxy.set_mode(ProxyMode::Pass);
        }
        Ok(())
    }

    async fn connect_with_ttl(&self, ttl: Duration) -> HookResult<lockcore::Result<SharedBackend>> {
        Ok(ConsulConfig::new(self.server.http_addr())
            .session_ttl(ttl)
            .connect()
            .await)
    }

    async fn connect_unreachable(&self) -> HookResult<lockcore::Result<SharedBackend>> {
        let port = testkit::try_free_port().map_err(|e| HookError::Failed(e.to_string()))?;
        Ok(ConsulConfig::new(format!("127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(2))
            .connect()
            .await)
    }
}

async fn harness() -> Arc<dyn Harness> {
    Arc::new(ConsulHarness::start().await)
}

conformance::suite!(harness);

/// A holder process killed without cleanup: its lock is free again after Consul invalidates
/// its session (2 × TTL after its last renewal) plus the lock-delay, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holder_frees_after_invalidation_plus_lock_delay() {
    let h = ConsulHarness::start().await;
    let name = LockName::new(format!("crash-bounds/{}", std::process::id())).unwrap();
    let mut holder = h
        .spawn_holder(&name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sessions_before = h.server.session_ids();
    let rival = h.client().await.unwrap();
    let mutex = rival.locks.mutex(&name).unwrap();
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "the lock was free while the holder lived"
    );
    let waiting = tokio::spawn(async move {
        let guard = mutex.lock_timeout(Duration::from_secs(60)).await;
        (Instant::now(), guard)
    });
    holder.kill().await.unwrap_or_else(|e| panic!("{e}"));
    let killed = Instant::now();
    // Wait for the agent to invalidate the holder's session: the server-side event the lock's
    // freedom must follow.
    let holder_sessions: Vec<String> = sessions_before.clone();
    let invalidated = loop {
        let live = h.server.session_ids();
        if !holder_sessions.iter().any(|id| live.contains(id)) {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the holder's session never expired"
        );
        assert!(
            !waiting.is_finished(),
            "the rival got the lock before the holder's session was invalidated"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let since_kill = invalidated - killed;
    // The holder renewed every TTL/2, so the session outlived the kill by 1.5..2 TTL.
    assert!(
        since_kill >= TTL * 3 / 2 - Duration::from_millis(300),
        "session invalidated {since_kill:?} after the kill, sooner than 1.5 × TTL"
    );
    let (granted_at, guard) = waiting.await.unwrap();
    let guard = guard
        .unwrap()
        .expect("the rival did not get the lock within 60 s");
    let after_invalidation = granted_at.saturating_duration_since(invalidated);
    assert!(
        after_invalidation >= LOCK_DELAY - Duration::from_millis(50),
        "the rival got the lock {after_invalidation:?} after the invalidation, inside the {LOCK_DELAY:?} lock-delay"
    );
    assert!(
        after_invalidation <= LOCK_DELAY + Duration::from_secs(3),
        "the rival waited {after_invalidation:?} after the lock-delay ended"
    );
    assert!(guard.fencing_token() > holder.token());
    guard.release().await.unwrap();
}
