//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade: recorded by lockcore, so
//! every store has the same ones. Nothing is recorded anywhere until the application installs
//! a recorder (for example `metrics-exporter-prometheus`); without one, each call is a no-op.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `tumbler_acquisitions_total` | counter | `store`, `primitive`, `outcome` | acquisitions that ended: `acquired`, `busy` (a try or a bounded wait found it taken), `timeout` (the store did not answer in time), `error`, `cancelled` (the future was dropped) |
//! | `tumbler_acquire_wait_seconds` | histogram | `store`, `primitive`, `outcome` | how long each acquisition took, from the call to its end |
//! | `tumbler_hold_seconds` | histogram | `store`, `primitive` | how long each hold was held, from the grant to its release or drop |
//! | `tumbler_handoff_seconds` | histogram | `store`, `primitive` | from a release to the grant of a waiter of this process that was waiting for it (hand-offs between processes are not seen here) |
//! | `tumbler_lost_total` | counter | `store`, `primitive`, `reason` | holds lost, by [`LostReason`] (`session_expired`, `renewal_failed`, `disconnected`, `deleted`, `server_restarted`, `abandoned`, `other`) |
//! | `tumbler_renewals_failed_total` | counter | `store`, `renewed` | renewals (of a session, lease or TTL) that failed and will be retried |
//! | `tumbler_waiters` | gauge | `store`, `primitive` | acquisitions of this process waiting right now |
//!
//! `primitive` is `mutex` (also re-entrant mutexes), `read`, `write` or `semaphore`. The lock
//! name is a label only after [`set_name_labels(true)`](set_name_labels): names are unbounded,
//! and a metrics backend pays for every distinct label value.
//!
//! [`LostReason`]: crate::LostReason

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::backend::LockKind;
use crate::name::LockName;
use crate::signals::LostReason;

/// Acquisitions that ended, by outcome.
pub const ACQUISITIONS: &str = "tumbler_acquisitions_total";
/// Seconds from an acquire call to its end, by outcome.
pub const ACQUIRE_WAIT: &str = "tumbler_acquire_wait_seconds";
/// Seconds from a grant to its release or drop.
pub const HOLD: &str = "tumbler_hold_seconds";
/// Seconds from a release to the grant of a waiter of this process.
pub const HANDOFF: &str = "tumbler_handoff_seconds";
/// Holds lost, by reason.
pub const LOST: &str = "tumbler_lost_total";
/// Renewals that failed (and are retried).
pub const RENEWALS_FAILED: &str = "tumbler_renewals_failed_total";
/// Acquisitions waiting now.
pub const WAITERS: &str = "tumbler_waiters";

static NAME_LABELS: AtomicBool = AtomicBool::new(false);

/// Adds the lock name as a `name` label to the per-lock metrics (acquisitions, waits, holds,
/// hand-offs, losses). Off by default: turn it on only when the set of names is small.
pub fn set_name_labels(on: bool) {
    NAME_LABELS.store(on, Ordering::Relaxed);
}

/// Registers the metrics' descriptions and units with the installed recorder. lockcore calls
/// it at the first acquisition; call it yourself right after installing a recorder to have
/// every metric described before any is recorded.
pub fn describe() {
    describe_counter!(ACQUISITIONS, "Lock acquisitions that ended, by outcome");
    describe_histogram!(
        ACQUIRE_WAIT,
        metrics::Unit::Seconds,
        "Time from an acquire call to its end"
    );
    describe_histogram!(
        HOLD,
        metrics::Unit::Seconds,
        "Time from a grant to its release"
    );
    describe_histogram!(
        HANDOFF,
        metrics::Unit::Seconds,
        "Time from a release to the grant of a waiter of this process"
    );
    describe_counter!(LOST, "Holds lost, by reason");
    describe_counter!(RENEWALS_FAILED, "Renewals that failed and are retried");
    describe_gauge!(WAITERS, "Acquisitions of this process waiting now");
}

fn describe_once() {
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    DESCRIBED.get_or_init(describe);
}

/// The `primitive` label of a lock kind.
pub(crate) fn primitive(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Exclusive => "mutex",
        LockKind::Read => "read",
        LockKind::Write => "write",
        LockKind::Permits { .. } => "semaphore",
        LockKind::Leader => "leader",
    }
}

/// The labels of one lock: store, primitive and (when asked for) name.
#[derive(Debug, Clone)]
pub(crate) struct LockLabels {
    store: &'static str,
    primitive: &'static str,
    /// The lock (always kept, to match a release with the next grant of the same lock).
    name: String,
    /// Whether the name is also a label.
    name_label: bool,
}

impl LockLabels {
    pub(crate) fn new(store: &'static str, kind: LockKind, name: &LockName) -> Self {
        LockLabels {
            store,
            primitive: primitive(kind),
            name: name.as_str().to_owned(),
            name_label: NAME_LABELS.load(Ordering::Relaxed),
        }
    }

    fn with(&self, extra: Option<(&'static str, &'static str)>) -> Vec<(&'static str, String)> {
        let mut labels = vec![
            ("store", self.store.to_owned()),
            ("primitive", self.primitive.to_owned()),
        ];
        if self.name_label {
            labels.push(("name", self.name.clone()));
        }
        if let Some((key, value)) = extra {
            labels.push((key, value.to_owned()));
        }
        labels
    }
}

/// How an acquisition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acquired,
    Busy,
    Timeout,
    Error,
    Cancelled,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::Busy => "busy",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Records one acquisition from its start to its end; dropped without [`finish`] (the
/// acquire future was dropped), it records `cancelled`. A waiting acquisition counts in
/// [`WAITERS`] meanwhile.
///
/// [`finish`]: AcquireMetrics::finish
pub(crate) struct AcquireMetrics {
    labels: LockLabels,
    started: Instant,
    waiting: bool,
    done: bool,
}

impl AcquireMetrics {
    pub(crate) fn start(labels: LockLabels, waiting: bool) -> Self {
        describe_once();
        if waiting {
            gauge!(WAITERS, &labels.with(None)).increment(1.0);
        }
        AcquireMetrics {
            labels,
            started: Instant::now(),
            waiting,
            done: false,
        }
    }

    /// Records the end; for a grant, also a hand-off if this process released the lock while
    /// this acquisition waited.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
        if outcome == Outcome::Acquired && self.waiting {
            if let Some(released) = releases().take(&self.labels, self.started) {
                histogram!(HANDOFF, &self.labels.with(None)).record(released.elapsed());
            }
        }
    }

    fn record(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let labels = self.labels.with(Some(("outcome", outcome.label())));
        counter!(ACQUISITIONS, &labels).increment(1);
        histogram!(ACQUIRE_WAIT, &labels).record(self.started.elapsed());
        if self.waiting {
            gauge!(WAITERS, &self.labels.with(None)).decrement(1.0);
        }
    }
}

impl Drop for AcquireMetrics {
    fn drop(&mut self) {
        self.record(Outcome::Cancelled);
    }
}

/// The outcome label of an acquisition's result.
pub(crate) fn outcome_of<T>(result: &crate::Result<Option<T>>) -> Outcome {
    match result {
        Ok(Some(_)) => Outcome::Acquired,
        Ok(None) => Outcome::Busy,
        Err(crate::Error::Timeout { .. }) => Outcome::Timeout,
        Err(_) => Outcome::Error,
    }
}

/// A hold ended after `held` (released or dropped).
pub(crate) fn hold_ended(labels: &LockLabels, held: Duration) {
    histogram!(HOLD, &labels.with(None)).record(held);
    releases().note(labels);
}

/// A hold was lost.
pub(crate) fn lost(labels: &LockLabels, reason: &LostReason) {
    let reason = match reason {
        LostReason::SessionExpired => "session_expired",
        LostReason::RenewalFailed => "renewal_failed",
        LostReason::Disconnected => "disconnected",
        LostReason::Deleted => "deleted",
        LostReason::ServerRestarted => "server_restarted",
        LostReason::Abandoned => "abandoned",
        LostReason::Other(_) => "other",
    };
    counter!(LOST, &labels.with(Some(("reason", reason)))).increment(1);
}

/// A renewal of `renewed` (a keeper's `what`, which starts with the store's name) failed.
pub(crate) fn renewal_failed(renewed: &'static str) {
    let store = renewed.split_whitespace().next().unwrap_or(renewed);
    counter!(
        RENEWALS_FAILED,
        &[("store", store.to_owned()), ("renewed", renewed.to_owned())]
    )
    .increment(1);
}

/// The latest release of each lock by this process, for hand-off latencies: kept only for
/// [`RELEASES_KEPT`] locks (the oldest are forgotten), so many names cost bounded memory.
struct Releases {
    by_lock: Mutex<HashMap<(&'static str, String), Instant>>,
}

/// How many locks' latest release [`Releases`] remembers.
const RELEASES_KEPT: usize = 1024;

fn releases() -> &'static Releases {
    static RELEASES: OnceLock<Releases> = OnceLock::new();
    RELEASES.get_or_init(|| Releases {
        by_lock: Mutex::new(HashMap::new()),
    })
}

impl Releases {
    fn key(labels: &LockLabels) -> (&'static str, String) {
        (labels.store, labels.name.clone())
    }

    fn note(&self, labels: &LockLabels) {
        let mut by_lock = self.by_lock.lock().unwrap_or_else(|p| p.into_inner());
        if by_lock.len() >= RELEASES_KEPT {
            if let Some(oldest) = by_lock
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(key, _)| key.clone())
            {
                by_lock.remove(&oldest);
            }
        }
        by_lock.insert(Self::key(labels), Instant::now());
    }

    /// The release this grant followed, if it happened while the acquisition waited.
    fn take(&self, labels: &LockLabels, waiting_since: Instant) -> Option<Instant> {
        let mut by_lock = self.by_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = Self::key(labels);
        match by_lock.get(&key) {
            Some(at) if *at >= waiting_since => by_lock.remove(&key),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;
    use crate::memory::{MemoryOptions, MemoryStore};

    /// Counts counters by `name{label=value,…}`; ignores the rest.
    #[derive(Default)]
    struct Counts(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl Counts {
        fn get(&self, key: &str) -> u64 {
            let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
            counts.get(key).map_or(0, |c| c.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
            Counter::from_arc(counts.entry(name).or_default().clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// A hold lost while held counts once, with its reason; a released hold's later loss does
    /// not count.
    #[test]
    fn losses_of_live_holds_count_by_reason() {
        let counts = Counts::default();
        metrics::with_local_recorder(&counts, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let store = MemoryStore::new();
                let options = MemoryOptions::default();
                let held = store.connect_client(options).await.expect("client");
                let locks = crate::share(held.clone());
                let guard = locks
                    .mutex("m/lost")
                    .expect("mutex")
                    .lock()
                    .await
                    .expect("lock");
                held.expire_session();
                assert!(
                    guard.lost_reason().is_some(),
                    "the expiry did not reach the hold"
                );

                let released = store.connect_client(options).await.expect("client");
                let locks = crate::share(released.clone());
                let guard = locks
                    .mutex("m/kept")
                    .expect("mutex")
                    .lock()
                    .await
                    .expect("lock");
                guard.release().await.expect("release");
                released.expire_session();
            });
        });
        let key = "tumbler_lost_total{store=memory,primitive=mutex,reason=session_expired}";
        assert_eq!(
            counts.get(key),
            1,
            "counted: {:?}",
            counts
                .0
                .lock()
                .map(|c| c.keys().cloned().collect::<Vec<_>>())
        );
        let acquired = "tumbler_acquisitions_total{store=memory,primitive=mutex,outcome=acquired}";
        assert_eq!(counts.get(acquired), 2);
    }
}
