//! The in-process `memory` backend: FIFO, fencing tokens, revocation, every primitive.
//!
//! It is the reference the conformance suite is validated on and the default in docs and
//! examples. A [`MemoryStore`] plays the server; each [`MemoryBackend`] connected to it plays one
//! client process with its own session, renewed in the background and expired by the store when
//! renewal stops for a whole TTL. Stores can be shared by name inside one process
//! (`memory://name`), never across processes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
//! use tumbler_core::memory::{MemoryOptions, MemoryStore};
//! use std::time::Duration;
//!
//! let store = MemoryStore::new();
//! let a = store.connect(MemoryOptions::default()).await?;
//! let b = store.connect(MemoryOptions::default().session_ttl(Some(Duration::from_secs(2)))?).await?;
//! let held = a.mutex("shared")?.lock().await?;
//! assert!(b.mutex("shared")?.try_lock().await?.is_none()); // another client of the same store
//! held.release().await?;
//! # Ok(()) }
//! ```

mod client;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdMutexGuard, OnceLock, Weak};
use std::time::Duration;

pub use client::MemoryBackend;
use store::StoreState;

use crate::backend::SharedBackend;
use crate::error::{Error, Result};
use crate::name::IntoLockName;
use crate::params::format_duration;

/// The shortest session TTL accepted.
pub const MIN_SESSION_TTL: Duration = Duration::from_millis(50);
/// The longest session TTL accepted.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a client waits for a [stalled](MemoryStore::stall) store before an operation fails
/// with [`Error::Timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Data tumbler did not write, put into a store by [`MemoryStore::write_foreign`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForeignData {
    /// The lock's record holds something else.
    Record,
    /// The lock's fencing counter holds text that is not a number.
    GarbageCounter,
    /// The lock's fencing counter is at its largest value.
    OverflowingCounter,
}

/// Settings of one memory client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    session_ttl: Option<Duration>,
}

impl Default for MemoryOptions {
    /// A 10 s session TTL.
    fn default() -> Self {
        MemoryOptions {
            session_ttl: Some(Duration::from_secs(10)),
        }
    }
}

impl MemoryOptions {
    /// How long the store keeps a session that stopped renewing; `None` keeps it forever (a
    /// crashed holder then never frees its locks: only for tests that need that).
    /// Must be within [`MIN_SESSION_TTL`]..=[`MAX_SESSION_TTL`].
    pub fn session_ttl(mut self, ttl: Option<Duration>) -> Result<Self> {
        if let Some(ttl) = ttl {
            if !(MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&ttl) {
                return Err(Error::invalid(
                    "session ttl",
                    format!(
                        "{} is out of range; use {} to {}",
                        format_duration(ttl),
                        format_duration(MIN_SESSION_TTL),
                        format_duration(MAX_SESSION_TTL)
                    ),
                ));
            }
        }
        self.session_ttl = ttl;
        Ok(self)
    }

    /// The configured session TTL.
    pub fn ttl(&self) -> Option<Duration> {
        self.session_ttl
    }
}

/// An in-process lock server. Cheap to clone; clones are the same store.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    name: String,
    state: StdMutex<StoreState>,
    stalled: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn registry() -> &'static StdMutex<HashMap<String, Weak<StoreInner>>> {
    static REGISTRY: OnceLock<StdMutex<HashMap<String, Weak<StoreInner>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl MemoryStore {
    /// A new private store.
    pub fn new() -> Self {
        Self::with_name(String::from("private"))
    }

    fn with_name(name: String) -> Self {
        MemoryStore {
            inner: Arc::new(StoreInner {
                name,
                state: StdMutex::new(StoreState::default()),
                stalled: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// The store registered under `name` in this process, created if needed. Every
    /// `memory://name` URL with the same name reaches the same store while any client of it
    /// lives.
    pub fn named(name: &str) -> Self {
        let mut registry = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = registry.get(name).and_then(Weak::upgrade) {
            return MemoryStore { inner };
        }
        let store = Self::with_name(name.to_owned());
        registry.insert(name.to_owned(), Arc::downgrade(&store.inner));
        store
    }

    /// The store's name (`private` for [`MemoryStore::new`]).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Connects a new client with its own session. Needs a tokio runtime (it renews the
    /// session in the background).
    pub async fn connect(&self, options: MemoryOptions) -> Result<SharedBackend> {
        Ok(self.connect_client(options).await?)
    }

    /// Like [`MemoryStore::connect`], returning the concrete client for its test hooks.
    pub async fn connect_client(&self, options: MemoryOptions) -> Result<Arc<MemoryBackend>> {
        Ok(Arc::new(MemoryBackend::start(self.clone(), options)))
    }

    /// Removes every holder of `name` whatever its owner, as an administrator breaking a lock
    /// would; their `lost()` fires. Returns how many holds were removed.
    pub fn force_release(&self, name: impl IntoLockName) -> Result<usize> {
        let name = name.into_lock_name()?;
        Ok(self.state().force_release(&name))
    }

    /// Forgets every session and lock, as a server restarted without persistence would. Fencing
    /// counters are kept, so tokens still increase across the restart.
    pub fn restart(&self) {
        self.state().reset();
    }

    /// Test hook: stall (`true`) or continue (`false`) the store, as a server stopped with
    /// SIGSTOP: while stalled, every operation of every client waits and fails after
    /// [`REQUEST_TIMEOUT`] with [`Error::Timeout`], and no session is renewed or expired.
    pub fn stall(&self, stalled: bool) {
        self.inner.stalled.send_replace(stalled);
    }

    /// Test hook: puts data tumbler did not write where `name` keeps its records. Every later
    /// acquisition of `name` fails with [`Error::Conflict`] naming it.
    pub fn write_foreign(&self, name: impl IntoLockName, what: ForeignData) -> Result<()> {
        let name = name.into_lock_name()?;
        self.state().write_foreign(&name, what);
        Ok(())
    }

    pub(crate) fn is_stalled(&self) -> bool {
        *self.inner.stalled.borrow()
    }

    pub(crate) fn stalled(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.stalled.subscribe()
    }

    pub(crate) fn state(&self) -> StdMutexGuard<'_, StoreState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Connects a client to a new private store: the quickest way to try the API.
pub async fn connect_new() -> Result<SharedBackend> {
    MemoryStore::new().connect(MemoryOptions::default()).await
}

/// Connects a client to the process-wide store called `name` (see [`MemoryStore::named`]).
pub async fn connect(name: &str, options: MemoryOptions) -> Result<SharedBackend> {
    MemoryStore::named(name).connect(options).await
}
