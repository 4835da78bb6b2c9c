//! The trait a store implements, and the values that cross it.
//!
//! A backend implements [`LockBackend`]: one `acquire` for every primitive (told apart by
//! [`LockKind`]), `state`, `request_revoke` and a connection-event stream. Everything users see
//! (deadlines, reentrancy, multi-lock, guards with drop-release, tracing) is built on top of it
//! once, in this crate.
//!
//! # What an implementation must guarantee
//!
//! The conformance suite checks these on every backend:
//! - `acquire` with [`AcquireRequest::wait`] false makes one attempt and returns `Ok(None)` when
//!   the lock is busy; with `wait` true it returns only once the hold is granted.
//! - The future returned by `acquire` is cancel-safe: dropping it at any await point leaves no
//!   hold and no queue entry behind (clean up in the background if needed, see
//!   [`crate::cleanup::CancelCleanup`]).
//! - [`HeldLock::release`] is owner-checked and idempotent, and returns `Ok` only when the store
//!   confirmed the release or confirmed the hold was already gone.
//! - A hold's [`HoldSignals`] report loss before another client can be granted the same lock.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::events::ConnectionEvents;
use crate::name::LockName;
use crate::signals::HoldSignals;

/// Which primitive an acquisition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// A mutex.
    Exclusive,
    /// The shared (read) side of a read-write lock.
    Read,
    /// The exclusive (write) side of a read-write lock.
    Write,
    /// `count` permits of a semaphore with `limit` permits in all.
    Permits {
        /// Total permits of the semaphore.
        limit: u32,
        /// Permits wanted by this acquisition, all or nothing.
        count: u32,
    },
    /// The leadership of an election: exclusive, like a mutex, and the hold advertises
    /// [`AcquireRequest::value`] to everyone who asks who leads (see [`crate::Election`]).
    Leader,
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockKind::Exclusive => f.write_str("mutex"),
            LockKind::Read => f.write_str("read"),
            LockKind::Write => f.write_str("write"),
            LockKind::Permits { limit, count } => write!(f, "{count} of {limit} permits"),
            LockKind::Leader => f.write_str("leadership"),
        }
    }
}

/// One acquisition request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireRequest {
    /// The lock.
    pub name: LockName,
    /// Which primitive and mode.
    pub kind: LockKind,
    /// Wait until granted (`true`) or make one attempt (`false`).
    pub wait: bool,
    /// What a campaign advertises while it leads ([`LockKind::Leader`] only; empty for every
    /// other kind). lockcore has checked it is neither empty nor longer than
    /// [`Capabilities::max_value_len`] before a backend sees it.
    pub value: Vec<u8>,
}

impl AcquireRequest {
    /// A request for `kind` on `name` with no value (every kind but [`LockKind::Leader`]).
    pub fn new(name: LockName, kind: LockKind, wait: bool) -> Self {
        AcquireRequest {
            name,
            kind,
            wait,
            value: Vec::new(),
        }
    }
}

/// The leader of an election, as [`LockBackend::leader`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaderInfo {
    /// What the leader advertises (its campaign value, or the last value it proclaimed).
    pub value: Vec<u8>,
    /// The leader's term: its hold's fencing token, strictly increasing across the leaders of
    /// one election where [`Capabilities::fencing`] says so.
    pub term: u64,
    /// The store's identity of the leader (lease, session, node or key), for messages.
    pub id: String,
}

/// A hold granted by a backend.
pub struct Hold {
    /// The fencing token (0 if the backend has none, see [`Capabilities::fencing`]).
    pub token: u64,
    /// Releases (and for write holds, downgrades) the hold.
    pub held: Box<dyn HeldLock>,
    /// Loss and revocation signals of this hold.
    pub signals: HoldSignals,
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("token", &self.token)
            .field("lost", &self.signals.lost_reason())
            .finish_non_exhaustive()
    }
}

/// The backend's handle on one granted hold.
#[async_trait]
pub trait HeldLock: Send + Sync + 'static {
    /// Releases the hold: stop renewing it and remove it from the store, only if it is still
    /// ours. Idempotent: a second call returns `Ok(())` without touching the store.
    ///
    /// Returns [`crate::Error::NotOwner`] when the store shows the hold was already gone or
    /// taken over before this release, and a connection error when the store could not confirm
    /// the release: never `Ok` without the store's confirmation.
    ///
    /// After a transient error ([`crate::Error::is_transient`]) lockcore calls `release` again
    /// in the background until the store confirms, so an implementation must keep renewing and
    /// stay ready to release after a failed attempt.
    async fn release(&mut self) -> Result<()>;

    /// Turns a write hold into a read hold without a moment in which neither is held.
    /// On success this hold counts as released and the read hold is returned.
    async fn downgrade(&mut self) -> Result<Hold> {
        Err(crate::Error::invalid(
            "downgrade",
            "only the write side of a read-write lock can be downgraded",
        ))
    }

    /// Replaces the value a leadership hold advertises, without giving up the leadership
    /// (etcd's `Proclaim`). Only for holds of [`LockKind::Leader`]; `value` has been checked
    /// like [`AcquireRequest::value`].
    ///
    /// Returns [`crate::Error::NotOwner`] when the store shows the hold is gone (nothing is
    /// written then), and a connection error when the store could not confirm the write.
    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        let _ = value;
        Err(crate::Error::invalid(
            "proclaim",
            "only a leadership (from Election::campaign) can proclaim a value",
        ))
    }
}

/// How one holder holds a lock, as reported by [`LockBackend::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldMode {
    /// Holds a mutex.
    Exclusive,
    /// Holds the read side.
    Read,
    /// Holds the write side.
    Write,
    /// Holds this many permits.
    Permits(u32),
    /// Leads an election.
    Leader,
}

/// One current holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderInfo {
    /// The store's identity of the holder (session id, lease id, node name, token).
    pub id: String,
    /// How it holds the lock.
    pub mode: HoldMode,
    /// Its fencing token, where the store can tell.
    pub token: Option<u64>,
}

/// A snapshot of one lock, from [`LockBackend::state`] (Curator's `isLocked`/participants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    /// The lock.
    pub name: LockName,
    /// The current holders (empty when free).
    pub holders: Vec<HolderInfo>,
    /// How many are waiting, where the store can tell (see [`Capabilities::lists_waiters`]).
    pub waiters: Option<usize>,
}

impl LockState {
    /// A free lock with no waiters.
    pub fn free(name: LockName) -> Self {
        LockState {
            name,
            holders: Vec::new(),
            waiters: Some(0),
        }
    }

    /// Whether anyone holds the lock.
    pub fn is_held(&self) -> bool {
        !self.holders.is_empty()
    }
}

/// A store that can hold locks. Object-safe: users pass `Arc<dyn LockBackend>` around.
///
/// Users rarely call these methods directly: [`crate::Mutex`], [`crate::ReentrantMutex`],
/// [`crate::Semaphore`], [`crate::RwLock`] and [`crate::MultiLock`] (created with
/// `locks.mutex(name)` etc. on an `Arc<dyn LockBackend>`) add deadlines, guards and tracing.
#[async_trait]
pub trait LockBackend: Send + Sync + 'static {
    /// What this backend offers.
    fn capabilities(&self) -> Capabilities;

    /// Where the store is, for messages (e.g. `redis://127.0.0.1:6379`).
    fn address(&self) -> String;

    /// Acquires a hold, waiting or making one attempt as `request.wait` says: `Ok(None)` only
    /// for one attempt that found the lock busy.
    ///
    /// # Cancel safety
    ///
    /// Every implementation must be cancel safe, because lockcore's deadlines drop this future:
    /// when it is dropped before completing, whatever it wrote on the store for this request (a
    /// queue entry, a contender node or key, a waiter session) is removed, and a hold granted
    /// at that moment is released, in the background if needed ([`crate::cleanup`] helps). The
    /// conformance suite's cancellation cases (promise 7) check this on every store.
    ///
    /// # Errors
    ///
    /// The same event is the same [`crate::Error`] variant on every store: `Connection` or
    /// `Timeout` for a store that cannot be reached (never `Ok(None)`), `Conflict` for another
    /// kind's use of the name or foreign data, `Recovering` while grants are held back after a
    /// restart, `Auth` for refused credentials, `Backend` for the store's own errors.
    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>>;

    /// A snapshot of who holds `name` and how many wait.
    async fn state(&self, name: &LockName) -> Result<LockState>;

    /// Asks every current holder of `name` to release (their `revoke_requested()` resolves).
    /// Returns how many holders were notified, where the store can tell.
    async fn request_revoke(&self, name: &LockName) -> Result<usize>;

    /// Connection events of this backend instance.
    fn connection_events(&self) -> ConnectionEvents;

    /// Releases every hold and waiter of this backend instance on the store (session, lease,
    /// keys) and stops its tasks. Call it before the process exits: a guard still alive then
    /// (say after an early `?` in `main`) would otherwise stay held until its TTL or session
    /// runs out on stores without sessions (Redis).
    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    /// The current leader of election `name`, or `None` when nobody leads.
    ///
    /// The default says the backend has no elections ([`crate::Error::Unsupported`]); a
    /// backend with [`Capabilities::election`] overrides it and
    /// [`LockBackend::leader_changed`].
    async fn leader(&self, name: &LockName) -> Result<Option<LeaderInfo>> {
        let _ = name;
        Err(crate::Error::Unsupported {
            capability: "election",
            backend: self.capabilities().backend,
        })
    }

    /// Waits until the leader of election `name` differs from `seen` (another leader, a new
    /// value proclaimed, or nobody leading where `seen` led), and returns it.
    ///
    /// Returns at once when the leader already differs. It may skip leaders that came and went
    /// between two reads, but never returns an older term than `seen`'s. Cancel safe: dropping
    /// the future leaves nothing behind. A store that cannot be reached gives `Connection` or
    /// `Timeout` within twice [`Capabilities::request_timeout`] of losing it (a re-read that
    /// finds it silent, then that read's own timeout), never a silent wait.
    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&LeaderInfo>,
    ) -> Result<Option<LeaderInfo>> {
        let _ = (name, seen);
        Err(crate::Error::Unsupported {
            capability: "election",
            backend: self.capabilities().backend,
        })
    }

    /// While the store may have lost locks in a restart and the backend grants nothing (Redis's
    /// restart protection), how much longer that lasts; `None` when locks are granted normally.
    async fn recovering(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A backend behind an `Arc` is a backend (so `Checked<Arc<B>>` and `Arc<Arc<B>>` work).
#[async_trait]
impl<B: LockBackend + ?Sized> LockBackend for Arc<B> {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn address(&self) -> String {
        (**self).address()
    }
    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        (**self).acquire(request).await
    }
    async fn state(&self, name: &LockName) -> Result<LockState> {
        (**self).state(name).await
    }
    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        (**self).request_revoke(name).await
    }
    fn connection_events(&self) -> ConnectionEvents {
        (**self).connection_events()
    }
    async fn shutdown(&self) -> Result<()> {
        (**self).shutdown().await
    }
    async fn recovering(&self) -> Option<std::time::Duration> {
        (**self).recovering().await
    }
    async fn leader(&self, name: &LockName) -> Result<Option<LeaderInfo>> {
        (**self).leader(name).await
    }
    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&LeaderInfo>,
    ) -> Result<Option<LeaderInfo>> {
        (**self).leader_changed(name, seen).await
    }
}

/// A shared backend, as returned by `tumbler_locks::connect`.
pub type SharedBackend = Arc<dyn LockBackend>;
