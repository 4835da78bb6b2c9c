//! All-or-nothing acquisition of several locks.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::acquire::Wait;
use crate::error::{Error, Result};
use crate::guard::Guard;
use crate::loss::LossSignal;
use crate::mutex::Mutex;
use crate::name::LockName;
use crate::reentrant::ReentrantMutex;
use crate::rwlock::RwLock;
use crate::semaphore::Semaphore;
use crate::signals::LostReason;

/// One part of a [`MultiLock`]: which lock and in which mode.
#[derive(Debug, Clone)]
pub enum LockSpec {
    /// A mutex.
    Mutex(Mutex),
    /// A re-entrant mutex (re-enters if its handle already holds it).
    Reentrant(ReentrantMutex),
    /// The read side of a read-write lock.
    Read(RwLock),
    /// The write side of a read-write lock.
    Write(RwLock),
    /// This many permits of a semaphore.
    Permits(Semaphore, u32),
}

impl From<Mutex> for LockSpec {
    fn from(mutex: Mutex) -> Self {
        LockSpec::Mutex(mutex)
    }
}

impl From<&Mutex> for LockSpec {
    fn from(mutex: &Mutex) -> Self {
        LockSpec::Mutex(mutex.clone())
    }
}

impl From<ReentrantMutex> for LockSpec {
    fn from(mutex: ReentrantMutex) -> Self {
        LockSpec::Reentrant(mutex)
    }
}

impl From<&ReentrantMutex> for LockSpec {
    fn from(mutex: &ReentrantMutex) -> Self {
        LockSpec::Reentrant(mutex.clone())
    }
}

/// A read-write lock as a part is its write side, the exclusive one (like a [`Mutex`]); use
/// [`RwLock::read_spec`] for the shared side.
impl From<RwLock> for LockSpec {
    fn from(rwlock: RwLock) -> Self {
        LockSpec::Write(rwlock)
    }
}

/// The write side; see `From<RwLock>`.
impl From<&RwLock> for LockSpec {
    fn from(rwlock: &RwLock) -> Self {
        LockSpec::Write(rwlock.clone())
    }
}

/// A semaphore as a part is one permit; use [`Semaphore::permits_spec`] (or a
/// `(semaphore, n)` pair) for more.
impl From<Semaphore> for LockSpec {
    fn from(semaphore: Semaphore) -> Self {
        LockSpec::Permits(semaphore, 1)
    }
}

/// One permit; see `From<Semaphore>`.
impl From<&Semaphore> for LockSpec {
    fn from(semaphore: &Semaphore) -> Self {
        LockSpec::Permits(semaphore.clone(), 1)
    }
}

/// `n` permits of the semaphore.
impl From<(Semaphore, u32)> for LockSpec {
    fn from((semaphore, permits): (Semaphore, u32)) -> Self {
        LockSpec::Permits(semaphore, permits)
    }
}

/// `n` permits of the semaphore.
impl From<(&Semaphore, u32)> for LockSpec {
    fn from((semaphore, permits): (&Semaphore, u32)) -> Self {
        LockSpec::Permits(semaphore.clone(), permits)
    }
}

/// A part as it is: lets [`MultiLock::new`] take specs and handles alike.
impl From<&LockSpec> for LockSpec {
    fn from(spec: &LockSpec) -> Self {
        spec.clone()
    }
}

impl LockSpec {
    fn name(&self) -> &LockName {
        match self {
            LockSpec::Mutex(m) => m.name(),
            LockSpec::Reentrant(m) => m.name(),
            LockSpec::Read(rw) | LockSpec::Write(rw) => rw.name(),
            LockSpec::Permits(s, _) => s.name(),
        }
    }

    fn address(&self) -> String {
        match self {
            LockSpec::Mutex(m) => m.backend().address(),
            LockSpec::Reentrant(m) => m.backend().address(),
            LockSpec::Read(rw) | LockSpec::Write(rw) => rw.backend().address(),
            LockSpec::Permits(s, _) => s.backend().address(),
        }
    }

    /// The global order every MultiLock acquires in: store address, then name.
    fn order_key(&self) -> (String, LockName) {
        (self.address(), self.name().clone())
    }

    async fn acquire(&self, wait: Wait) -> Result<Option<Box<dyn Guard>>> {
        fn boxed<G: Guard + 'static>(guard: Option<G>) -> Option<Box<dyn Guard>> {
            guard.map(|guard| Box::new(guard) as Box<dyn Guard>)
        }
        Ok(match self {
            LockSpec::Mutex(m) => boxed(m.acquire(wait).await?),
            LockSpec::Reentrant(m) => boxed(match wait {
                Wait::Forever => Some(m.lock().await?),
                Wait::No => m.try_lock().await?,
                Wait::For(limit) => m.lock_timeout(limit).await?,
            }),
            LockSpec::Read(rw) => boxed(rw.read_with(wait).await?),
            LockSpec::Write(rw) => boxed(rw.write_with(wait).await?),
            LockSpec::Permits(s, n) => boxed(s.acquire_with(*n, wait).await?),
        })
    }
}

/// Several locks taken all or nothing.
///
/// Parts are acquired one by one in a fixed global order (store address, then name), so two
/// MultiLocks over overlapping sets cannot deadlock each other. If any part cannot be had (busy
/// for `try_lock`, deadline for `lock_timeout`, or an error), the parts already held are released
/// before returning. A name may appear only once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
/// use tumbler_core::{LockSpec, MultiLock};
/// let locks = tumbler_core::memory::connect_new().await?;
/// let a = locks.mutex("accounts/a")?;
/// let b = locks.mutex("accounts/b")?;
/// let audit = locks.rwlock("audit")?;
///
/// let both = MultiLock::new(vec![LockSpec::from(&b), a.clone().into(), audit.read_spec()]);
/// let guard = both.lock().await?;
/// assert_eq!(guard.fencing_tokens().len(), 3);
/// assert!(a.try_lock().await?.is_none());
///
/// // All or nothing: while `a` is held elsewhere, nothing is taken.
/// guard.release().await?;
/// let held_a = a.lock().await?;
/// assert!(both.try_lock().await?.is_none());
/// assert!(b.try_lock().await?.is_some()); // b was not left held
/// held_a.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MultiLock {
    parts: Vec<LockSpec>,
}

impl MultiLock {
    /// A multi-lock over `parts` (anything convertible to a [`LockSpec`]).
    pub fn new<I>(parts: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<LockSpec>,
    {
        let mut parts: Vec<LockSpec> = parts.into_iter().map(Into::into).collect();
        parts.sort_by_key(LockSpec::order_key);
        MultiLock { parts }
    }

    /// The parts, in acquisition order.
    pub fn parts(&self) -> &[LockSpec] {
        &self.parts
    }

    /// Waits until every part is held.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes leaves nothing behind:
    /// the parts already held are released in the background (as dropped guards are), and the part
    /// being acquired leaves no hold and no queue entry, as each handle's own acquisition.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) when a lock appears twice among
    ///   the parts.
    /// - Any part's error (see that handle's methods), after the parts already held were released.
    pub async fn lock(&self) -> Result<MultiGuard> {
        self.acquire_all(None, true).await?.ok_or_else(|| {
            Error::backend(
                "multi",
                "a waiting acquisition of a MultiLock part returned busy",
            )
        })
    }

    /// One attempt at each part; `Ok(None)` (holding nothing) if any part is busy.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes leaves nothing behind:
    /// the parts already held are released in the background (as dropped guards are), and the part
    /// being acquired leaves no hold and no queue entry, as each handle's own acquisition.
    ///
    /// # Errors
    ///
    /// `Ok(None)`, holding nothing, when any part is busy.
    ///
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) when a lock appears twice among
    ///   the parts.
    /// - Any part's error (see that handle's methods), after the parts already held were released.
    pub async fn try_lock(&self) -> Result<Option<MultiGuard>> {
        self.acquire_all(None, false).await
    }

    /// Waits at most `timeout` for all parts together; `Ok(None)` (holding nothing) otherwise.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes leaves nothing behind:
    /// the parts already held are released in the background (as dropped guards are), and the part
    /// being acquired leaves no hold and no queue entry, as each handle's own acquisition.
    ///
    /// # Errors
    ///
    /// `Ok(None)`, holding nothing, when the parts could not all be had in time on a healthy
    /// connection.
    ///
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) when a lock appears twice among
    ///   the parts.
    /// - Any part's error (see that handle's methods), after the parts already held were released.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<Option<MultiGuard>> {
        self.acquire_all(Some(Instant::now() + timeout), true).await
    }

    async fn acquire_all(
        &self,
        deadline: Option<Instant>,
        wait: bool,
    ) -> Result<Option<MultiGuard>> {
        self.check_distinct()?;
        let mut held = MultiGuard { guards: Vec::new() };
        for part in &self.parts {
            let part_wait = match (wait, deadline) {
                (false, _) => Wait::No,
                (true, None) => Wait::Forever,
                (true, Some(deadline)) => {
                    Wait::For(deadline.saturating_duration_since(Instant::now()))
                }
            };
            match part.acquire(part_wait).await {
                Ok(Some(guard)) => held.guards.push(guard),
                Ok(None) => {
                    held.release_quietly().await;
                    return Ok(None);
                }
                Err(error) => {
                    held.release_quietly().await;
                    return Err(error);
                }
            }
        }
        Ok(Some(held))
    }

    fn check_distinct(&self) -> Result<()> {
        for pair in self.parts.windows(2) {
            if pair[0].order_key() == pair[1].order_key() {
                return Err(Error::invalid(
                    "MultiLock parts",
                    format!(
                        "{} appears twice; list each lock once (holding it twice would deadlock)",
                        pair[0].name()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl RwLock {
    /// This lock's read side, as a [`MultiLock`] part.
    pub fn read_spec(&self) -> LockSpec {
        LockSpec::Read(self.clone())
    }

    /// This lock's write side, as a [`MultiLock`] part.
    pub fn write_spec(&self) -> LockSpec {
        LockSpec::Write(self.clone())
    }
}

impl Semaphore {
    /// `permits` permits of this semaphore, as a [`MultiLock`] part.
    pub fn permits_spec(&self, permits: u32) -> LockSpec {
        LockSpec::Permits(self.clone(), permits)
    }
}

type LostWait<'a> = Pin<Box<dyn Future<Output = (LockName, LostReason)> + Send + 'a>>;

/// Every part of a [`MultiLock`], held.
#[must_use = "the locks are released when the guard is dropped"]
pub struct MultiGuard {
    guards: Vec<Box<dyn Guard>>,
}

impl std::fmt::Debug for MultiGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiGuard")
            .field("tokens", &self.fencing_tokens())
            .finish()
    }
}

impl MultiGuard {
    /// Each part's name and fencing token, in acquisition order.
    pub fn fencing_tokens(&self) -> Vec<(LockName, u64)> {
        self.guards
            .iter()
            .map(|g| (g.name().clone(), g.fencing_token()))
            .collect()
    }

    /// Resolves when any part is lost, with that part's name and the reason.
    pub async fn lost(&self) -> (LockName, LostReason) {
        let mut waits: Vec<LostWait<'_>> = self
            .guards
            .iter()
            .map(|g| {
                Box::pin(async move { (g.name().clone(), g.signals().lost().await) })
                    as LostWait<'_>
            })
            .collect();
        if waits.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            for wait in waits.iter_mut() {
                if let Poll::Ready(lost) = wait.as_mut().poll(cx) {
                    return Poll::Ready(lost);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// One [`LossSignal`] per part, in acquisition order, for tasks that watch the parts while
    /// the guard stays with the work.
    pub fn loss_signals(&self) -> Vec<LossSignal> {
        self.guards.iter().map(|g| g.loss_signal()).collect()
    }

    /// The first part found lost, if any.
    pub fn lost_reason(&self) -> Option<(LockName, LostReason)> {
        self.guards.iter().find_map(|g| {
            g.signals()
                .lost_reason()
                .map(|reason| (g.name().clone(), reason))
        })
    }

    /// Whether someone asked for any part to be released.
    pub fn is_revoke_requested(&self) -> bool {
        self.guards
            .iter()
            .any(|g| g.signals().is_revoke_requested())
    }

    /// Releases every part (in reverse order), even if some fail; reports the first failure.
    pub async fn release(mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(guard) = self.guards.pop() {
            if let Err(error) = guard.release_boxed().await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn release_quietly(&mut self) {
        while let Some(guard) = self.guards.pop() {
            let name = guard.name().clone();
            if let Err(error) = guard.release_boxed().await {
                tracing::warn!(%name, %error, "releasing a MultiLock part after a failed acquisition");
            }
        }
    }
}
