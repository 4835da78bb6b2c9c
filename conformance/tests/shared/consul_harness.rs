//! The Consul harness of `tests/consul.rs` and the explorer (`tests/explore.rs`): testkit's
//! in-process Consul HTTP API test server, one fault proxy per client, sessions with a 3 s TTL
//! (the server's minimum is lowered to 1 s for this) and a 1 s lock-delay.
//!
//! `restart_server`: the test server keeps its state in memory and has no process to restart.
//! The hook reproduces what clients see when a Consul server that keeps its Raft state restarts:
//! every connection is reset and refused for 3 × TTL, then the same state is served again. The
//! session timers keep running, so every session expires during the outage.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conformance::routes::{hosts, proxies_to, SavedModes};
use conformance::{
    Foreign, Harness, Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient,
};
use testkit::consul::{ConsulServer, ConsulServerOptions};
use testkit::proxy::ProxyMode;
use tumbler_consul::{ConsulBackend, ConsulConfig};
use tumbler_core::{LockName, SharedBackend};

/// Session TTL of every client.
pub const TTL: Duration = Duration::from_secs(3);
/// Lock-delay of every client.
pub const LOCK_DELAY: Duration = Duration::from_secs(1);
/// URL parameters of every client: short TTL, short deadlines.
const PARAMS: &str = "ttl=3s&lock_delay=1s&request_timeout=2s&connect_timeout=2s&query_wait=30s";

fn url(addr: impl std::fmt::Display) -> String {
    format!("consul://{addr}/?{PARAMS}")
}

/// testkit's Consul HTTP API test server, each client behind its own fault proxy.
pub struct ConsulHarness {
    server: ConsulServer,
    clients: ProxiedClients<ConsulBackend>,
}

impl ConsulHarness {
    /// Starts the test server, with its smallest session TTL lowered to 1 s.
    pub async fn start() -> ConsulHarness {
        let options = ConsulServerOptions::default().with_min_session_ttl(Duration::from_secs(1));
        let server = ConsulServer::start_with(options)
            .await
            .unwrap_or_else(|e| panic!("cannot start the Consul test server: {e}"));
        ConsulHarness {
            server,
            clients: ProxiedClients::new(ProxyMode::Blackhole),
        }
    }

    /// The test server, for cases that watch its sessions.
    // Used by `tests/consul.rs`'s own case, not by the explorer.
    #[allow(dead_code)]
    pub fn server(&self) -> &ConsulServer {
        &self.server
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

    fn hold_ttl(&self) -> Duration {
        TTL
    }

    /// `request_timeout=2s` in every client's URL.
    fn request_timeout(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// A Consul waiter lives in its session, so it is started with the harness's session TTL
    /// and may block others for as long as a crashed holder ([`Harness::crash_release_bound`]).
    async fn spawn_waiter(&self, name: &LockName, _ttl: Duration) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn_waiting(
            env!("CARGO_BIN_EXE_holder"),
            &url(self.server.addr()),
            name.as_str(),
            Duration::from_secs(30),
        )
        .await
    }

    /// The test server stops answering (connections stay open, nothing is answered), as a
    /// stopped server process.
    async fn pause_server(&self) -> HookResult {
        self.server.pause();
        Ok(())
    }

    async fn resume_server(&self) -> HookResult {
        self.server.resume();
        Ok(())
    }

    /// A key of the lock written by someone else: `tumbler/NAME/.lock` with flags no Consul
    /// lock client uses. Consul locks keep no counter (tokens are Raft indexes), so the counter
    /// kinds are unsupported.
    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        if what != Foreign::WrongType {
            return Err(HookError::Unsupported(
                "Consul locks keep no fencing counter (tokens are Raft indexes)".into(),
            ));
        }
        put_kv(
            self.server.addr(),
            &format!("tumbler/{name}/.lock?flags=42"),
            b"not tumbler's",
        )
        .await
        .map_err(|e| HookError::Failed(format!("writing the foreign key: {e}")))
    }

    fn bad_urls(&self) -> HookResult<Vec<(String, &'static str)>> {
        Ok(vec![
            ("consul://127.0.0.1:0/".to_string(), "port 0"),
            (
                format!("consul://alice:secret@{}/?user=bob", self.server.addr()),
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
        ProcessHolder::spawn(
            env!("CARGO_BIN_EXE_holder"),
            &url(self.server.addr()),
            name.as_str(),
            Duration::from_secs(30),
        )
        .await
    }

    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        ProcessHolder::spawn_leader(
            env!("CARGO_BIN_EXE_holder"),
            &url(self.server.addr()),
            name.as_str(),
            Duration::from_secs(30),
        )
        .await
    }

    async fn restart_server(&self) -> HookResult {
        let proxies = self.clients.all_proxies();
        // Put back the modes the clients had: a cut the test made outlasts the restart.
        let saved = SavedModes::of(proxies.iter().cloned());
        for proxy in &proxies {
            proxy.set_mode(ProxyMode::Refuse);
            proxy.cut_all();
        }
        self.server.cut_connections();
        // The outage itself is the fault under test, not a wait for something to happen.
        tokio::time::sleep(TTL * 3).await;
        saved.restore();
        Ok(())
    }

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Ok(ConsulConfig::new(self.server.http_addr())
            .session_ttl(ttl)
            .connect()
            .await)
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

/// `PUT /v1/kv/<path>` with `body` on the server at `addr`, over plain HTTP/1.1.
async fn put_kv(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "PUT /v1/kv/{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    let reply = String::from_utf8_lossy(&reply);
    if reply.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the server answered {}",
            reply.lines().next().unwrap_or("nothing")
        )))
    }
}
