//! # tumbler-core
//!
//! The core of tumbler: one async API for distributed locks, whatever the store.
//!
//! - [`LockBackend`] is the small trait a store implements (one `acquire` for every
//!   primitive, `state`, `request_revoke`, connection events). Users hold it as
//!   `Arc<dyn LockBackend>` and create handles from it: `locks.mutex(name)`,
//!   `locks.reentrant_mutex(name)`, `locks.semaphore(name, limit)`, `locks.rwlock(name)`,
//!   `locks.election(name)`.
//! - [`Mutex`], [`ReentrantMutex`], [`Semaphore`], [`RwLock`] and [`MultiLock`] add deadlines,
//!   re-entrancy, all-or-nothing acquisition, guards with drop-release and tracing spans, once
//!   for every store.
//! - Every guard has a [fencing token](MutexGuard::fencing_token), a [`lost()`](MutexGuard::lost)
//!   signal (also as a cloneable [`LossSignal`] for a task that watches it) and a
//!   [`revoke_requested()`](MutexGuard::revoke_requested) signal.
//! - [`memory`] is the in-process reference backend.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
//! let locks = tumbler_core::memory::connect_new().await?;
//! let nightly = locks.mutex("jobs/nightly")?;
//! let guard = nightly.lock().await?;
//! tokio::select! {
//!     reason = guard.lost() => eprintln!("stop: lock lost ({reason})"),
//!     _ = async { /* the protected work, passing guard.fencing_token() along */ } => {}
//! }
//! guard.release().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod acquire;
mod backend;
mod background;
mod capabilities;
mod checked;
mod client;
mod election;
mod error;
mod events;
mod guard;
pub mod keeper;
mod loss;
pub mod memory;
pub mod metrics;
mod multi;
mod mutex;
mod name;
pub mod params;
mod reentrant;
pub mod retry;
mod rwlock;
mod semaphore;
mod signals;
pub mod tls;
pub mod url;

/// Work that must finish after its owner is gone: cleanup of cancelled acquisitions and
/// drop-release, with or without a runtime.
pub mod cleanup {
    pub use crate::background::{
        background_runtime, on_background_runtime, spawn_detached, spawn_detached_on,
        spawn_restartable, spawn_restartable_on, CancelCleanup, FinishOnDrop, RestartableCleanup,
    };
}

pub use backend::{
    AcquireRequest, HeldLock, Hold, HoldMode, HolderInfo, LeaderInfo, LockBackend, LockKind,
    LockState, SharedBackend,
};
pub use capabilities::{Capabilities, Fencing, DEFAULT_MAX_VALUE_LEN, DEFAULT_REQUEST_TIMEOUT};
pub use checked::{share, validate, validate_value, Checked};
pub use client::LockExt;
pub use election::{Election, Leadership, Observer};
pub use error::{with_article, BoxError, Error, Result};
pub use events::{ConnectionEvent, ConnectionEvents, ConnectionMonitor};
pub use guard::Guard;
pub use loss::LossSignal;
pub use multi::{LockSpec, MultiGuard, MultiLock};
pub use mutex::{Mutex, MutexGuard};
pub use name::{IntoLockName, LockName, NameRule, MAX_NAME_LEN};
pub use reentrant::{ReentrantGuard, ReentrantMutex};
pub use rwlock::{ReadGuard, RwLock, WriteGuard};
pub use semaphore::{Lease, Semaphore, MAX_PERMITS};
pub use signals::{hold_signals, HoldNotifier, HoldSignals, LossLatch, LostReason};
