//! The harness for the in-process memory backend: the reference the suite is validated on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tumbler_core::memory::{ForeignData, MemoryBackend, MemoryOptions, MemoryStore};
use tumbler_core::{Guard, LockName, SharedBackend};

use crate::harness::{Foreign, Harness, Holder, HookError, HookResult, TestClient};

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
        self.connect_with(self.options).await
    }

    /// Connects a client with `options` and returns it with its concrete backend.
    pub async fn connect_with(
        &self,
        options: MemoryOptions,
    ) -> Result<(TestClient, Arc<MemoryBackend>), String> {
        let backend = self
            .store
            .connect_client(options)
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

    fn hold_ttl(&self) -> Duration {
        self.options.ttl().unwrap_or(self.bound)
    }

    /// A crashed client's waiters leave at once; the bound is slack only.
    fn killed_waiter_bound(&self) -> Duration {
        Duration::from_secs(3)
    }

    fn request_timeout(&self) -> Duration {
        tumbler_core::memory::REQUEST_TIMEOUT
    }

    async fn spawn_waiter(&self, name: &LockName, ttl: Duration) -> HookResult<Box<dyn Holder>> {
        let options = MemoryOptions::default()
            .session_ttl(Some(ttl))
            .map_err(|e| HookError::Failed(e.to_string()))?;
        let (client, backend) = self
            .connect_with(options)
            .await
            .map_err(HookError::Failed)?;
        Ok(Box::new(MemoryWaiter::start(client, backend, name)?))
    }

    async fn pause_server(&self) -> HookResult {
        self.store.stall(true);
        Ok(())
    }

    async fn resume_server(&self) -> HookResult {
        self.store.stall(false);
        Ok(())
    }

    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        let data = match what {
            Foreign::WrongType => ForeignData::Record,
            Foreign::GarbageCounter => ForeignData::GarbageCounter,
            Foreign::OverflowCounter => ForeignData::OverflowingCounter,
        };
        self.store
            .write_foreign(name, data)
            .map_err(|e| HookError::Failed(e.to_string()))
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
            guard: Some(Box::new(guard)),
            backend,
        }))
    }

    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        let (client, backend) = self.connect().await.map_err(HookError::Failed)?;
        let leadership = client
            .locks
            .election(name)
            .map_err(|e| HookError::Failed(e.to_string()))?
            .campaign(format!("memory-leader-{}", client.index))
            .await
            .map_err(|e| HookError::Failed(e.to_string()))?;
        Ok(Box::new(MemoryHolder {
            token: leadership.term(),
            guard: Some(Box::new(leadership)),
            backend,
        }))
    }

    async fn restart_server(&self) -> HookResult {
        self.store.restart();
        Ok(())
    }

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Ok(match MemoryOptions::default().session_ttl(Some(ttl)) {
            Ok(options) => self.store.connect(options).await,
            Err(e) => Err(e),
        })
    }

    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Err(HookError::Unsupported(
            "the memory store is in-process and always reachable".into(),
        ))
    }
}

/// An in-process holder: "killing" it makes its client behave like a dead process.
struct MemoryHolder {
    token: u64,
    guard: Option<Box<dyn Guard>>,
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
        Ok(tokio::time::timeout(within, guard.signals().lost())
            .await
            .is_ok())
    }
}

/// An in-process waiter: a client waiting for a mutex in a task of its own. "Killing" it
/// crashes its client (the store drops its waits, as a server does for a closed connection)
/// and leaves the task to its fate, as a dead process's memory.
pub struct MemoryWaiter {
    backend: Arc<MemoryBackend>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MemoryWaiter {
    /// Starts `client` waiting for the mutex `name`.
    pub fn start(
        client: TestClient,
        backend: Arc<MemoryBackend>,
        name: &LockName,
    ) -> HookResult<Self> {
        let mutex = client
            .locks
            .mutex(name)
            .map_err(|e| HookError::Failed(e.to_string()))?;
        let task = tokio::spawn(async move {
            if let Ok(guard) = mutex.lock().await {
                // A dead process neither works nor releases: keep the guard without a drop.
                std::mem::forget(guard);
            }
        });
        Ok(MemoryWaiter {
            backend,
            task: Some(task),
        })
    }

    /// The waiting client's backend.
    pub fn backend(&self) -> &Arc<MemoryBackend> {
        &self.backend
    }

    /// Forgets the waiting task without cancelling it (a cancel would clean up).
    pub fn abandon(&mut self) {
        self.task.take();
    }
}

#[async_trait]
impl Holder for MemoryWaiter {
    fn token(&self) -> u64 {
        0
    }

    async fn kill(&mut self) -> HookResult {
        self.backend.crash();
        self.abandon();
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
        let _ = within;
        Err(HookError::Unsupported(
            "a waiter holds nothing to lose".into(),
        ))
    }
}
