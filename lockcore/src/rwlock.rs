//! The distributed read-write lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::acquire::{acquire, Wait};
use crate::backend::{LockKind, LockState, SharedBackend};
use crate::capabilities::require;
use crate::error::{Error, Result};
use crate::guard::{hold_accessors, HoldCore};
use crate::name::{IntoLockName, LockName};

/// A distributed read-write lock: readers share, a writer excludes everyone.
///
/// A write guard can be [downgraded](WriteGuard::downgrade) to a read guard without letting a
/// writer in between. Upgrading is refused ([`Error::UpgradeRefused`](crate::Error::UpgradeRefused)): two readers that both
/// upgrade would wait for each other forever. This handle refuses `write()` while it still has
/// live read guards for the same reason.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
/// let locks = tumbler_core::memory::connect_new().await?;
/// let config = locks.rwlock("config")?;
///
/// let writer = config.write().await?;
/// assert!(config.try_read().await?.is_none()); // a writer excludes readers
/// let reader = writer.downgrade().await?;      // still held, now shared
/// let second = config.try_read().await?.expect("readers share");
/// assert!(config.try_write().await.is_err());  // this handle holds reads: upgrade refused
///
/// second.release().await?;
/// reader.release().await?;
/// assert!(config.try_write().await?.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RwLock {
    backend: SharedBackend,
    name: LockName,
    reads_held: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RwLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwLock")
            .field("name", &self.name)
            .field("reads_held", &self.reads_held.load(Ordering::SeqCst))
            .finish()
    }
}

impl RwLock {
    /// A read-write lock named `name` on `backend`.
    /// Fails with [`Error::Unsupported`](crate::Error::Unsupported) on a backend without read-write locks.
    pub fn new(backend: SharedBackend, name: impl IntoLockName) -> Result<Self> {
        let caps = backend.capabilities();
        require(&caps, "read-write locks", caps.rwlock)?;
        Ok(RwLock {
            backend,
            name: name.into_lock_name()?,
            reads_held: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The backend this lock lives on.
    pub fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    /// The lock's name.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// Waits for a shared hold.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no read hold and no queue
    /// entry. The backend removes what it had written for this acquisition, and a grant that raced
    /// with the cancellation is released in the background.
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
    pub async fn read(&self) -> Result<ReadGuard> {
        self.read_with(Wait::Forever)
            .await?
            .ok_or_else(|| self.no_hold("read"))
    }

    /// One attempt at a shared hold.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no read hold and no queue
    /// entry. The backend removes what it had written for this acquisition, and a grant that raced
    /// with the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// `Ok(None)`, not an error, when a writer holds the lock or waits for it.
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
    pub async fn try_read(&self) -> Result<Option<ReadGuard>> {
        self.read_with(Wait::No).await
    }

    /// Waits at most `timeout` for a shared hold.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no read hold and no queue
    /// entry. The backend removes what it had written for this acquisition, and a grant that raced
    /// with the cancellation is released in the background.
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
    pub async fn read_timeout(&self, timeout: Duration) -> Result<Option<ReadGuard>> {
        self.read_with(Wait::For(timeout)).await
    }

    /// Waits for the exclusive hold. Refused while this handle holds read guards.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no write hold and no queue
    /// entry. The backend removes what it had written for this acquisition, and a grant that raced
    /// with the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// - [`Error::UpgradeRefused`](crate::Error::UpgradeRefused) while this handle has live read
    ///   guards (an upgrade could deadlock); release them first.
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
    pub async fn write(&self) -> Result<WriteGuard> {
        self.write_with(Wait::Forever)
            .await?
            .ok_or_else(|| self.no_hold("write"))
    }

    /// One attempt at the exclusive hold. Refused while this handle holds read guards.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no write hold and no queue
    /// entry. The backend removes what it had written for this acquisition, and a grant that raced
    /// with the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// `Ok(None)`, not an error, when anyone holds the lock.
    ///
    /// - [`Error::UpgradeRefused`](crate::Error::UpgradeRefused) while this handle has live read
    ///   guards (an upgrade could deadlock); release them first.
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
    pub async fn try_write(&self) -> Result<Option<WriteGuard>> {
        self.write_with(Wait::No).await
    }

    /// Waits at most `timeout` for the exclusive hold. Refused while this handle holds reads.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no write hold and no queue
    /// entry. The backend removes what it had written for this acquisition, and a grant that raced
    /// with the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// - [`Error::UpgradeRefused`](crate::Error::UpgradeRefused) while this handle has live read
    ///   guards (an upgrade could deadlock); release them first.
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
    pub async fn write_timeout(&self, timeout: Duration) -> Result<Option<WriteGuard>> {
        self.write_with(Wait::For(timeout)).await
    }

    /// Who holds the lock and how many wait.
    pub async fn state(&self) -> Result<LockState> {
        self.backend.state(&self.name).await
    }

    pub(crate) async fn read_with(&self, wait: Wait) -> Result<Option<ReadGuard>> {
        let core = acquire(&self.backend, &self.name, LockKind::Read, wait).await?;
        Ok(core.map(|core| ReadGuard::new(core, self.reads_held.clone())))
    }

    pub(crate) async fn write_with(&self, wait: Wait) -> Result<Option<WriteGuard>> {
        if self.reads_held.load(Ordering::SeqCst) > 0 {
            return Err(Error::UpgradeRefused {
                name: self.name.clone(),
            });
        }
        let core = acquire(&self.backend, &self.name, LockKind::Write, wait).await?;
        Ok(core.map(|core| WriteGuard {
            core,
            reads_held: self.reads_held.clone(),
        }))
    }

    fn no_hold(&self, side: &str) -> Error {
        Error::backend(
            self.backend.capabilities().backend,
            format!(
                "the backend returned no hold for a waiting {side} acquire of {}",
                self.name
            ),
        )
    }
}

/// A shared hold on a [`RwLock`].
#[must_use = "the read lock is released when the guard is dropped"]
pub struct ReadGuard {
    core: HoldCore,
    _counted: ReadCount,
}

/// Counts a live read guard on its handle while it exists.
struct ReadCount(Arc<AtomicUsize>);

impl Drop for ReadCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

hold_accessors!(ReadGuard, core);

impl ReadGuard {
    fn new(core: HoldCore, reads_held: Arc<AtomicUsize>) -> Self {
        reads_held.fetch_add(1, Ordering::SeqCst);
        ReadGuard {
            core,
            _counted: ReadCount(reads_held),
        }
    }

    /// Releases the shared hold and reports what the store confirmed.
    pub async fn release(self) -> Result<()> {
        self.core.release().await
    }

    /// Always refused: see [`RwLock`]. Release the read guard, then call `write()`.
    pub fn upgrade(&self) -> Result<WriteGuard> {
        Err(Error::UpgradeRefused {
            name: self.core.name().clone(),
        })
    }
}

/// The exclusive hold on a [`RwLock`].
#[must_use = "the write lock is released when the guard is dropped"]
pub struct WriteGuard {
    core: HoldCore,
    reads_held: Arc<AtomicUsize>,
}

hold_accessors!(WriteGuard, core);

impl WriteGuard {
    /// Releases the exclusive hold and reports what the store confirmed.
    pub async fn release(self) -> Result<()> {
        self.core.release().await
    }

    /// Turns the write hold into a read hold with no moment in which a writer could get in.
    /// On failure the write hold is released (in the background) and the error returned.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense of keeping the lock: the write guard is consumed, so dropping
    /// the future before it completes drops the hold, which is then released in the background (as
    /// when a guard is dropped). Nothing stays behind on the store.
    ///
    /// # Errors
    ///
    /// - [`Error::NotOwner`](crate::Error::NotOwner) when the write hold was lost before the
    ///   downgrade.
    /// - [`Error::Connection`](crate::Error::Connection) or
    ///   [`Error::Timeout`](crate::Error::Timeout) when the store cannot be reached; the write hold
    ///   is then released in the background.
    pub async fn downgrade(mut self) -> Result<ReadGuard> {
        let core = self.core.downgrade().await?;
        Ok(ReadGuard::new(core, self.reads_held.clone()))
    }
}

impl std::fmt::Debug for ReadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("name", self.core.name())
            .field("token", &self.core.token())
            .finish()
    }
}

impl std::fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGuard")
            .field("name", self.core.name())
            .field("token", &self.core.token())
            .finish()
    }
}
