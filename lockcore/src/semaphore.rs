//! The distributed counting semaphore with leases.

use std::time::Duration;

use crate::acquire::{acquire, acquire_granted, Wait};
use crate::backend::{LockKind, LockState, SharedBackend};
use crate::capabilities::require;
use crate::error::{Error, Result};
use crate::guard::{hold_accessors, HoldCore};
use crate::name::{IntoLockName, LockName};

/// The largest semaphore limit accepted.
pub const MAX_PERMITS: u32 = 1 << 20;

/// A distributed counting semaphore: the permits held by live leases never exceed `limit`.
///
/// Each successful `acquire(n)` returns one [`Lease`] for `n` permits, granted all at once or
/// not at all. Every lease lives only as long as its session or TTL, so a crashed holder's
/// permits come back. All clients of one name must use the same limit; stores that record the
/// limit report a mismatch as [`Error::Conflict`](crate::Error::Conflict).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
/// let locks = tumbler_core::memory::connect_new().await?;
/// let pool = locks.semaphore("db/connections", 3)?;
///
/// let two = pool.acquire(2).await?;
/// let one = pool.try_acquire(1).await?.expect("one permit left");
/// assert!(pool.try_acquire(1).await?.is_none()); // all 3 in use
/// assert_eq!(two.permits(), 2);
///
/// two.release().await?;                       // return one lease
/// let more = pool.acquire(2).await?;
/// tumbler_core::Semaphore::release_all(vec![one, more]).await?; // or several at once
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    backend: SharedBackend,
    name: LockName,
    limit: u32,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Semaphore {
    /// A semaphore of `limit` permits named `name`. `limit` must be 1..=[`MAX_PERMITS`].
    /// Fails with [`Error::Unsupported`](crate::Error::Unsupported) on a backend without semaphores.
    pub fn new(backend: SharedBackend, name: impl IntoLockName, limit: u32) -> Result<Self> {
        let caps = backend.capabilities();
        require(&caps, "semaphores", caps.semaphore)?;
        let name = name.into_lock_name()?;
        if limit == 0 || limit > MAX_PERMITS {
            return Err(Error::invalid(
                "semaphore limit",
                format!("{limit} is out of range; use 1..={MAX_PERMITS}"),
            ));
        }
        Ok(Semaphore {
            backend,
            name,
            limit,
        })
    }

    /// The backend this semaphore lives on.
    pub fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    /// The semaphore's name.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// Total permits.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Waits until `permits` permits are free and takes them all at once.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no lease (no permit) and no
    /// queue entry. The backend removes what it had written for this acquisition, and a grant that
    /// raced with the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `permits` is 0 or more than
    ///   the limit.
    /// - [`Error::Conflict`](crate::Error::Conflict) also when the semaphore is in use with another
    ///   limit.
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
    pub async fn acquire(&self, permits: u32) -> Result<Lease> {
        let kind = self.kind(permits)?;
        let core = acquire_granted(&self.backend, &self.name, kind).await?;
        Ok(Lease { core, permits })
    }

    /// One attempt; `Ok(None)` if `permits` permits are not free now.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no lease (no permit) and no
    /// queue entry. The backend removes what it had written for this acquisition, and a grant that
    /// raced with the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// `Ok(None)`, not an error, when fewer than `permits` permits are free.
    ///
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `permits` is 0 or more than
    ///   the limit.
    /// - [`Error::Conflict`](crate::Error::Conflict) also when the semaphore is in use with another
    ///   limit.
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
    pub async fn try_acquire(&self, permits: u32) -> Result<Option<Lease>> {
        self.acquire_with(permits, Wait::No).await
    }

    /// Waits at most `timeout` for `permits` permits.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no lease (no permit) and no
    /// queue entry. The backend removes what it had written for this acquisition, and a grant that
    /// raced with the cancellation is released in the background.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `permits` is 0 or more than
    ///   the limit.
    /// - [`Error::Conflict`](crate::Error::Conflict) also when the semaphore is in use with another
    ///   limit.
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
    pub async fn acquire_timeout(&self, permits: u32, timeout: Duration) -> Result<Option<Lease>> {
        self.acquire_with(permits, Wait::For(timeout)).await
    }

    /// Returns every lease in `leases`, even if some fail; reports the first failure.
    pub async fn release_all(leases: impl IntoIterator<Item = Lease>) -> Result<()> {
        let mut first_error = None;
        for lease in leases {
            if let Err(error) = lease.release().await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Who holds permits and how many wait.
    pub async fn state(&self) -> Result<LockState> {
        self.backend.state(&self.name).await
    }

    pub(crate) async fn acquire_with(&self, permits: u32, wait: Wait) -> Result<Option<Lease>> {
        let kind = self.kind(permits)?;
        let core = acquire(&self.backend, &self.name, kind, wait).await?;
        Ok(core.map(|core| Lease { core, permits }))
    }

    pub(crate) fn kind(&self, permits: u32) -> Result<LockKind> {
        if permits == 0 || permits > self.limit {
            return Err(Error::invalid(
                "permits",
                format!(
                    "asked for {permits} permits of semaphore {} whose limit is {}; ask for 1..={}",
                    self.name, self.limit, self.limit
                ),
            ));
        }
        Ok(LockKind::Permits {
            limit: self.limit,
            count: permits,
        })
    }
}

/// Permits held from a [`Semaphore`]. Release it with [`Lease::release`]; dropping it returns
/// the permits in the background and logs a warning.
#[must_use = "the permits are returned when the lease is dropped"]
pub struct Lease {
    core: HoldCore,
    permits: u32,
}

hold_accessors!(Lease, core);

impl Lease {
    /// How many permits this lease holds.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Returns the permits and reports what the store confirmed.
    pub async fn release(self) -> Result<()> {
        self.core.release().await
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", self.core.name())
            .field("permits", &self.permits)
            .field("token", &self.core.token())
            .finish()
    }
}
