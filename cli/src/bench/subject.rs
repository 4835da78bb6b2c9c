//! What a benchmark measures: tumbler on a store, or a peer library on the same store.

use async_trait::async_trait;
use tumbler_locks::{Guard, SharedBackend};

/// One kind of acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Mutex,
    Read,
    Write,
    Permits { limit: u32, count: u32 },
}

/// A library on a store: makes independent clients.
#[async_trait]
pub trait Subject: Send + Sync {
    /// e.g. `redis` or `redis/rslock`.
    fn label(&self) -> String;
    /// The store URL.
    fn url(&self) -> &str;
    /// Why this subject cannot do `op`, if it cannot.
    fn unsupported(&self, op: Op) -> Option<String>;
    /// A new client with its own connection (and session).
    async fn client(&self) -> Result<Box<dyn BenchClient>, String>;
}

/// One client of a subject.
#[async_trait]
pub trait BenchClient: Send + Sync {
    /// Waits until `op` on `name` is held.
    async fn acquire(&self, name: &str, op: Op) -> Result<Box<dyn Held>, String>;
    /// Closes the client.
    async fn close(&self) {}
}

/// A held lock.
#[async_trait]
pub trait Held: Send + Sync {
    async fn release(self: Box<Self>) -> Result<(), String>;
}

/// tumbler on a URL.
pub struct Tumbler {
    pub url: String,
    pub label: String,
    pub caps: tumbler_locks::Capabilities,
}

impl Tumbler {
    pub async fn new(url: &str) -> Result<Self, String> {
        let probe = tumbler_locks::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let caps = probe.capabilities();
        let _ = probe.shutdown().await;
        Ok(Tumbler {
            url: url.to_owned(),
            label: caps.backend.to_owned(),
            caps,
        })
    }
}

#[async_trait]
impl Subject for Tumbler {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn unsupported(&self, op: Op) -> Option<String> {
        match op {
            Op::Read | Op::Write if !self.caps.rwlock => Some("no read-write locks".into()),
            Op::Permits { .. } if !self.caps.semaphore => Some("no semaphores".into()),
            _ => None,
        }
    }

    async fn client(&self) -> Result<Box<dyn BenchClient>, String> {
        let locks = tumbler_locks::connect(&self.url)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(TumblerClient { locks }))
    }
}

struct TumblerClient {
    locks: SharedBackend,
}

struct TumblerHeld(Box<dyn Guard>);

#[async_trait]
impl Held for TumblerHeld {
    async fn release(self: Box<Self>) -> Result<(), String> {
        self.0.release_boxed().await.map_err(|e| e.to_string())
    }
}

#[async_trait]
impl BenchClient for TumblerClient {
    async fn acquire(&self, name: &str, op: Op) -> Result<Box<dyn Held>, String> {
        let e = |e: tumbler_locks::Error| e.to_string();
        let guard: Box<dyn Guard> = match op {
            Op::Mutex => Box::new(self.locks.mutex(name).map_err(e)?.lock().await.map_err(e)?),
            Op::Read => Box::new(
                self.locks
                    .rwlock(name)
                    .map_err(e)?
                    .read()
                    .await
                    .map_err(e)?,
            ),
            Op::Write => Box::new(
                self.locks
                    .rwlock(name)
                    .map_err(e)?
                    .write()
                    .await
                    .map_err(e)?,
            ),
            Op::Permits { limit, count } => Box::new(
                self.locks
                    .semaphore(name, limit)
                    .map_err(e)?
                    .acquire(count)
                    .await
                    .map_err(e)?,
            ),
        };
        Ok(Box::new(TumblerHeld(guard)))
    }

    async fn close(&self) {
        let _ = self.locks.shutdown().await;
    }
}
