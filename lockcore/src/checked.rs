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

use crate::backend::{
    AcquireRequest, Hold, LeaderInfo, LockBackend, LockKind, LockState, SharedBackend,
};
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
    if request.kind != LockKind::Leader && !request.value.is_empty() {
        return Err(Error::invalid(
            "value",
            format!(
                "a {} acquire of {} carries no value; only Election::campaign advertises one",
                request.kind, request.name
            ),
        ));
    }
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

/// Checks a value that a campaign or a proclaim on election `name` would advertise, before
/// anything is written: it must not be empty, nor longer than the store takes
/// ([`Capabilities::max_value_len`]).
///
/// # Errors
///
/// [`Error::InvalidArgument`] saying which limit the value breaks.
pub fn validate_value(name: &LockName, value: &[u8], caps: &Capabilities) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(
            "leader value",
            format!(
                "the value advertised in election {name} is empty; give the candidate's \
                 identity (a host name, an address), which followers read from leader()"
            ),
        ));
    }
    if value.len() > caps.max_value_len {
        return Err(Error::invalid(
            "leader value",
            format!(
                "the value advertised in election {name} is {} bytes; {} takes at most {} \
                 bytes: advertise where the data is, not the data",
                value.len(),
                caps.backend,
                caps.max_value_len
            ),
        ));
    }
    Ok(())
}

/// [`validate`], and for a campaign that the store has elections and the value is one it takes
/// ([`validate_value`]): what every request is checked against before a store sees it.
pub(crate) fn validate_on(request: &AcquireRequest, caps: &Capabilities) -> Result<()> {
    validate(request)?;
    if request.kind == LockKind::Leader {
        crate::capabilities::require(caps, "election", caps.election)?;
        validate_value(&request.name, &request.value, caps)?;
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
        validate_on(&request, &self.capabilities())?;
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

    async fn leader(&self, name: &LockName) -> Result<Option<LeaderInfo>> {
        self.check_open()?;
        self.inner.leader(name).await
    }

    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&LeaderInfo>,
    ) -> Result<Option<LeaderInfo>> {
        self.check_open()?;
        self.inner.leader_changed(name, seen).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(limit: u32, count: u32) -> AcquireRequest {
        AcquireRequest::new(
            LockName::new("pool").unwrap(),
            LockKind::Permits { limit, count },
            false,
        )
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
