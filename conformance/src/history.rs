//! Recorded histories of holds and the checkers that read them.
//!
//! Every hold is an [`Interval`]: from the moment the acquire was acknowledged to the moment
//! release was called, on one monotonic clock, with its fencing token. The checkers count
//! violations instead of stopping at the first one, so reports say how bad a failure is.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How an interval held its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exclusive (mutex, write side, semaphore of one).
    Exclusive,
    /// Shared (read side).
    Shared,
    /// This many semaphore permits.
    Permits(u32),
}

/// One hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Which client held it.
    pub client: usize,
    /// How.
    pub mode: Mode,
    /// The fencing token.
    pub token: u64,
    /// Acquire acknowledged.
    pub start: Instant,
    /// Release called.
    pub end: Instant,
}

/// A shared recorder of intervals.
#[derive(Debug, Clone, Default)]
pub struct History {
    intervals: Arc<Mutex<Vec<Interval>>>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one finished hold.
    pub fn record(&self, interval: Interval) {
        self.lock().push(interval);
    }

    /// Everything recorded, sorted by start.
    pub fn intervals(&self) -> Vec<Interval> {
        let mut all = self.lock().clone();
        all.sort_by_key(|i| i.start);
        all
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Interval>> {
        self.intervals.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations {
    /// Pairs of holds that overlapped where they must not.
    pub overlaps: usize,
    /// Holds whose token was not larger than the token of a hold that started before them.
    pub token_regressions: usize,
    /// Moments at which more permits were held than the limit.
    pub over_limit: usize,
    /// How many intervals were checked.
    pub checked: usize,
}

impl Violations {
    /// True when nothing was violated.
    pub fn is_clean(&self) -> bool {
        self.overlaps == 0 && self.token_regressions == 0 && self.over_limit == 0
    }
}

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} intervals: {} overlaps, {} token regressions, {} over-limit moments",
            self.checked, self.overlaps, self.token_regressions, self.over_limit
        )
    }
}

fn overlap(a: &Interval, b: &Interval) -> bool {
    a.start < b.end && b.start < a.end
}

/// Exclusive holds: no two overlap, and tokens strictly increase in start order.
pub fn check_exclusive(intervals: &[Interval]) -> Violations {
    let mut sorted = intervals.to_vec();
    sorted.sort_by_key(|i| i.start);
    let mut found = Violations {
        checked: sorted.len(),
        ..Violations::default()
    };
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if b.start >= a.end {
                break;
            }
            found.overlaps += 1;
        }
    }
    found.token_regressions = token_regressions(&sorted);
    found
}

/// Tokens that do not exceed the largest token of every hold that *ended* before they started.
fn token_regressions(sorted: &[Interval]) -> usize {
    sorted
        .iter()
        .filter(|b| {
            sorted
                .iter()
                .any(|a| a.end <= b.start && a.token >= b.token)
        })
        .count()
}

/// Read-write holds: an exclusive hold overlaps nothing; tokens of exclusive holds increase.
pub fn check_read_write(intervals: &[Interval]) -> Violations {
    let mut sorted = intervals.to_vec();
    sorted.sort_by_key(|i| i.start);
    let mut found = Violations {
        checked: sorted.len(),
        ..Violations::default()
    };
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if (a.mode == Mode::Exclusive || b.mode == Mode::Exclusive) && overlap(a, b) {
                found.overlaps += 1;
            }
        }
    }
    let writers: Vec<Interval> = sorted
        .into_iter()
        .filter(|i| i.mode == Mode::Exclusive)
        .collect();
    found.token_regressions = token_regressions(&writers);
    found
}

/// Semaphore holds: at no moment do live leases hold more than `limit` permits.
pub fn check_semaphore(intervals: &[Interval], limit: u32) -> Violations {
    let mut events: Vec<(Instant, i64)> = Vec::new();
    for i in intervals {
        let permits = match i.mode {
            Mode::Permits(n) => i64::from(n),
            Mode::Exclusive => i64::from(limit),
            Mode::Shared => 0,
        };
        events.push((i.start, permits));
        events.push((i.end, -permits));
    }
    // Releases at the same instant count before acquisitions.
    events.sort_by_key(|(at, delta)| (*at, *delta));
    let mut held = 0i64;
    let mut found = Violations {
        checked: intervals.len(),
        ..Violations::default()
    };
    for (_, delta) in events {
        held += delta;
        if held > i64::from(limit) {
            found.over_limit += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn iv(client: usize, mode: Mode, token: u64, start_ms: u64, end_ms: u64) -> Interval {
        let base = *BASE;
        Interval {
            client,
            mode,
            token,
            start: base + Duration::from_millis(start_ms),
            end: base + Duration::from_millis(end_ms),
        }
    }

    static BASE: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

    #[test]
    fn exclusive_clean_and_dirty() {
        let clean = [
            iv(0, Mode::Exclusive, 1, 0, 10),
            iv(1, Mode::Exclusive, 2, 10, 20),
            iv(0, Mode::Exclusive, 3, 25, 30),
        ];
        assert!(check_exclusive(&clean).is_clean());
        let dirty = [
            iv(0, Mode::Exclusive, 1, 0, 10),
            iv(1, Mode::Exclusive, 2, 5, 20),
            iv(2, Mode::Exclusive, 2, 21, 30),
        ];
        let found = check_exclusive(&dirty);
        assert_eq!(found.overlaps, 1);
        assert_eq!(found.token_regressions, 1);
    }

    #[test]
    fn read_write_rules() {
        let readers_share = [iv(0, Mode::Shared, 1, 0, 10), iv(1, Mode::Shared, 2, 5, 15)];
        assert!(check_read_write(&readers_share).is_clean());
        let writer_with_reader = [
            iv(0, Mode::Shared, 1, 0, 10),
            iv(1, Mode::Exclusive, 2, 5, 15),
        ];
        assert_eq!(check_read_write(&writer_with_reader).overlaps, 1);
    }

    #[test]
    fn semaphore_limit() {
        let ok = [
            iv(0, Mode::Permits(2), 1, 0, 10),
            iv(1, Mode::Permits(1), 2, 5, 15),
            iv(2, Mode::Permits(2), 3, 10, 20),
        ];
        assert!(check_semaphore(&ok, 3).is_clean());
        let over = [
            iv(0, Mode::Permits(2), 1, 0, 10),
            iv(1, Mode::Permits(2), 2, 5, 15),
        ];
        assert_eq!(check_semaphore(&over, 3).over_limit, 1);
    }
}
