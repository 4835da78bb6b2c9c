//! One keeper for everything a store renews: a session, a lease or a TTL'd key.
//!
//! Every store vouches for a hold only for a while after a renewal (or the acquiring request)
//! was *sent*: the server cannot have expired it before then, whatever happened to the reply.
//! This module states each store's formula once ([`Validity`]), fans the resulting deadline and
//! any loss out to the holds that depend on one session ([`HoldSet`]), and runs the renewal
//! loop ([`Keeper`]) around a store-specific [`Renew`] call.
//!
//! # Validity per store
//!
//! | store | vouched for after a renewal was sent | why |
//! |---|---|---|
//! | Redis | `ttl − drift`, drift = 1 % of ttl + 2 ms | Redlock's clock-drift allowance |
//! | etcd | `0.75 × ttl` | the lease TTL; the rest is the margin for timer lateness |
//! | Consul | `0.9 × ttl` | the session TTL (Consul may wait up to 2× before invalidating) |
//! | ZooKeeper | `timeout − max(1 s, timeout / 3)` | the negotiated session timeout |
//!
//! The deadline is published on a hold's [`HoldSignals`](crate::HoldSignals) at the grant, so a
//! holder stalled right after `lock()` returns sees the loss on its next look, with no `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::Instrument;

use crate::error::Error;
use crate::events::{ConnectionEvent, ConnectionMonitor};
use crate::retry::Backoff;
use crate::signals::{HoldNotifier, LostReason};

/// How long a store vouches for a hold after the renewal (or grant) request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    period: Duration,
}

impl Validity {
    /// A fixed span.
    pub const fn fixed(period: Duration) -> Self {
        Validity { period }
    }

    /// Redis and Redlock: the key's TTL minus the clock-drift allowance `drift`
    /// (see [`Validity::redis_drift`]).
    pub fn redis(ttl: Duration, drift: Duration) -> Self {
        Validity::fixed(ttl.saturating_sub(drift))
    }

    /// The default Redis clock-drift allowance: 1 % of the TTL plus 2 ms (Redlock's).
    pub fn redis_drift(ttl: Duration) -> Duration {
        ttl / 100 + Duration::from_millis(2)
    }

    /// etcd: three quarters of the lease TTL.
    pub fn etcd(ttl: Duration) -> Self {
        Validity::fixed(ttl.mul_f64(0.75))
    }

    /// Consul: nine tenths of the session TTL.
    pub fn consul(ttl: Duration) -> Self {
        Validity::fixed(ttl.mul_f64(0.9))
    }

    /// ZooKeeper: the session timeout less `max(1 s, timeout / 3)` (at least half the timeout).
    pub fn zookeeper(session_timeout: Duration) -> Self {
        let margin = (session_timeout / 3).max(Duration::from_secs(1));
        let period = session_timeout
            .saturating_sub(margin)
            .max(session_timeout / 2);
        Validity::fixed(period)
    }

    /// The vouched-for span.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The deadline for a renewal or grant request sent at `sent`.
    pub fn deadline(&self, sent: Instant) -> Instant {
        sent + self.period
    }
}

/// The holds one session, lease or key vouches for: the validity deadline and any loss reach
/// every one of them.
#[derive(Debug, Default)]
pub struct HoldSet {
    inner: StdMutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    holds: HashMap<u64, Arc<HoldNotifier>>,
    deadline: Option<Instant>,
    lost: Option<LostReason>,
}

impl HoldSet {
    /// An empty set with no deadline.
    pub fn new() -> Arc<Self> {
        Arc::new(HoldSet::default())
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a hold. It gets the current deadline at once (validity from the grant); if the
    /// set was already lost, the hold is lost at once too. Dropping the ticket unregisters it.
    pub fn register(self: &Arc<Self>, notifier: HoldNotifier) -> HoldTicket {
        let notifier = Arc::new(notifier);
        let mut inner = self.inner();
        if let Some(reason) = inner.lost.clone() {
            notifier.lost(reason);
        }
        notifier.set_valid_until(inner.deadline);
        inner.next += 1;
        let id = inner.next;
        inner.holds.insert(id, notifier.clone());
        HoldTicket {
            set: Arc::downgrade(self),
            id,
            notifier,
        }
    }

    /// Moves the deadline of every hold forward to `deadline` (never back).
    pub fn publish_deadline(&self, deadline: Instant) {
        let mut inner = self.inner();
        if inner.lost.is_some() || inner.deadline.is_some_and(|now| now >= deadline) {
            return;
        }
        inner.deadline = Some(deadline);
        for hold in inner.holds.values() {
            hold.set_valid_until(Some(deadline));
        }
    }

    /// The current deadline, if one was published.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner().deadline
    }

    /// Marks every hold lost with `reason` (the first reason wins); holds registered later are
    /// lost at once. Returns false if the set was lost already.
    pub fn lose_all(&self, reason: LostReason) -> bool {
        let mut inner = self.inner();
        if inner.lost.is_some() {
            return false;
        }
        inner.lost = Some(reason.clone());
        for hold in inner.holds.values() {
            hold.lost(reason.clone());
        }
        true
    }

    /// Why the set was lost, if it was.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.inner().lost.clone()
    }

    /// How many holds are registered.
    pub fn len(&self) -> usize {
        self.inner().holds.len()
    }

    /// Whether no hold is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One hold's place in a [`HoldSet`]; unregisters it when dropped.
#[derive(Debug)]
pub struct HoldTicket {
    set: Weak<HoldSet>,
    id: u64,
    notifier: Arc<HoldNotifier>,
}

impl HoldTicket {
    /// The hold's own notifier (to report a loss of this hold only, or a revocation request).
    pub fn notifier(&self) -> &HoldNotifier {
        &self.notifier
    }
}

impl Drop for HoldTicket {
    fn drop(&mut self) {
        if let Some(set) = self.set.upgrade() {
            set.inner().holds.remove(&self.id);
        }
    }
}

/// What one renewal attempt found.
#[derive(Debug)]
pub enum Renewal {
    /// The store confirmed: the hold is good for another validity period from the send time.
    Renewed,
    /// The store says the session, lease or key is gone.
    Gone(LostReason),
    /// The attempt failed (connection, timeout): retried until the deadline passes.
    Failed(Error),
}

/// One renewal attempt of a session, lease or key: the store-specific part of a [`Keeper`].
#[async_trait]
pub trait Renew: Send + Sync + 'static {
    /// Renews once.
    async fn renew(&self) -> Renewal;
}

/// The renewal loop of one session, lease or key. Dropping it (or [`Keeper::stop`]) stops the
/// loop without touching the holds.
#[derive(Debug)]
pub struct Keeper {
    task: tokio::task::AbortHandle,
    ended: watch::Receiver<Option<LostReason>>,
}

/// How a [`Keeper`] runs.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// Names the keeper in logs and spans, e.g. `"etcd lease"`.
    pub what: &'static str,
    /// The store's validity formula.
    pub validity: Validity,
    /// The pause between successful renewals.
    pub every: Duration,
    /// Where to report Suspended (a failed renewal), Reconnected (renewed again) and Lost.
    pub monitor: Option<Arc<ConnectionMonitor>>,
}

impl Keeper {
    /// Starts renewing. The holds get the deadline `validity.deadline(granted_sent)` at once,
    /// where `granted_sent` is when the request that created the session or hold was sent.
    ///
    /// Every `every`, the keeper notes the send time and calls [`Renew::renew`]:
    /// - `Renewed`: publishes `validity.deadline(sent)`;
    /// - `Failed`: retries with backoff; once the deadline passes, every hold is lost with
    ///   [`LostReason::RenewalFailed`] and the keeper ends;
    /// - `Gone(reason)`: every hold is lost with `reason` and the keeper ends.
    ///
    /// [`Keeper::ended`] tells the owner when and why, so it can replace the session.
    pub fn spawn(
        config: KeeperConfig,
        renew: Arc<dyn Renew>,
        holds: Arc<HoldSet>,
        granted_sent: Instant,
    ) -> Keeper {
        holds.publish_deadline(config.validity.deadline(granted_sent));
        let (ended_tx, ended) = watch::channel(None);
        let span = tracing::info_span!("renew", what = config.what);
        let task = keep(config, renew, holds, ended_tx).instrument(span);
        let handle = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(crate::background::fallback_runtime);
        let task = match handle {
            Some(handle) => handle.spawn(task).abort_handle(),
            None => tokio::spawn(task).abort_handle(),
        };
        Keeper { task, ended }
    }

    /// Resolves when the keeper ended, with the reason its holds were lost.
    pub async fn ended(&self) -> LostReason {
        let mut ended = self.ended.clone();
        let reason = match ended.wait_for(|reason| reason.is_some()).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        reason.unwrap_or(LostReason::Abandoned)
    }

    /// Why the keeper ended, if it did.
    pub fn ended_reason(&self) -> Option<LostReason> {
        self.ended.borrow().clone()
    }

    /// Stops renewing (the holds then lapse at their deadline unless released first).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep(
    config: KeeperConfig,
    renew: Arc<dyn Renew>,
    holds: Arc<HoldSet>,
    ended: watch::Sender<Option<LostReason>>,
) {
    let emit = |event| {
        if let Some(monitor) = &config.monitor {
            monitor.emit(event);
        }
    };
    let mut backoff = Backoff::new(
        (config.every / 8).max(Duration::from_millis(10)),
        config.every.max(Duration::from_millis(10)),
    );
    let mut pause = config.every;
    let mut failing = false;
    let reason = loop {
        let wake = tokio::time::Instant::now() + pause;
        let wake = match holds.deadline() {
            Some(deadline) => wake.min(tokio::time::Instant::from_std(deadline)),
            None => wake,
        };
        tokio::time::sleep_until(wake).await;
        let sent = Instant::now();
        let outcome = match holds.deadline() {
            Some(deadline) if deadline <= sent => {
                break LostReason::RenewalFailed;
            }
            Some(deadline) => {
                match tokio::time::timeout_at(
                    tokio::time::Instant::from_std(deadline),
                    renew.renew(),
                )
                .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => break LostReason::RenewalFailed,
                }
            }
            None => renew.renew().await,
        };
        match outcome {
            Renewal::Renewed => {
                holds.publish_deadline(config.validity.deadline(sent));
                backoff.reset();
                pause = config.every;
                if failing {
                    failing = false;
                    emit(ConnectionEvent::Reconnected);
                }
            }
            Renewal::Gone(reason) => break reason,
            Renewal::Failed(error) => {
                tracing::warn!(%error, "renewal failed; retrying until the hold's deadline");
                crate::metrics::renewal_failed(config.what);
                if !failing {
                    failing = true;
                    emit(ConnectionEvent::Suspended);
                }
                pause = backoff.next_delay();
            }
        }
    };
    tracing::warn!(%reason, "holds lost");
    holds.lose_all(reason.clone());
    emit(ConnectionEvent::Lost);
    ended.send_replace(Some(reason));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::hold_signals;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn formulas() {
        let s = Duration::from_secs;
        assert_eq!(Validity::etcd(s(8)).period(), s(6));
        assert_eq!(Validity::consul(s(10)).period(), s(9));
        assert_eq!(Validity::zookeeper(s(9)).period(), s(6));
        assert_eq!(Validity::zookeeper(s(2)).period(), s(1));
        let ttl = s(2);
        assert_eq!(
            Validity::redis(ttl, Validity::redis_drift(ttl)).period(),
            Duration::from_millis(1978)
        );
    }

    #[test]
    fn a_hold_gets_the_deadline_at_registration() {
        let set = HoldSet::new();
        let past = Instant::now() - Duration::from_millis(1);
        set.publish_deadline(past);
        let (tx, rx) = hold_signals();
        let _ticket = set.register(tx);
        // No await, no renewal: the deadline from the grant is already there.
        assert_eq!(rx.lost_reason(), Some(LostReason::RenewalFailed));
    }

    #[test]
    fn deadlines_only_move_forward_and_loss_reaches_late_holds() {
        let set = HoldSet::new();
        let later = Instant::now() + Duration::from_secs(60);
        set.publish_deadline(later);
        set.publish_deadline(later - Duration::from_secs(30));
        assert_eq!(set.deadline(), Some(later));
        let (tx, rx) = hold_signals();
        let ticket = set.register(tx);
        assert_eq!(set.len(), 1);
        assert!(set.lose_all(LostReason::SessionExpired));
        assert!(!set.lose_all(LostReason::Deleted));
        assert_eq!(rx.lost_reason(), Some(LostReason::SessionExpired));
        let (tx2, rx2) = hold_signals();
        let _late = set.register(tx2);
        assert_eq!(rx2.lost_reason(), Some(LostReason::SessionExpired));
        drop(ticket);
        assert_eq!(set.len(), 1);
    }

    struct Scripted {
        calls: AtomicU32,
        fail_from: u32,
        gone_at: Option<u32>,
    }

    #[async_trait]
    impl Renew for Scripted {
        async fn renew(&self) -> Renewal {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if Some(n) == self.gone_at {
                Renewal::Gone(LostReason::SessionExpired)
            } else if n >= self.fail_from {
                Renewal::Failed(Error::connection("test", "nowhere", "refused"))
            } else {
                Renewal::Renewed
            }
        }
    }

    fn config(monitor: Option<Arc<ConnectionMonitor>>) -> KeeperConfig {
        KeeperConfig {
            what: "test",
            validity: Validity::fixed(Duration::from_millis(300)),
            every: Duration::from_millis(50),
            monitor,
        }
    }

    #[tokio::test]
    async fn renewals_move_the_deadline_and_failures_lose_the_holds() {
        let monitor = Arc::new(ConnectionMonitor::new());
        let mut events = monitor.subscribe();
        let set = HoldSet::new();
        let (tx, rx) = hold_signals();
        let _ticket = set.register(tx);
        let granted = Instant::now();
        let renew = Arc::new(Scripted {
            calls: AtomicU32::new(0),
            fail_from: 4,
            gone_at: None,
        });
        let keeper = Keeper::spawn(
            config(Some(monitor.clone())),
            renew.clone(),
            set.clone(),
            granted,
        );
        assert_eq!(set.deadline(), Some(granted + Duration::from_millis(300)));
        assert_eq!(keeper.ended().await, LostReason::RenewalFailed);
        assert_eq!(rx.lost_reason(), Some(LostReason::RenewalFailed));
        // Three renewals moved the deadline past the grant's.
        assert!(renew.calls.load(Ordering::SeqCst) >= 4);
        assert_eq!(events.next().await, Some(ConnectionEvent::Suspended));
        assert_eq!(events.next().await, Some(ConnectionEvent::Lost));
    }

    #[tokio::test]
    async fn gone_loses_with_the_store_reason() {
        let set = HoldSet::new();
        let (tx, rx) = hold_signals();
        let _ticket = set.register(tx);
        let renew = Arc::new(Scripted {
            calls: AtomicU32::new(0),
            fail_from: u32::MAX,
            gone_at: Some(2),
        });
        let keeper = Keeper::spawn(config(None), renew, set, Instant::now());
        assert_eq!(keeper.ended().await, LostReason::SessionExpired);
        assert_eq!(rx.lost().await, LostReason::SessionExpired);
    }
}
