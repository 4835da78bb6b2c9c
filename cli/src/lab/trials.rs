//! Many trials per cell: the timing of each trial drawn from the seed, and what the trials of
//! one cell add up to.
//!
//! A race that loses one time in ten never shows in one trial at one fault time. So each cell
//! runs `--trials N` times, and each trial draws from the seed how long the victim works
//! undisturbed before the fault: often no time at all (the fault lands right after the grant,
//! before any renewal has run, where a holder that trusts its first renewal is caught), else
//! anything up to [`MAX_SETTLE_MS`]. The draw depends only on the seed, the store, the fault
//! and the trial number, so `--seed S --store X --fault F` replays the trials of that cell of a
//! larger run.

use serde::Serialize;

use super::cell::CellResult;
use super::deploy::{Fault, Store};

/// The longest undisturbed run of the victim before the fault.
pub const MAX_SETTLE_MS: u64 = 1200;

/// What one trial draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrialPlan {
    /// The trial's number in its cell, from 0.
    pub trial: u32,
    /// How long after the victim's grant (and the rival's start) the fault comes.
    pub settle_ms: u64,
}

/// The plan of trial `trial` of the cell (`store`, `fault`) under `seed`.
pub fn plan(seed: u64, store: Store, fault: Fault, trial: u32) -> TrialPlan {
    let mut state = seed;
    for byte in store
        .name()
        .bytes()
        .chain([0])
        .chain(fault.name().bytes())
        .chain(trial.to_le_bytes())
    {
        state = splitmix(state ^ u64::from(byte));
    }
    let draw = splitmix(state);
    // One trial in four: the fault right after the grant.
    let settle_ms = if draw & 3 == 0 {
        0
    } else {
        (draw >> 2) % (MAX_SETTLE_MS + 1)
    };
    TrialPlan { trial, settle_ms }
}

/// SplitMix64: a small, well-mixed step (enough to spread seeds; not for cryptography).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Minimum, median and maximum of the trials that had a value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// How many trials had a value.
    pub count: usize,
}

impl Spread {
    /// `None` when no trial had a value.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            min: values[0],
            median,
            max: values[n - 1],
            count: n,
        })
    }
}

/// What a cell's trials say against what the store promises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "why", rename_all = "snake_case")]
pub enum Verdict {
    /// Every promise held in every trial.
    Kept,
    /// Overlaps that the cell's client is known not to prevent (the naive control row).
    Expected(String),
    /// A promise broke.
    Broken(String),
}

/// Whether the store's documentation promises no unfenced overlap under the fault: every
/// careful client does (a holder checks `lost_reason()` before each write, and every store
/// publishes a validity deadline), except when the server's clock jumps (the store expires the
/// hold before any client-side bound says so: only fencing catches that); the naive control
/// client promises nothing.
pub fn promises_no_overlap(store: Store, fault: Fault) -> bool {
    !store.careless() && fault != Fault::ClockJump
}

/// Every trial of one cell, and their totals.
#[derive(Debug, Clone, Serialize)]
pub struct CellSummary {
    pub store: &'static str,
    pub fault: &'static str,
    /// Unfenced overlaps over all trials.
    pub unfenced_violations: u64,
    /// In how many trials there was at least one.
    pub trials_with_overlaps: usize,
    pub fenced_rejected: u64,
    /// Must be 0 in every cell.
    pub fenced_stale_accepted: u64,
    /// From the fault to the rival's grant.
    pub recovery_ms: Option<Spread>,
    /// The rival's grant minus the victim's `lost()`.
    pub lost_lead_ms: Option<Spread>,
    /// Trials in which the rival never got the lock.
    pub never_recovered: usize,
    pub verdict: Verdict,
    /// The index in `trials` of the trial the HTML timeline shows: the most unfenced
    /// overlaps, then the slowest recovery.
    pub worst: usize,
    pub trials: Vec<CellResult>,
}

impl CellSummary {
    /// Sums up `trials` (at least one) of the cell (`store`, `fault`).
    pub fn of(store: Store, fault: Fault, trials: Vec<CellResult>) -> CellSummary {
        let unfenced_violations = trials.iter().map(|t| t.unfenced_violations).sum();
        let fenced_stale_accepted = trials.iter().map(|t| t.fenced_stale_accepted).sum();
        let verdict = if fenced_stale_accepted > 0 {
            Verdict::Broken(format!(
                "the fenced resource accepted {fenced_stale_accepted} stale write(s)"
            ))
        } else if unfenced_violations > 0 && promises_no_overlap(store, fault) {
            Verdict::Broken(format!(
                "{unfenced_violations} write(s) after the rival held the lock"
            ))
        } else if unfenced_violations > 0 {
            Verdict::Expected(format!(
                "{unfenced_violations} write(s) after the rival held the lock, which nothing \
                 but fencing can stop here; fencing refused them"
            ))
        } else {
            Verdict::Kept
        };
        let worst = trials
            .iter()
            .enumerate()
            .max_by(|(_, a), (_, b)| {
                a.unfenced_violations.cmp(&b.unfenced_violations).then(
                    a.recovery_ms
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&b.recovery_ms.unwrap_or(f64::INFINITY)),
                )
            })
            .map_or(0, |(i, _)| i);
        CellSummary {
            store: store.name(),
            fault: fault.name(),
            unfenced_violations,
            trials_with_overlaps: trials.iter().filter(|t| t.unfenced_violations > 0).count(),
            fenced_rejected: trials.iter().map(|t| t.fenced_rejected).sum(),
            fenced_stale_accepted,
            recovery_ms: Spread::of(trials.iter().filter_map(|t| t.recovery_ms)),
            lost_lead_ms: Spread::of(trials.iter().filter_map(|t| t.lost_lead_ms)),
            never_recovered: trials.iter().filter(|t| t.recovery_ms.is_none()).count(),
            verdict,
            worst,
            trials,
        }
    }

    /// The trial the timeline shows.
    pub fn worst_trial(&self) -> Option<&CellResult> {
        self.trials.get(self.worst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_reproducible_and_spread() {
        let a = plan(7, Store::Redis, Fault::Pause, 3);
        assert_eq!(a, plan(7, Store::Redis, Fault::Pause, 3));
        let settles: Vec<u64> = (0..64)
            .map(|t| plan(7, Store::Redis, Fault::Pause, t).settle_ms)
            .collect();
        assert!(settles.iter().all(|s| *s <= MAX_SETTLE_MS));
        assert!(settles.contains(&0), "some faults right after the grant");
        assert!(
            settles.iter().filter(|s| **s > 600).count() > 8,
            "and late ones: {settles:?}"
        );
        let other_seed: Vec<u64> = (0..64)
            .map(|t| plan(8, Store::Redis, Fault::Pause, t).settle_ms)
            .collect();
        assert_ne!(settles, other_seed);
    }

    #[test]
    fn spread_takes_min_median_max() {
        assert_eq!(Spread::of([]), None);
        let s = Spread::of([3.0, 1.0, 2.0, 10.0]).expect("values");
        assert_eq!((s.min, s.median, s.max, s.count), (1.0, 2.5, 10.0, 4));
    }
}
