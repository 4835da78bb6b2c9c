//! The calls users make on a connected backend (`Arc<dyn LockBackend>`).

use std::sync::Arc;

use crate::backend::{LockBackend, LockState};
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
