//! The whole conformance suite against a real Consul agent, when one is reachable.
//!
//! Set `CONSUL_HTTP_ADDR` (`host:port`, or an `http://`/`https://` URL) and, if ACLs are on,
//! `CONSUL_HTTP_TOKEN` (a token with `key_prefix "tumbler-conformance/"` write and `session`
//! write rights), then run `cargo test -p conformance --test consul_real -- --nocapture`.
//! Sessions use a 10 s TTL (a real agent's minimum) and a 1 s lock-delay, so the run takes a
//! few minutes. Without `CONSUL_HTTP_ADDR` the test reports itself skipped and why.
//!
//! Every case's keys live under a fresh `tumbler-conformance/<run>/` prefix. Clients of a plain
//! http agent reach it through their own fault proxy (so their connection can be cut alone);
//! with https the proxy would break hostname checks, so cuts are reported unsupported.
//! `restart_server` is unsupported: the agent is not ours to restart.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use conformance::routes::{hosts, proxies_to};
use conformance::runner::{report_line, run_all, Outcome};
use conformance::{
    Harness, Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient,
};
use testkit::proxy::ProxyMode;
use tumbler_consul::{ConsulBackend, ConsulConfig};
use tumbler_core::{LockName, SharedBackend};

/// A real agent's smallest session TTL.
const TTL: Duration = Duration::from_secs(10);
const LOCK_DELAY: Duration = Duration::from_secs(1);

struct RealConsul {
    /// The agent, as `CONSUL_HTTP_ADDR` and the other `CONSUL_HTTP_*` variables describe it.
    base: ConsulConfig,
    agent: SocketAddr,
    prefix: String,
    /// Clients of an https agent have no proxy.
    clients: ProxiedClients<ConsulBackend>,
}

impl RealConsul {
    fn from_env() -> Result<RealConsul, String> {
        let base = ConsulConfig::from_env()
            .session_ttl(TTL)
            .lock_delay(LOCK_DELAY)
            .request_timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(3))
            .query_wait(Duration::from_secs(30));
        let agent = base
            .address()
            .to_socket_addrs()
            .map_err(|e| format!("CONSUL_HTTP_ADDR {}: {e}", base.address()))?
            .next()
            .ok_or_else(|| format!("CONSUL_HTTP_ADDR {} resolves to nothing", base.address()))?;
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let prefix = format!("tumbler-conformance/{run}-{}/", std::process::id());
        Ok(RealConsul {
            base: base.prefix(prefix.clone()),
            agent,
            prefix,
            clients: ProxiedClients::new(ProxyMode::Blackhole),
        })
    }

    fn https(&self) -> bool {
        self.base.base_url().starts_with("https://")
    }

    /// Fails for an unknown client; reports cuts unsupported for a client without a proxy.
    fn check_proxied(&self, client: &TestClient) -> HookResult {
        if self.clients.get(client)?.1.is_empty() {
            return Err(HookError::Unsupported(
                "https agent: a TCP proxy in front of it would break hostname verification".into(),
            ));
        }
        Ok(())
    }

    /// The URL the holder process uses (the same agent, settings and prefix).
    fn holder_url(&self) -> String {
        let scheme = if self.https() { "consuls" } else { "consul" };
        let mut url = format!(
            "{scheme}://{}/?ttl=10s&lock_delay=1s&prefix={}",
            self.base.address(),
            self.prefix
        );
        if let Ok(token) = std::env::var("CONSUL_HTTP_TOKEN") {
            if !token.is_empty() {
                url.push_str(&format!("&token={token}"));
            }
        }
        if let Ok(ca) = std::env::var("CONSUL_CACERT") {
            if !ca.is_empty() {
                url.push_str(&format!("&tls_ca={ca}"));
            }
        }
        url
    }
}

#[async_trait]
impl Harness for RealConsul {
    fn name(&self) -> String {
        format!("consul-real({})", self.base.address())
    }

    async fn client(&self) -> Result<TestClient, String> {
        let (config, proxies) = if self.https() {
            (self.base.clone(), Vec::new())
        } else {
            let proxies = proxies_to(&[self.agent]).await?;
            let config = self.base.clone().agent(hosts(&proxies));
            (config, proxies)
        };
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
        // A second client destroys the sessions, as an operator would.
        let operator = ConsulBackend::connect(self.base.clone())
            .await
            .map_err(|e| HookError::Failed(format!("operator client: {e}")))?;
        for id in ids {
            operator
                .destroy_session(&id)
                .await
                .map_err(|e| HookError::Failed(format!("destroying session {id}: {e}")))?;
        }
        tumbler_core::LockBackend::shutdown(&operator)
            .await
            .map_err(|e| HookError::Failed(e.to_string()))?;
        Ok(())
    }

    fn hold_ttl(&self) -> Duration {
        TTL
    }

    async fn spawn_waiter(&self, name: &LockName, _ttl: Duration) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn_waiting(
            env!("CARGO_BIN_EXE_holder"),
            &self.holder_url(),
            name.as_str(),
            Duration::from_secs(60),
        )
        .await
    }

    fn bad_urls(&self) -> HookResult<Vec<(String, &'static str)>> {
        Ok(vec![("consul://127.0.0.1:0/".to_string(), "port 0")])
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        self.check_proxied(client)?;
        self.clients.cut(client)
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        self.check_proxied(client)?;
        self.clients.heal(client)
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn(
            env!("CARGO_BIN_EXE_holder"),
            &self.holder_url(),
            name.as_str(),
            Duration::from_secs(60),
        )
        .await
    }

    async fn restart_server(&self) -> HookResult {
        Err(HookError::Unsupported(
            "the Consul agent at CONSUL_HTTP_ADDR is not this test's to restart".into(),
        ))
    }

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Ok(self.base.clone().session_ttl(ttl).connect().await)
    }

    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
        let port = testkit::try_free_port().map_err(|e| HookError::Failed(e.to_string()))?;
        Ok(ConsulConfig::new(format!("127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(2))
            .connect()
            .await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_a_real_agent() {
    if std::env::var("CONSUL_HTTP_ADDR").map_or(true, |v| v.is_empty()) {
        report_line(
            "SKIPPED consul_real::suite_on_a_real_agent: CONSUL_HTTP_ADDR is not set; set it \
             (and CONSUL_HTTP_TOKEN if ACLs are on) to run the conformance suite against a real \
             Consul agent",
        );
        return;
    }
    let harness = match RealConsul::from_env() {
        Ok(h) => Arc::new(h),
        Err(e) => panic!("cannot use the agent named by CONSUL_HTTP_ADDR: {e}"),
    };
    let results = run_all(harness.clone(), 4).await;
    let mut failed = Vec::new();
    for (case, outcome) in &results {
        match outcome {
            Outcome::Passed => report_line(&format!("ok      {}", case.name)),
            Outcome::Skipped(why) => report_line(&format!("SKIPPED {}: {why}", case.name)),
            Outcome::Failed(message) => {
                report_line(&format!("FAILED  {}: {message}", case.name));
                failed.push(case.name);
            }
        }
    }
    assert!(failed.is_empty(), "failed on the real agent: {failed:?}");
}
