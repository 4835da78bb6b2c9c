//! The calls users make on a connected backend (`Arc<dyn LockBackend>`).

use std::sync::Arc;

use crate::backend::{LockBackend, LockState};
use crate::election::Election;
use crate::error::Result;
use crate::mutex::Mutex;
use crate::name::IntoLockName;
use crate::reentrant::ReentrantMutex;
use crate::rwlock::RwLock;
use crate::semaphore::Semaphore;

impl dyn LockBackend {
    /// A [`Mutex`] handle for `name` (validated here; nothing is sent to the store yet).
    pub fn mutex(self: &Arc<Self>, name: impl IntoLockName) -> Result<Mutex> {
        Mutex::new(self.clone(), name)
    }

    /// A [`ReentrantMutex`] handle for `name`; its clones share one hold count.
    pub fn reentrant_mutex(self: &Arc<Self>, name: impl IntoLockName) -> Result<ReentrantMutex> {
        Ok(ReentrantMutex::new(Mutex::new(self.clone(), name)?))
    }

    /// A [`Semaphore`] handle for `name` with `limit` permits.
    pub fn semaphore(self: &Arc<Self>, name: impl IntoLockName, limit: u32) -> Result<Semaphore> {
        Semaphore::new(self.clone(), name, limit)
    }

    /// A [`RwLock`] handle for `name`.
    pub fn rwlock(self: &Arc<Self>, name: impl IntoLockName) -> Result<RwLock> {
        RwLock::new(self.clone(), name)
    }

    /// An [`Election`] handle for `name` (validated here; nothing is sent to the store yet).
    pub fn election(self: &Arc<Self>, name: impl IntoLockName) -> Result<Election> {
        Election::new(self.clone(), name)
    }

    /// Who holds `name` and how many wait (Curator's `isLocked` and participants).
    pub async fn state(self: &Arc<Self>, name: impl IntoLockName) -> Result<LockState> {
        let name = name.into_lock_name()?;
        LockBackend::state(&**self, &name).await
    }

    /// Asks the holders of `name` to release it; their `revoke_requested()` resolves.
    /// Cooperative: a holder that ignores the request keeps the lock. Returns how many holders
    /// were notified where the store can tell.
    pub async fn request_revoke(self: &Arc<Self>, name: impl IntoLockName) -> Result<usize> {
        let name = name.into_lock_name()?;
        let caps = self.capabilities();
        crate::capabilities::require(&caps, "revocation", caps.revocation)?;
        LockBackend::request_revoke(&**self, &name).await
    }
}

/// The handle methods (`mutex`, `semaphore`, …) on any `Arc` of a backend, typed or not, so no
/// caller needs an `as SharedBackend` cast (object_store's `ObjectStoreExt` pattern).
///
/// `SharedBackend` (`Arc<dyn LockBackend>`) has the same methods without this import.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
/// use tumbler_core::LockExt;
/// let store = tumbler_core::memory::MemoryStore::new();
/// let typed = store.connect_client(Default::default()).await?; // Arc<MemoryBackend>
/// let guard = typed.mutex("jobs/nightly")?.lock().await?;
/// assert!(typed.state("jobs/nightly").await?.is_held());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait LockExt {
    /// This backend as the shared handle lockcore's primitives hold.
    fn shared(&self) -> crate::SharedBackend;

    /// A mutex handle; see [`Mutex`].
    fn mutex(&self, name: impl IntoLockName + Send) -> Result<Mutex> {
        Mutex::new(self.shared(), name)
    }

    /// A re-entrant mutex handle; see [`ReentrantMutex`].
    fn reentrant_mutex(&self, name: impl IntoLockName + Send) -> Result<ReentrantMutex> {
        Ok(ReentrantMutex::new(Mutex::new(self.shared(), name)?))
    }

    /// A semaphore handle with `limit` permits; see [`Semaphore`].
    fn semaphore(&self, name: impl IntoLockName + Send, limit: u32) -> Result<Semaphore> {
        Semaphore::new(self.shared(), name, limit)
    }

    /// A read-write lock handle; see [`RwLock`].
    fn rwlock(&self, name: impl IntoLockName + Send) -> Result<RwLock> {
        RwLock::new(self.shared(), name)
    }

    /// An election handle; see [`Election`].
    fn election(&self, name: impl IntoLockName + Send) -> Result<Election> {
        Election::new(self.shared(), name)
    }

    /// Who holds `name` and how many wait.
    async fn state(&self, name: impl IntoLockName + Send) -> Result<LockState> {
        self.shared().state(name).await
    }

    /// Asks every holder of `name` to release; see [`LockBackend::request_revoke`].
    async fn request_revoke(&self, name: impl IntoLockName + Send) -> Result<usize> {
        self.shared().request_revoke(name).await
    }
}

impl<B: LockBackend + ?Sized> LockExt for Arc<B> {
    fn shared(&self) -> crate::SharedBackend {
        Arc::new(self.clone())
    }
}
