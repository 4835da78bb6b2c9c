//! The re-entrant mutex: one hold per handle, counted.

use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdMutexGuard};
use std::time::Duration;

use crate::acquire::Wait;
use crate::backend::LockState;
use crate::error::{Error, Result};
use crate::guard::HoldCore;
use crate::mutex::Mutex;
use crate::name::LockName;
use crate::signals::HoldSignals;

/// A distributed mutex that the same handle can lock again while it holds it.
///
/// The owner is the handle (and its clones), never a thread or task: any task that shares the
/// handle may re-enter, across `.await` points and threads. The first `lock` acquires on the
/// store; later ones only count. The store lock is released when the last guard is released.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
/// let locks = tumbler_core::memory::connect_new().await?;
/// let reentrant = locks.reentrant_mutex("config/reload")?;
///
/// let outer = reentrant.lock().await?;
/// let inner = reentrant.lock().await?; // same handle: no wait
/// assert_eq!(reentrant.hold_count(), 2);
/// assert_eq!(inner.fencing_token(), outer.fencing_token());
///
/// // Another handle is another owner: it has to wait.
/// let other = locks.reentrant_mutex("config/reload")?;
/// assert!(other.try_lock().await?.is_none());
///
/// inner.release().await?;
/// outer.release().await?; // the store lock is released here
/// assert!(other.try_lock().await?.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReentrantMutex {
    mutex: Mutex,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReentrantMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReentrantMutex")
            .field("name", self.mutex.name())
            .field("hold_count", &self.hold_count())
            .finish()
    }
}

struct Shared {
    /// Serialises the first acquisition of concurrent `lock` calls on this handle.
    gate: tokio::sync::Mutex<()>,
    slot: StdMutex<Slot>,
}

#[derive(Default)]
struct Slot {
    hold: Option<HoldCore>,
    count: usize,
}

impl Shared {
    fn slot(&self) -> StdMutexGuard<'_, Slot> {
        // A poisoned slot only means a panic elsewhere; its data stays consistent.
        self.slot
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl ReentrantMutex {
    pub(crate) fn new(mutex: Mutex) -> Self {
        ReentrantMutex {
            mutex,
            shared: Arc::new(Shared {
                gate: tokio::sync::Mutex::new(()),
                slot: StdMutex::new(Slot::default()),
            }),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &LockName {
        self.mutex.name()
    }

    /// The backend this lock lives on.
    pub fn backend(&self) -> &crate::SharedBackend {
        self.mutex.backend()
    }

    /// How many guards of this handle are live (0 when it does not hold the lock).
    pub fn hold_count(&self) -> usize {
        self.shared.slot().count
    }

    /// Waits until this handle holds the lock; re-enters at once if it already does.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no hold and no queue entry.
    /// The backend removes what it had written for this acquisition, and a grant that raced with
    /// the cancellation is released in the background. Re-entering (this handle already holds the
    /// lock) does not await the store, and a cancelled call changes no hold count.
    ///
    /// # Errors
    ///
    /// - [`Error::NotOwner`](crate::Error::NotOwner) when this handle's hold has been lost: release
    ///   its guards first.
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
    pub async fn lock(&self) -> Result<ReentrantGuard> {
        if let Some(guard) = self.reenter()? {
            return Ok(guard);
        }
        let _gate = self.shared.gate.lock().await;
        if let Some(guard) = self.reenter()? {
            return Ok(guard);
        }
        let guard = self.mutex.lock().await?;
        Ok(self.install(guard.into_core()))
    }

    /// One attempt; re-enters at once if this handle holds the lock. `Ok(None)` if another
    /// owner holds it, or another task of this handle is acquiring it right now.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no hold and no queue entry.
    /// The backend removes what it had written for this acquisition, and a grant that raced with
    /// the cancellation is released in the background. Re-entering (this handle already holds the
    /// lock) does not await the store, and a cancelled call changes no hold count.
    ///
    /// # Errors
    ///
    /// - [`Error::NotOwner`](crate::Error::NotOwner) when this handle's hold has been lost: release
    ///   its guards first.
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
    pub async fn try_lock(&self) -> Result<Option<ReentrantGuard>> {
        if let Some(guard) = self.reenter()? {
            return Ok(Some(guard));
        }
        let Ok(_gate) = self.shared.gate.try_lock() else {
            return Ok(None);
        };
        if let Some(guard) = self.reenter()? {
            return Ok(Some(guard));
        }
        let guard = self.mutex.acquire(Wait::No).await?;
        Ok(guard.map(|guard| self.install(guard.into_core())))
    }

    /// Waits at most `timeout`; re-enters at once if this handle holds the lock.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes (a `select!` branch that
    /// lost, a timeout, an aborted task) leaves nothing on the store: no hold and no queue entry.
    /// The backend removes what it had written for this acquisition, and a grant that raced with
    /// the cancellation is released in the background. Re-entering (this handle already holds the
    /// lock) does not await the store, and a cancelled call changes no hold count.
    ///
    /// # Errors
    ///
    /// - [`Error::NotOwner`](crate::Error::NotOwner) when this handle's hold has been lost: release
    ///   its guards first.
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
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<Option<ReentrantGuard>> {
        if timeout.is_zero() {
            return self.try_lock().await;
        }
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, self.lock()).await {
            Ok(result) => result.map(Some),
            Err(_) => {
                let name = self.mutex.name();
                crate::acquire::gave_up(
                    self.mutex.backend(),
                    || format!("re-entrant mutex acquire of {name}"),
                    started,
                )?;
                Ok(None)
            }
        }
    }

    /// Who holds the lock and how many wait.
    pub async fn state(&self) -> Result<LockState> {
        self.mutex.state().await
    }

    fn reenter(&self) -> Result<Option<ReentrantGuard>> {
        let mut slot = self.shared.slot();
        let Some(hold) = slot.hold.as_ref() else {
            return Ok(None);
        };
        if hold.signals().lost_reason().is_some() {
            return Err(Error::NotOwner {
                name: hold.name().clone(),
            });
        }
        let guard = self.guard_for(hold);
        slot.count += 1;
        Ok(Some(guard))
    }

    fn install(&self, core: HoldCore) -> ReentrantGuard {
        let mut slot = self.shared.slot();
        let guard = self.guard_for(&core);
        slot.hold = Some(core);
        slot.count = 1;
        guard
    }

    fn guard_for(&self, core: &HoldCore) -> ReentrantGuard {
        ReentrantGuard {
            shared: self.shared.clone(),
            view: GuardView {
                name: core.name().clone(),
                token: core.token(),
                signals: core.signals().clone(),
            },
            counted: true,
        }
    }
}

/// The parts of a shared hold a guard can read without locking.
struct GuardView {
    name: LockName,
    token: u64,
    signals: HoldSignals,
}

impl GuardView {
    fn name(&self) -> &LockName {
        &self.name
    }
    fn token(&self) -> u64 {
        self.token
    }
    fn signals(&self) -> &HoldSignals {
        &self.signals
    }
}

/// One level of a [`ReentrantMutex`] hold. The store lock is released with the last one.
#[must_use = "the hold count is decremented when the guard is dropped"]
pub struct ReentrantGuard {
    shared: Arc<Shared>,
    view: GuardView,
    counted: bool,
}

crate::guard::hold_accessors!(ReentrantGuard, view);

impl ReentrantGuard {
    /// Gives up this level; the last level releases the store lock and reports what the store
    /// confirmed.
    pub async fn release(mut self) -> Result<()> {
        self.counted = false;
        match take_last(&self.shared) {
            Some(core) => core.release().await,
            None => Ok(()),
        }
    }
}

/// Counts one level down; returns the hold when that was the last level.
fn take_last(shared: &Shared) -> Option<HoldCore> {
    let mut slot = shared.slot();
    slot.count = slot.count.saturating_sub(1);
    if slot.count == 0 {
        slot.hold.take()
    } else {
        None
    }
}

impl Drop for ReentrantGuard {
    fn drop(&mut self) {
        if self.counted {
            // Dropping the last hold releases it in the background (and logs a warning).
            drop(take_last(&self.shared));
        }
    }
}

impl std::fmt::Debug for ReentrantGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReentrantGuard")
            .field("name", &self.view.name)
            .field("token", &self.view.token)
            .finish()
    }
}
