//! The layer in front of every backend: request validation and the closed state, once.
//!
//! [`Checked`] wraps a backend (opendal's "completing layer" is the model): it refuses requests
//! no store could serve (zero permits, more permits than the limit, a limit out of range) with
//! [`Error::InvalidArgument`] before the store is touched, and every call after
//! [`LockBackend::shutdown`] with [`Error::Closed`]. Backends therefore need neither check.
//! [`share`] wraps a backend and returns the [`SharedBackend`] users hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{AcquireRequest, Hold, LockBackend, LockKind, LockState, SharedBackend};
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::events::ConnectionEvents;
use crate::name::LockName;
use crate::semaphore::MAX_PERMITS;

/// A backend behind request validation and the closed-state check. Derefs to the backend, so its
/// own methods stay reachable.
pub struct Checked<B> {
    inner: B,
    closed: AtomicBool,
}

impl<B: LockBackend> Checked<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Checked {
            inner,
            closed: AtomicBool::new(false),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Whether [`LockBackend::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed {
                backend: self.inner.capabilities().backend,
            })
        } else {
            Ok(())
        }
    }
}

impl<B> std::ops::Deref for Checked<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for Checked<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("inner", &self.inner)
            .field("closed", &self.closed.load(Ordering::SeqCst))
            .finish()
    }
}

/// Wraps `backend` in [`Checked`] and returns it as the shared handle users hold.
pub fn share<B: LockBackend>(backend: B) -> SharedBackend {
    Arc::new(Checked::new(backend))
}

/// Refuses a request no store could serve.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for zero permits, more permits than the limit, or a limit outside
/// `1..=MAX_PERMITS`.
pub fn validate(request: &AcquireRequest) -> Result<()> {
    if let LockKind::Permits { limit, count } = request.kind {
        if limit == 0 || limit > MAX_PERMITS {
            return Err(Error::invalid(
                "semaphore limit",
                format!("{limit} is out of range; use 1..={MAX_PERMITS}"),
            ));
        }
        if count == 0 || count > limit {
            return Err(Error::invalid(
                "permits",
                format!(
                    "asked for {count} permits of semaphore {} whose limit is {limit}; ask for \
                     1..={limit}",
                    request.name
                ),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl<B: LockBackend> LockBackend for Checked<B> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn address(&self) -> String {
        self.inner.address()
    }

    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        self.check_open()?;
        validate(&request)?;
        self.inner.acquire(request).await
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        self.check_open()?;
        self.inner.state(name).await
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        self.check_open()?;
        self.inner.request_revoke(name).await
    }

    fn connection_events(&self) -> ConnectionEvents {
        self.inner.connection_events()
    }

    async fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.shutdown().await
    }

    async fn recovering(&self) -> Option<std::time::Duration> {
        self.inner.recovering().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(limit: u32, count: u32) -> AcquireRequest {
        AcquireRequest {
            name: LockName::new("pool").unwrap(),
            kind: LockKind::Permits { limit, count },
            wait: false,
        }
    }

    #[test]
    fn permits_are_validated() {
        assert!(validate(&request(3, 3)).is_ok());
        for (limit, count) in [(3, 0), (3, 4), (0, 0), (MAX_PERMITS + 1, 1)] {
            assert!(
                matches!(
                    validate(&request(limit, count)),
                    Err(Error::InvalidArgument { .. })
                ),
                "{limit}/{count}"
            );
        }
    }

    #[tokio::test]
    async fn calls_after_shutdown_are_closed() {
        let store = crate::memory::MemoryStore::new();
        let memory = store
            .connect_client(crate::memory::MemoryOptions::default())
            .await
            .unwrap();
        let locks = share(memory);
        locks.shutdown().await.unwrap();
        let err = locks.mutex("a").unwrap().try_lock().await.unwrap_err();
        assert!(matches!(err, Error::Closed { .. }), "{err}");
        assert!(matches!(locks.state("a").await, Err(Error::Closed { .. })));
    }
}
