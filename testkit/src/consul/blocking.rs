//! Blocking queries: `?index=N&wait=D` long polls, as Consul's `blockingQuery` runs them.
//!
//! Consul's rules, reproduced here:
//! - `index` absent or 0: answer at once.
//! - Otherwise the wait is `wait` (default 5 min when absent or not positive), capped at the
//!   server maximum (10 min), plus a random jitter of up to 1/16 of it.
//! - The query runs once; if its index is greater than `index` it answers at once. Otherwise
//!   it sleeps until something the query *watches* changes (the key, the prefix, the session,
//!   the session table), runs again, and answers when the index has moved past `index`; when
//!   the wait runs out it answers with the last result it computed.
//! - The reported index is never 0 (Consul uses 1 as a floor so clients never spin).
//!
//! Every write in the store appends what it touched to a bounded [`ChangeLog`] and then bumps
//! a `tokio::sync::watch` channel; a waiting query wakes on the channel, asks the log whether
//! anything it watches changed since the index it last saw, and sleeps again if not. When the
//! log has forgotten that far back, it re-runs the query (a spurious wake-up, which Consul's
//! clients must tolerate anyway).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::state::{lock_store, Store};

/// How many recent changes the log keeps for waiting queries.
const LOG_CAPACITY: usize = 65_536;

/// Something a write changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Touched {
    /// A KV entry was created, modified or deleted.
    Key(String),
    /// A session was created or destroyed.
    Session(String),
}

/// What a blocking query waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Watch {
    /// One KV key (`GET /v1/kv/<key>`).
    Key(String),
    /// Every key under a prefix (`?recurse`, `?keys`).
    Prefix(String),
    /// One session (`/v1/session/info/<id>`), compared case-insensitively.
    Session(String),
    /// The whole session table (`/v1/session/list`, `/v1/session/node/<node>`).
    AllSessions,
}

impl Watch {
    fn matches(&self, touched: &Touched) -> bool {
        match (self, touched) {
            (Watch::Key(k), Touched::Key(t)) => k == t,
            (Watch::Prefix(p), Touched::Key(t)) => t.starts_with(p.as_str()),
            (Watch::Session(s), Touched::Session(t)) => s.eq_ignore_ascii_case(t),
            (Watch::AllSessions, Touched::Session(_)) => true,
            _ => false,
        }
    }
}

/// A bounded record of which write index touched what.
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    entries: VecDeque<(u64, Touched)>,
    /// Highest index dropped from the front; changes at or below it are forgotten.
    forgotten: u64,
}

impl ChangeLog {
    /// Records that the write at `index` touched `what`.
    pub(crate) fn record(&mut self, index: u64, what: Touched) {
        if self.entries.len() >= LOG_CAPACITY {
            if let Some((idx, _)) = self.entries.pop_front() {
                self.forgotten = self.forgotten.max(idx);
            }
        }
        self.entries.push_back((index, what));
    }

    /// Whether a write after index `since` touched what `watch` watches. Answers `true`
    /// when the log no longer reaches back to `since`.
    pub(crate) fn changed_since(&self, watch: &Watch, since: u64) -> bool {
        if since < self.forgotten {
            return true;
        }
        self.entries
            .iter()
            .rev()
            .take_while(|(idx, _)| *idx > since)
            .any(|(_, t)| watch.matches(t))
    }
}

/// Consul's blocking-query timing: the default and the largest wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitLimits {
    /// Used when `?wait` is absent or not positive (Consul: 5 min).
    pub default_wait: Duration,
    /// Upper bound for `?wait` (Consul: 10 min).
    pub max_wait: Duration,
}

/// The wait a blocking query gets: the requested `wait` (nanoseconds, as parsed), defaulted
/// and capped, plus `jitter_fraction` (in `[0, 1)`) of 1/16 of it.
pub(crate) fn effective_wait(
    requested_ns: Option<i64>,
    limits: WaitLimits,
    jitter_fraction: f64,
) -> Duration {
    let base = match requested_ns {
        Some(ns) if ns > 0 => Duration::from_nanos(ns as u64).min(limits.max_wait),
        _ => limits.default_wait.min(limits.max_wait),
    };
    let jitter = (base / 16).mul_f64(jitter_fraction.clamp(0.0, 1.0));
    base + jitter
}

/// Runs `query` against the store as a Consul blocking query and returns the index (never
/// below 1) and the query's result.
///
/// `changes` is the channel every committed write bumps; `watch` says which writes should
/// make the query run again. With `min_index == 0` this is a plain read.
pub(crate) async fn blocking_query<T>(
    store: &Mutex<Store>,
    changes: &watch::Sender<u64>,
    min_index: u64,
    wait: Duration,
    watch: &Watch,
    mut query: impl FnMut(&Store) -> (u64, T),
) -> (u64, T) {
    // Subscribe before the first read so no write between the read and the wait is missed.
    let mut rx = changes.subscribe();
    let (mut index, mut result, mut seen) = {
        let st = lock_store(store);
        let (idx, res) = query(&st);
        (idx.max(1), res, st.index())
    };
    if min_index == 0 || index > min_index {
        return (index, result);
    }
    let now = tokio::time::Instant::now();
    // A configured wait too large to add is as good as forever (a year).
    let deadline = now
        .checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The server is going away; answer with what we have.
                    return (index, result);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return (index, result),
        }
        let st = lock_store(store);
        if st.changed_since(watch, seen) {
            let (idx, res) = query(&st);
            index = idx.max(1);
            result = res;
            seen = st.index();
            if index > min_index {
                return (index, result);
            }
        } else {
            seen = st.index();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_matches_keys_prefixes_and_sessions() {
        let mut log = ChangeLog::default();
        log.record(5, Touched::Key("a/b".into()));
        log.record(6, Touched::Session("ABC".into()));
        assert!(log.changed_since(&Watch::Key("a/b".into()), 4));
        assert!(!log.changed_since(&Watch::Key("a/b".into()), 5));
        assert!(!log.changed_since(&Watch::Key("a".into()), 0));
        assert!(log.changed_since(&Watch::Prefix("a/".into()), 0));
        assert!(log.changed_since(&Watch::Prefix(String::new()), 0));
        assert!(!log.changed_since(&Watch::Prefix("b".into()), 0));
        assert!(log.changed_since(&Watch::Session("abc".into()), 5));
        assert!(log.changed_since(&Watch::AllSessions, 5));
        assert!(!log.changed_since(&Watch::AllSessions, 6));
    }

    #[test]
    fn log_that_forgot_reports_a_change() {
        let mut log = ChangeLog::default();
        for i in 1..=(LOG_CAPACITY as u64 + 10) {
            log.record(i, Touched::Key("x".into()));
        }
        assert!(log.changed_since(&Watch::Key("never".into()), 3));
        assert!(!log.changed_since(&Watch::Key("never".into()), 20));
    }

    #[test]
    fn wait_defaults_caps_and_jitters() {
        let limits = WaitLimits {
            default_wait: Duration::from_secs(300),
            max_wait: Duration::from_secs(600),
        };
        assert_eq!(effective_wait(None, limits, 0.0), Duration::from_secs(300));
        assert_eq!(
            effective_wait(Some(0), limits, 0.0),
            Duration::from_secs(300)
        );
        assert_eq!(
            effective_wait(Some(-5), limits, 0.0),
            Duration::from_secs(300)
        );
        assert_eq!(
            effective_wait(Some(15_000_000_000), limits, 0.0),
            Duration::from_secs(15)
        );
        assert_eq!(
            effective_wait(Some(3_600_000_000_000), limits, 0.0),
            Duration::from_secs(600)
        );
        let jittered = effective_wait(Some(16_000_000_000), limits, 0.5);
        assert_eq!(jittered, Duration::from_millis(16_500));
    }
}
