//! The distributed mutex.

use std::time::Duration;

use crate::acquire::{acquire, acquire_granted, Wait};
use crate::backend::{LockKind, LockState, SharedBackend};
use crate::error::Result;
use crate::guard::{hold_accessors, HoldCore};
use crate::name::{IntoLockName, LockName};

/// A distributed mutex: at most one [`MutexGuard`] for its name is live across every client of
/// the store.
///
/// The handle is cheap and can be cloned; every `lock` call is a separate acquisition (use
/// [`crate::ReentrantMutex`] to re-enter). Ownership is the guard, never the thread or task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
/// use std::time::Duration;
/// let locks = tumbler_core::memory::connect_new().await?;
/// let mutex = locks.mutex("jobs/nightly")?;
///
/// let guard = mutex.lock().await?;
/// let token = guard.fencing_token(); // pass this to the resource you protect
/// assert!(mutex.try_lock().await?.is_none()); // busy
/// assert!(mutex.lock_timeout(Duration::from_millis(20)).await?.is_none());
/// guard.release().await?;
///
/// let next = mutex.try_lock().await?.expect("free again");
/// assert!(next.fencing_token() > token);
/// next.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mutex {
    backend: SharedBackend,
    name: LockName,
}

impl std::fmt::Debug for Mutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex").field("name", &self.name).finish()
    }
}

impl Mutex {
    /// A mutex named `name` on `backend`. Fails with [`crate::Error::InvalidName`] for a bad name.
    pub fn new(backend: SharedBackend, name: impl IntoLockName) -> Result<Self> {
        Ok(Mutex {
            backend,
            name: name.into_lock_name()?,
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// The backend this mutex lives on.
    pub fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    /// Waits until the lock is acquired.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no hold and no queue entry.
    /// The backend removes what it had written for this acquisition, and a grant that raced with
    /// the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// - [`Error::Connection`](crate::Error::Connection) or
    ///   [`Error::Timeout`](crate::Error::Timeout) when the store cannot be reached: a wait fails
    ///   once a request goes unanswered within
    ///   [`Capabilities::request_timeout`](crate::Capabilities::request_timeout) (or the connection
    ///   is given up), never by waiting for ever.
    /// - [`Error::Conflict`](crate::Error::Conflict) when the name is in use by another kind of
    ///   lock, or its keys hold data tumbler did not write.
    /// - [`Error::Closed`](crate::Error::Closed) after
    ///   [`LockBackend::shutdown`](crate::LockBackend::shutdown), also for a wait under way when it
    ///   is called.
    pub async fn lock(&self) -> Result<MutexGuard> {
        let core = acquire_granted(&self.backend, &self.name, LockKind::Exclusive).await?;
        Ok(MutexGuard { core })
    }

    /// Makes one attempt; `Ok(None)` if the lock is held by someone else.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no hold and no queue entry.
    /// The backend removes what it had written for this acquisition, and a grant that raced with
    /// the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// `Ok(None)`, not an error, when another holder has the lock.
    ///
    /// - [`Error::Timeout`](crate::Error::Timeout) (with the time really spent) or
    ///   [`Error::Connection`](crate::Error::Connection) when the store does not answer within
    ///   [`Capabilities::request_timeout`](crate::Capabilities::request_timeout): never a silent
    ///   "busy".
    /// - [`Error::Conflict`](crate::Error::Conflict) when the name is in use by another kind of
    ///   lock, or its keys hold data tumbler did not write.
    /// - [`Error::Recovering`](crate::Error::Recovering) on a store that may have lost locks in a
    ///   recent restart and grants none for a while (Redis without full persistence); waiting
    ///   acquisitions wait it out instead.
    /// - [`Error::Closed`](crate::Error::Closed) after
    ///   [`LockBackend::shutdown`](crate::LockBackend::shutdown).
    pub async fn try_lock(&self) -> Result<Option<MutexGuard>> {
        self.acquire(Wait::No).await
    }

    /// Waits at most `timeout`; `Ok(None)` if the lock could not be had in time.
    /// A zero timeout makes one attempt.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no hold and no queue entry.
    /// The backend removes what it had written for this acquisition, and a grant that raced with
    /// the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// - [`Error::Timeout`](crate::Error::Timeout) when the wait runs out while the connection is
    ///   [`Suspended`](crate::ConnectionEvent::Suspended) or
    ///   [`Lost`](crate::ConnectionEvent::Lost): nobody could tell whether the lock was free.
    ///   Running out on a healthy connection is `Ok(None)`.
    /// - [`Error::Connection`](crate::Error::Connection) or
    ///   [`Error::Timeout`](crate::Error::Timeout) when the store cannot be reached: a wait fails
    ///   once a request goes unanswered within
    ///   [`Capabilities::request_timeout`](crate::Capabilities::request_timeout) (or the connection
    ///   is given up), never by waiting for ever.
    /// - [`Error::Conflict`](crate::Error::Conflict) when the name is in use by another kind of
    ///   lock, or its keys hold data tumbler did not write.
    /// - [`Error::Closed`](crate::Error::Closed) after
    ///   [`LockBackend::shutdown`](crate::LockBackend::shutdown), also for a wait under way when it
    ///   is called.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<Option<MutexGuard>> {
        self.acquire(Wait::For(timeout)).await
    }

    /// Who holds the lock and how many wait.
    pub async fn state(&self) -> Result<LockState> {
        self.backend.state(&self.name).await
    }

    pub(crate) async fn acquire(&self, wait: Wait) -> Result<Option<MutexGuard>> {
        let core = acquire(&self.backend, &self.name, LockKind::Exclusive, wait).await?;
        Ok(core.map(|core| MutexGuard { core }))
    }
}

/// Proof of holding a [`Mutex`]. Release it with [`MutexGuard::release`]; dropping it releases
/// in the background and logs a warning.
#[must_use = "the lock is released when the guard is dropped"]
pub struct MutexGuard {
    core: HoldCore,
}

hold_accessors!(MutexGuard, core);

impl MutexGuard {
    /// Releases the lock and reports what the store confirmed: `Ok` only when the release was
    /// confirmed, [`crate::Error::NotOwner`] if the hold had already been lost.
    pub async fn release(self) -> Result<()> {
        self.core.release().await
    }

    pub(crate) fn into_core(self) -> HoldCore {
        self.core
    }

    /// When this hold was granted (local monotonic clock).
    pub fn acquired_at(&self) -> std::time::Instant {
        self.core.acquired_at()
    }
}

impl std::fmt::Debug for MutexGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexGuard")
            .field("name", self.core.name())
            .field("token", &self.core.token())
            .finish()
    }
}
