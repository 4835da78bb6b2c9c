//! What every guard and lease shares: the hold, its signals, explicit release and
//! drop-release in the background.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::runtime::Handle;
use tracing::Instrument;

use crate::backend::{HeldLock, Hold, LockKind};
use crate::background::{spawn_detached_on, spawn_restartable_on};
use crate::error::Result;
use crate::loss::LossSignal;
use crate::metrics::LockLabels;
use crate::name::LockName;
use crate::retry::Backoff;
use crate::signals::{HoldSignals, LostReason};

/// One granted hold as lockcore keeps it inside a guard.
pub(crate) struct HoldCore {
    name: LockName,
    kind: LockKind,
    backend: &'static str,
    token: u64,
    signals: HoldSignals,
    held: Option<Box<dyn HeldLock>>,
    runtime: Option<Handle>,
    acquired_at: Instant,
    labels: LockLabels,
}

impl HoldCore {
    pub(crate) fn new(name: LockName, kind: LockKind, backend: &'static str, hold: Hold) -> Self {
        let labels = LockLabels::new(backend, kind, &name);
        hold.signals.metric_slot().set(Some(labels.clone()));
        HoldCore {
            name,
            kind,
            backend,
            token: hold.token,
            signals: hold.signals,
            held: Some(hold.held),
            runtime: Handle::try_current().ok(),
            acquired_at: Instant::now(),
            labels,
        }
    }

    /// The hold ends (released or dropped): its time held is recorded, and a loss reported
    /// from now on is no loss of a live hold.
    fn ended(&self) {
        self.signals.metric_slot().set(None);
        crate::metrics::hold_ended(&self.labels, self.acquired_at.elapsed());
    }

    pub(crate) fn name(&self) -> &LockName {
        &self.name
    }

    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn signals(&self) -> &HoldSignals {
        &self.signals
    }

    pub(crate) fn acquired_at(&self) -> Instant {
        self.acquired_at
    }

    /// Releases the hold inside a `release` span and reports what the store confirmed.
    pub(crate) async fn release(mut self) -> Result<()> {
        let Some(mut held) = self.held.take() else {
            return Ok(());
        };
        self.ended();
        let span = tracing::info_span!(
            "release",
            backend = self.backend,
            name = %self.name,
            kind = %self.kind,
            token = self.token,
            held_ms = self.acquired_at.elapsed().as_millis() as u64,
        );
        let runtime = self.runtime.clone();
        let name = self.name.clone();
        async move {
            let result = held.release().await;
            match &result {
                Ok(()) => tracing::debug!("released"),
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, "release not confirmed; retrying in the background");
                    spawn_detached_on(
                        runtime.as_ref(),
                        "release retry",
                        async move { retry_release(&mut held, name).await }.in_current_span(),
                    );
                }
                Err(error) => tracing::warn!(%error, "release failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Replaces the value this leadership hold advertises, inside a `proclaim` span.
    pub(crate) async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        let Some(held) = self.held.as_mut() else {
            return Err(crate::Error::NotOwner {
                name: self.name.clone(),
            });
        };
        let span = tracing::info_span!(
            "proclaim",
            backend = self.backend,
            name = %self.name,
            token = self.token,
            bytes = value.len(),
        );
        held.proclaim(value).instrument(span).await
    }

    /// Turns this write hold into a read hold; on failure the write hold is kept.
    pub(crate) async fn downgrade(&mut self) -> Result<HoldCore> {
        let Some(held) = self.held.as_mut() else {
            return Err(crate::Error::NotOwner {
                name: self.name.clone(),
            });
        };
        let span = tracing::info_span!("downgrade", backend = self.backend, name = %self.name);
        let hold = held.downgrade().instrument(span).await?;
        self.held = None;
        Ok(HoldCore::new(
            self.name.clone(),
            LockKind::Read,
            self.backend,
            hold,
        ))
    }
}

impl Drop for HoldCore {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        self.ended();
        tracing::warn!(
            backend = self.backend,
            name = %self.name,
            kind = %self.kind,
            "guard dropped without release(); releasing in the background (call release().await \
             to learn whether the store confirmed it)"
        );
        let name = self.name.clone();
        // Restartable: a guard dropped inside a runtime that ends right after (the end of a
        // `block_on`) would otherwise lose its release with the unpolled task, while the
        // hold's session, renewed on the acquiring runtime, keeps the lock held. The hold
        // stays in the slot until the release is done, so a restart releases it again.
        let slot = Arc::new(tokio::sync::Mutex::new(Some(held)));
        spawn_restartable_on(self.runtime.as_ref(), "drop-release", move || {
            let (slot, name) = (slot.clone(), name.clone());
            async move {
                let mut slot = slot.lock().await;
                let Some(held) = slot.as_mut() else {
                    return;
                };
                match held.release().await {
                    Ok(()) => {}
                    Err(error) if error.is_transient() => retry_release(held, name).await,
                    Err(error) => tracing::warn!(%name, %error, "background release failed"),
                }
                *slot = None;
            }
        });
    }
}

/// How long a release that could not reach the store keeps being retried in the background.
const RELEASE_RETRY_LIMIT: Duration = Duration::from_secs(3600);

/// Retries a release that failed for a transient reason (connection, timeout) until the store
/// confirms it or reports the hold gone, so that a hold is never left renewed forever by a
/// release that happened during a network blip.
async fn retry_release(held: &mut Box<dyn HeldLock>, name: LockName) {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(backoff.next_delay()).await;
        match held.release().await {
            Ok(()) => {
                tracing::info!(%name, "background release confirmed");
                return;
            }
            Err(error) if error.is_transient() && started.elapsed() < RELEASE_RETRY_LIMIT => {
                tracing::debug!(%name, %error, "background release still failing");
            }
            Err(error) => {
                tracing::warn!(%name, %error, "background release gave up");
                return;
            }
        }
    }
}

/// What every guard and lease offers; lets code hold any of them (see [`crate::MultiGuard`]).
#[async_trait]
pub trait Guard: Send + Sync {
    /// The lock this guard holds.
    fn name(&self) -> &LockName;
    /// The fencing token of this hold.
    fn fencing_token(&self) -> u64;
    /// The hold's loss and revocation signals.
    fn signals(&self) -> &HoldSignals;
    /// A cloneable handle on this hold's loss signal, to watch from another task.
    fn loss_signal(&self) -> LossSignal {
        LossSignal::new(self.name().clone(), self.signals().clone())
    }
    /// Releases the hold.
    async fn release_boxed(self: Box<Self>) -> Result<()>;
}

/// Resolves when the hold behind `signals` is lost.
pub(crate) async fn lost(signals: &HoldSignals) -> LostReason {
    signals.lost().await
}

/// Writes the accessors every guard type has, so they read the same everywhere.
macro_rules! hold_accessors {
    ($ty:ident, $($core:tt)+) => {
        impl $ty {
            /// The lock this guard holds.
            pub fn name(&self) -> &$crate::LockName {
                self.$($core)+.name()
            }

            /// The fencing token of this hold: for one name it strictly increases across every
            /// acquisition by every client, where [`crate::Capabilities::fencing`] says so.
            /// Pass it to the resource you protect and have it reject lower tokens.
            pub fn fencing_token(&self) -> u64 {
                self.$($core)+.token()
            }

            /// Resolves when ownership can no longer be guaranteed (session expired, renewal
            /// failed, record deleted, disconnected too long). Stop the protected work then.
            pub async fn lost(&self) -> $crate::LostReason {
                $crate::guard::lost(self.$($core)+.signals()).await
            }

            /// Whether the hold has been lost, and why. Once `Some`, it stays `Some` (a renewal
            /// that succeeds after the validity deadline passed does not bring the hold back).
            pub fn lost_reason(&self) -> Option<$crate::LostReason> {
                self.$($core)+.signals().lost_reason()
            }

            /// A cheap, cloneable, `'static` handle on this hold's [`lost()`](Self::lost)
            /// signal, for a task that watches the hold while the guard stays with the work
            /// (no `Arc` around the guard needed). See [`LossSignal`](crate::LossSignal).
            pub fn loss_signal(&self) -> $crate::LossSignal {
                $crate::Guard::loss_signal(self)
            }

            /// Resolves when someone asked for this lock to be released (cooperative revocation).
            pub async fn revoke_requested(&self) {
                self.$($core)+.signals().revoke_requested().await
            }

            /// Whether someone asked for this lock to be released.
            pub fn is_revoke_requested(&self) -> bool {
                self.$($core)+.signals().is_revoke_requested()
            }
        }

        #[async_trait::async_trait]
        impl $crate::Guard for $ty {
            fn name(&self) -> &$crate::LockName {
                self.$($core)+.name()
            }
            fn fencing_token(&self) -> u64 {
                self.$($core)+.token()
            }
            fn signals(&self) -> &$crate::HoldSignals {
                self.$($core)+.signals()
            }
            async fn release_boxed(self: Box<Self>) -> $crate::Result<()> {
                (*self).release().await
            }
        }
    };
}
pub(crate) use hold_accessors;
