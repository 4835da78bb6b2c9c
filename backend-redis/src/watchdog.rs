//! The watchdog of one hold: renews it every third of the TTL, and fires `lost()` as soon as
//! the hold can no longer be vouched for.
//!
//! A hold is vouched for until `sent + ttl - drift`, where `sent` is when the last successful
//! renewal (or the acquisition) was *sent*: the server started the new TTL no earlier than that,
//! so by the holder's clock (given the drift allowance) the key cannot have expired yet. When
//! renewals fail (connection cut, server paused) the watchdog keeps trying until that moment
//! and then fires `lost()`, before any rival can take the key. A renewal that finds the key
//! gone or taken over fires `lost()` at once. The watchdog is owned by the guard: it stops when
//! the hold is released or its guard dropped, and it renews at once after a reconnect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lockcore::{Error, HoldNotifier, LockName, LostReason};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// What one renewal found.
pub(crate) enum Renewal {
    /// The TTL was extended; `revoke` if someone asked the holder to release.
    Renewed { revoke: bool },
    /// The hold is gone from the store (expired, deleted, taken over).
    Gone,
    /// The hold changed shape meanwhile (downgrade): renew again at once.
    Retry,
    /// The store could not be asked.
    Failed(Error),
}

/// Renews one hold on the store.
#[async_trait]
pub(crate) trait Renewer: Send + Sync + 'static {
    async fn renew(&self) -> Renewal;
}

/// The timing of a watchdog.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long after a renewal is sent the hold is vouched for (`ttl - drift`).
    pub(crate) validity: Duration,
    /// How often to renew.
    pub(crate) period: Duration,
}

impl Timing {
    fn retry_pause(&self) -> Duration {
        (self.period / 8).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }
}

/// Starts the watchdog of a hold granted by a request sent at `sent`.
pub(crate) fn spawn(
    renewer: Arc<dyn Renewer>,
    notifier: Arc<HoldNotifier>,
    timing: Timing,
    sent: Instant,
    kicks: watch::Receiver<u64>,
    name: LockName,
    token: u64,
) -> JoinHandle<()> {
    let span = tracing::info_span!("watchdog", backend = "redis", %name, token);
    tokio::spawn(run(renewer, notifier, timing, sent, kicks).instrument(span))
}

async fn run(
    renewer: Arc<dyn Renewer>,
    notifier: Arc<HoldNotifier>,
    timing: Timing,
    sent: Instant,
    mut kicks: watch::Receiver<u64>,
) {
    let mut valid_until = sent + timing.validity;
    // lockcore checks this deadline on the holder's clock too, so a holder that was stopped
    // past it sees the loss the moment it runs again, before this task had a chance to run.
    notifier.set_valid_until(Some(valid_until));
    let mut next = sent + timing.period;
    let mut failure: Option<Error> = None;
    let mut kicks_alive = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(valid_until).into()) => {}
            changed = kicks.changed(), if kicks_alive => {
                // Reconnected: renew now, which also finds out whether a restart lost the key.
                kicks_alive = changed.is_ok();
            }
            _ = notifier.closed() => return,
        }
        if Instant::now() >= valid_until {
            declare_lost(&notifier, failure.as_ref());
            return;
        }
        let attempt = Instant::now();
        let outcome = tokio::select! {
            outcome = renewer.renew().instrument(tracing::debug_span!("renew")) => outcome,
            _ = tokio::time::sleep_until(valid_until.into()) => {
                declare_lost(&notifier, failure.as_ref());
                return;
            }
        };
        match outcome {
            Renewal::Renewed { revoke } => {
                valid_until = attempt + timing.validity;
                notifier.set_valid_until(Some(valid_until));
                next = attempt + timing.period;
                if failure.take().is_some() {
                    tracing::info!("renewal works again");
                }
                if revoke && !notifier.is_lost() {
                    notifier.revoke_requested();
                }
            }
            Renewal::Gone => {
                if notifier.lost(LostReason::Deleted) {
                    tracing::warn!("lock lost: the key expired, was deleted or was taken over");
                }
                return;
            }
            Renewal::Retry => next = Instant::now(),
            Renewal::Failed(error) => {
                tracing::debug!(%error, "renewal failed; retrying until the hold runs out");
                failure = Some(error);
                next = Instant::now() + timing.retry_pause();
            }
        }
    }
}

fn declare_lost(notifier: &HoldNotifier, failure: Option<&Error>) {
    let reason = match failure {
        Some(error) if error.is_transient() => LostReason::Disconnected,
        _ => LostReason::RenewalFailed,
    };
    if notifier.lost(reason.clone()) {
        match failure {
            Some(error) => tracing::warn!(%reason, %error, "lock lost: not renewed in time"),
            None => tracing::warn!(%reason, "lock lost: not renewed in time (process stalled?)"),
        }
    }
}
