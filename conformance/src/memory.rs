//! The harness for the in-process memory backend: the reference the suite is validated on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lockcore::memory::{MemoryBackend, MemoryOptions, MemoryStore};
use lockcore::{LockName, MutexGuard, SharedBackend};

use crate::harness::{Harness, Holder, HookError, HookResult, TestClient};

/// The session TTL the memory harness uses.
pub const MEMORY_TTL: Duration = Duration::from_secs(1);

/// Clients of one private [`MemoryStore`], with every fault hook simulated in-process.
pub struct MemoryHarness {
    store: MemoryStore,
    options: MemoryOptions,
    bound: Duration,
    pause_on_connect: bool,
    clients: Mutex<Vec<Arc<MemoryBackend>>>,
}

impl Default for MemoryHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryHarness {
    /// A fresh store; sessions of [`MEMORY_TTL`].
    pub fn new() -> Self {
        let options = MemoryOptions::default()
            .session_ttl(Some(MEMORY_TTL))
            .unwrap_or_default();
        Self::with_options(options)
    }

    /// A fresh store whose clients use `options`.
    pub fn with_options(options: MemoryOptions) -> Self {
        MemoryHarness {
            store: MemoryStore::new(),
            options,
            bound: MEMORY_TTL * 3,
            pause_on_connect: false,
            clients: Mutex::new(Vec::new()),
        }
    }

    /// Clients never renew their sessions (used by a mutant).
    pub fn pausing_clients(mut self) -> Self {
        self.pause_on_connect = true;
        self
    }

    /// The store behind every client.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    fn backend(&self, client: &TestClient) -> HookResult<Arc<MemoryBackend>> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(client.index)
            .cloned()
            .ok_or_else(|| HookError::Failed(format!("no client {}", client.index)))
    }

    /// Connects a client and returns it with its concrete backend.
    pub async fn connect(&self) -> Result<(TestClient, Arc<MemoryBackend>), String> {
        let backend = self
            .store
            .connect_client(self.options)
            .await
            .map_err(|e| e.to_string())?;
        if self.pause_on_connect {
            backend.pause();
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.push(backend.clone());
        let client = TestClient {
            locks: backend.clone() as SharedBackend,
            index: clients.len() - 1,
        };
        Ok((client, backend))
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    fn name(&self) -> String {
        "memory".into()
    }

    async fn client(&self) -> Result<TestClient, String> {
        Ok(self.connect().await?.0)
    }

    fn crash_release_bound(&self) -> Duration {
        self.bound
    }

    async fn expire_session(&self, client: &TestClient) -> HookResult {
        self.backend(client)?.expire_session();
        Ok(())
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        self.backend(client)?.set_reachable(false);
        Ok(())
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        self.backend(client)?.set_reachable(true);
        Ok(())
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        let (client, backend) = self.connect().await.map_err(HookError::Failed)?;
        let guard = client
            .locks
            .mutex(name)
            .map_err(|e| HookError::Failed(e.to_string()))?
            .lock()
            .await
            .map_err(|e| HookError::Failed(e.to_string()))?;
        Ok(Box::new(MemoryHolder {
            token: guard.fencing_token(),
            guard: Some(guard),
            backend,
        }))
    }

    async fn restart_server(&self) -> HookResult {
        self.store.restart();
        Ok(())
    }

    async fn connect_with_ttl(&self, ttl: Duration) -> HookResult<lockcore::Result<SharedBackend>> {
        Ok(match MemoryOptions::default().session_ttl(Some(ttl)) {
            Ok(options) => self.store.connect(options).await,
            Err(e) => Err(e),
        })
    }

    async fn connect_unreachable(&self) -> HookResult<lockcore::Result<SharedBackend>> {
        Err(HookError::Unsupported(
            "the memory store is in-process and always reachable".into(),
        ))
    }
}

/// An in-process holder: "killing" it makes its client behave like a dead process.
struct MemoryHolder {
    token: u64,
    guard: Option<MutexGuard>,
    backend: Arc<MemoryBackend>,
}

#[async_trait]
impl Holder for MemoryHolder {
    fn token(&self) -> u64 {
        self.token
    }

    async fn kill(&mut self) -> HookResult {
        self.backend.crash();
        // A killed process runs no destructors.
        std::mem::forget(self.guard.take());
        Ok(())
    }

    async fn pause(&mut self) -> HookResult {
        self.backend.pause();
        Ok(())
    }

    async fn resume(&mut self) -> HookResult {
        self.backend.resume();
        Ok(())
    }

    async fn wait_lost(&mut self, within: Duration) -> HookResult<bool> {
        let Some(guard) = self.guard.as_ref() else {
            return Err(HookError::Failed("the holder was killed".into()));
        };
        Ok(tokio::time::timeout(within, guard.lost()).await.is_ok())
    }
}
