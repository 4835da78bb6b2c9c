//! Broken [`HeldLock`] wrappers used by the mutants.

use async_trait::async_trait;
use tumbler_core::memory::MemoryStore;
use tumbler_core::{
    AcquireRequest, HeldLock, Hold, HoldNotifier, LockKind, LockName, Result, SharedBackend,
};

/// Release breaks whatever lock has this name.
pub(super) struct ForceRelease {
    pub(super) inner: Box<dyn HeldLock>,
    pub(super) store: MemoryStore,
    pub(super) name: LockName,
}

#[async_trait]
impl HeldLock for ForceRelease {
    async fn release(&mut self) -> Result<()> {
        self.store.force_release(&self.name)?;
        let _ = self.inner.release().await;
        Ok(())
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        self.inner.downgrade().await
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        self.inner.proclaim(value).await
    }
}

/// Release always claims success.
pub(super) struct LyingRelease {
    pub(super) inner: Box<dyn HeldLock>,
}

#[async_trait]
impl HeldLock for LyingRelease {
    async fn release(&mut self) -> Result<()> {
        let _ = self.inner.release().await;
        Ok(())
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        self.inner.downgrade().await
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        self.inner.proclaim(value).await
    }
}

/// Downgrade lets go of the write lock, then queues for a read lock.
pub(super) struct GappyDowngrade {
    pub(super) inner: Box<dyn HeldLock>,
    pub(super) backend: SharedBackend,
    pub(super) name: LockName,
}

#[async_trait]
impl HeldLock for GappyDowngrade {
    async fn release(&mut self) -> Result<()> {
        self.inner.release().await
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        self.inner.release().await?;
        let request = AcquireRequest {
            name: self.name.clone(),
            kind: LockKind::Read,
            wait: true,
            value: Vec::new(),
        };
        self.backend.acquire(request).await?.ok_or_else(|| {
            tumbler_core::Error::backend("mutant", "read acquire after downgrade returned busy")
        })
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        self.inner.proclaim(value).await
    }
}

/// Keeps a notifier alive (so `lost()` does not fire on its own) next to the real hold.
pub(super) struct Muffled {
    pub(super) inner: Box<dyn HeldLock>,
    pub(super) _notifier: std::sync::Arc<HoldNotifier>,
}

#[async_trait]
impl HeldLock for Muffled {
    async fn release(&mut self) -> Result<()> {
        self.inner.release().await
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        self.inner.downgrade().await
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        self.inner.proclaim(value).await
    }
}

/// Several holds released together (the parts of a piecemeal semaphore acquisition).
pub(super) struct Pieces {
    pub(super) parts: Vec<Box<dyn HeldLock>>,
}

#[async_trait]
impl HeldLock for Pieces {
    async fn release(&mut self) -> Result<()> {
        let mut first_error = None;
        for part in self.parts.iter_mut() {
            if let Err(e) = part.release().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A release that cannot reach the store never returns.
pub(super) struct HangingRelease {
    pub(super) inner: Box<dyn HeldLock>,
}

#[async_trait]
impl HeldLock for HangingRelease {
    async fn release(&mut self) -> Result<()> {
        match self.inner.release().await {
            Err(e) if e.is_transient() => std::future::pending().await,
            other => other,
        }
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        self.inner.downgrade().await
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        self.inner.proclaim(value).await
    }
}

/// A second release reports that the hold is not ours.
pub(super) struct GrudgingRelease {
    pub(super) inner: Box<dyn HeldLock>,
    pub(super) name: LockName,
    pub(super) releases: u32,
}

#[async_trait]
impl HeldLock for GrudgingRelease {
    async fn release(&mut self) -> Result<()> {
        self.releases += 1;
        if self.releases > 1 {
            return Err(tumbler_core::Error::NotOwner {
                name: self.name.clone(),
            });
        }
        self.inner.release().await
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        self.inner.downgrade().await
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        self.inner.proclaim(value).await
    }
}

/// A leadership whose proclaim reports success and writes nothing
/// ([`super::Mutant::ProclaimIgnored`]).
pub(super) struct DeafProclaim {
    pub(super) inner: Box<dyn HeldLock>,
}

#[async_trait]
impl HeldLock for DeafProclaim {
    async fn release(&mut self) -> Result<()> {
        self.inner.release().await
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        self.inner.downgrade().await
    }

    async fn proclaim(&mut self, _value: &[u8]) -> Result<()> {
        Ok(())
    }
}
