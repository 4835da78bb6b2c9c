//! One checker over a whole [`Recording`]: safety (exclusion, kinds, semaphore bound, tokens),
//! loss signals, liveness, typed errors, deadlines and what the store said while unreachable.
//!
//! A hold's interval runs from its grant to the last moment its holder checked `lost_reason()`
//! and was told `None` (then acted): a holder that learns of its loss before acting again
//! (for example right after a stall) did nothing wrong, one that acts on a lapsed hold did.
//! Tokens are checked with the suite's own [`crate::history`] checker.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use super::executor::Limits;
use super::recording::{CallKind, CallResult, Recording, Seen, Span};
use super::schedule::{Family, Fault, Prim, Schedule, WaitHow};
use crate::history::{check_exclusive, check_read_write, Interval, Mode};

/// Which rule a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Two exclusive holds (or a writer and anyone) overlapped.
    Exclusion,
    /// Holds of different kinds (mutex, rwlock, semaphore) on one name overlapped.
    KindsCoexist,
    /// More permits held than the semaphore's limit.
    SemaphoreBound,
    /// Leases of one semaphore with different limits were held at once.
    LimitsCoexist,
    /// A fencing token not larger than one issued before.
    TokenOrder,
    /// `lost()` fired only after a rival had been granted the lock.
    LostLate,
    /// `lost()` and `lost_reason()` disagreed, or a client panicked (seen by the executor).
    Direct,
    /// A free lock stayed refused longer than the store's liveness bound.
    Liveness,
    /// A call did not return (hang).
    Hang,
    /// A call returned after its deadline plus the margin.
    Deadline,
    /// An error of a kind the schedule cannot cause.
    UnexpectedError,
    /// A `Conflict` on a name only ever used one way.
    SpuriousConflict,
    /// An untyped `Backend` error where a typed variant exists (soft).
    Untyped,
    /// "Busy" while the store was unreachable.
    BusyWhenUnreachable,
    /// A release confirmed while the store was unreachable.
    ReleaseUnconfirmable,
    /// `state()` said free while a holder held.
    StateBlind,
    /// A revocation request that the holder never saw.
    RevokeUnseen,
    /// A request failed on a cut connection and no connection event said so.
    SilentEvents,
    /// A fault hook failed (soft: the schedule ran without that fault).
    HookFailed,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One thing the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which rule.
    pub rule: Rule,
    /// A failure (`false`: a soft warning).
    pub failure: bool,
    /// What exactly, with times in ms from the schedule's start.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.failure { "FAIL" } else { "warn" };
        write!(f, "{level} {}: {}", self.rule, self.detail)
    }
}

/// What the checker needs to know about the store.
#[derive(Debug, Clone, Copy)]
pub struct CheckConfig {
    /// The store promises strictly increasing tokens.
    pub strict_fencing: bool,
    /// The run's limits (deadlines, drift, grace, liveness bound).
    pub limits: Limits,
}

/// A hold for the overlap checks: a client's hold or a holder process.
#[derive(Debug, Clone)]
struct Iv {
    who: String,
    client: usize,
    name: usize,
    prim: Prim,
    token: u64,
    start: Instant,
    end: Instant,
    multi: bool,
}

fn conflict(a: Prim, b: Prim) -> bool {
    if a.family() != b.family() {
        return true;
    }
    match a.family() {
        Family::Mutex => true,
        Family::RwLock => a == Prim::Write || b == Prim::Write,
        Family::Semaphore => false,
        Family::Election => true,
    }
}

fn during(spans: &[Span], client: usize, from: Instant, to: Instant) -> bool {
    spans
        .iter()
        .any(|s| (s.client == client || s.client == usize::MAX) && s.start <= to && from <= s.end)
}

/// Checks everything recorded in one run of `schedule`.
pub fn check(schedule: &Schedule, rec: &Recording, config: &CheckConfig) -> Vec<Finding> {
    let mut found = Vec::new();
    let limits = config.limits;
    let ms = |at: Instant| at.saturating_duration_since(rec.start).as_millis();
    let mut fail = |rule: Rule, failure: bool, detail: String| {
        found.push(Finding {
            rule,
            failure,
            detail,
        })
    };

    // When forced losses happened: an expiry of one client's session, or a restart of all.
    let forced: Vec<Span> = rec
        .faults
        .iter()
        .filter(|f| f.failed.is_none())
        .filter_map(|f| match f.fault {
            Fault::Expire { client } => Some(Span {
                client,
                start: f.start,
                end: f.end + limits.grace,
            }),
            Fault::Restart | Fault::Foreign { .. } => Some(Span {
                client: usize::MAX,
                start: f.start,
                end: f.end + limits.grace,
            }),
            _ => None,
        })
        .collect();
    let restarts: Vec<Span> = rec
        .faults
        .iter()
        .filter(|f| f.failed.is_none() && f.fault == Fault::Restart)
        .map(|f| Span {
            client: usize::MAX,
            start: f.start,
            end: f.end,
        })
        .collect();
    // Outages as they really were: a heal or resume ends every overlapping cut or pause of
    // the same client (or of the whole store) that began before it, and a restart ends a
    // pause of the whole store (the paused process is killed; the new one runs).
    let cuts: Vec<Span> = rec
        .cuts
        .iter()
        .map(|c| {
            let healed = rec
                .cuts
                .iter()
                .filter(|o| o.client == c.client && o.end > c.start && o.end < c.end)
                .map(|o| o.end);
            let restarted = restarts
                .iter()
                .filter(|r| c.client == usize::MAX && r.start >= c.start && r.end < c.end)
                .map(|r| r.end);
            let end = healed.chain(restarted).min().unwrap_or(c.end);
            Span { end, ..*c }
        })
        .collect();
    let run_end = rec
        .calls
        .iter()
        .map(|c| c.end)
        .chain(rec.holds.iter().map(|h| h.confirmed))
        .max()
        .unwrap_or(rec.start);

    let mut ivs: Vec<Iv> = rec
        .holds
        .iter()
        .map(|h| Iv {
            who: format!("c{} {} token {}", h.client, h.prim, h.token),
            client: h.client,
            name: h.name,
            prim: h.prim,
            token: h.token,
            start: h.granted,
            end: h.believed_until(),
            multi: h.multi,
        })
        .collect();
    for (i, holder) in rec.holders.iter().enumerate() {
        // A restart may take a holder's lock legitimately; its hold ends there.
        let mut end = holder.killed.unwrap_or(run_end);
        if let Some(r) = restarts.iter().find(|r| r.start >= holder.granted) {
            end = end.min(r.start);
        }
        ivs.push(Iv {
            who: format!("holder process {i} token {}", holder.token),
            client: usize::MAX - 1 - i,
            name: holder.name,
            prim: Prim::Mutex,
            token: holder.token,
            start: holder.granted,
            end,
            multi: false,
        });
    }
    ivs.sort_by_key(|iv| iv.start);

    // Exclusion and kinds, pairwise.
    for (i, a) in ivs.iter().enumerate() {
        for b in &ivs[i + 1..] {
            if a.name != b.name || !conflict(a.prim, b.prim) {
                continue;
            }
            let overlap = a.end.min(b.end).saturating_duration_since(b.start);
            if overlap <= limits.drift {
                continue;
            }
            // A forced expiry or restart: the holder may learn of it a little late.
            if during(&forced, a.client, a.end, a.end) {
                continue;
            }
            let rule = if a.prim.family() == b.prim.family() {
                Rule::Exclusion
            } else {
                Rule::KindsCoexist
            };
            fail(
                rule,
                true,
                format!(
                    "n{}: {} held {}..{}ms, {} held {}..{}ms ({}ms overlap)",
                    a.name,
                    a.who,
                    ms(a.start),
                    ms(a.end),
                    b.who,
                    ms(b.start),
                    ms(b.end),
                    overlap.as_millis()
                ),
            );
        }
    }

    // Semaphore bound and limits, at each lease's start.
    for x in ivs
        .iter()
        .filter(|iv| iv.prim.family() == Family::Semaphore)
    {
        let live: Vec<&Iv> = ivs
            .iter()
            .filter(|y| y.name == x.name && y.prim.family() == Family::Semaphore)
            .filter(|y| y.start <= x.start && x.start + limits.drift < y.end)
            .collect();
        let mut held = 0u64;
        let mut limits_seen = BTreeSet::new();
        for y in &live {
            if let Prim::Permits { limit, count } = y.prim {
                held += u64::from(count);
                limits_seen.insert(limit);
            }
        }
        let smallest = limits_seen.first().copied().unwrap_or(u32::MAX);
        if held > u64::from(smallest) {
            fail(
                Rule::SemaphoreBound,
                true,
                format!(
                    "n{} at {}ms: {held} permits held, limit {smallest}: {}",
                    x.name,
                    ms(x.start),
                    live.iter()
                        .map(|y| y.who.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if limits_seen.len() > 1 && live.iter().any(|y| !std::ptr::eq(*y, x)) {
            fail(
                Rule::LimitsCoexist,
                true,
                format!(
                    "n{} at {}ms: leases with limits {limits_seen:?} held at once",
                    x.name,
                    ms(x.start)
                ),
            );
        }
    }

    // Tokens, per name and kind, with the suite's history checker.
    if config.strict_fencing {
        for name in 0..schedule.names.len() {
            // A hold seen lost at its first check has no length; it must not count as having
            // ended before itself.
            let as_interval = |iv: &Iv, mode: Mode| Interval {
                client: iv.client,
                mode,
                token: iv.token,
                start: iv.start,
                end: iv.end.max(iv.start + Duration::from_nanos(1)),
            };
            let mutexes: Vec<Interval> = ivs
                .iter()
                .filter(|iv| {
                    iv.name == name
                        && matches!(iv.prim.family(), Family::Mutex | Family::Election)
                        && !iv.multi
                })
                .map(|iv| as_interval(iv, Mode::Exclusive))
                .collect();
            let rw: Vec<Interval> = ivs
                .iter()
                .filter(|iv| iv.name == name && iv.prim.family() == Family::RwLock && !iv.multi)
                .map(|iv| {
                    let mode = if iv.prim == Prim::Write {
                        Mode::Exclusive
                    } else {
                        Mode::Shared
                    };
                    as_interval(iv, mode)
                })
                .collect();
            let regressions = check_exclusive(&mutexes).token_regressions
                + check_read_write(&rw).token_regressions;
            if regressions > 0 {
                let tokens: Vec<String> = ivs
                    .iter()
                    .filter(|iv| iv.name == name)
                    .map(|iv| format!("{}@{}ms", iv.token, ms(iv.start)))
                    .collect();
                fail(
                    Rule::TokenOrder,
                    true,
                    format!(
                        "n{name}: {regressions} tokens not above an earlier hold's: {}",
                        tokens.join(" ")
                    ),
                );
            }
        }
    }

    // lost() must fire before a rival is granted, unless the holder's thread was stalled.
    for h in &rec.holds {
        let Some((lost_at, Seen::Watcher, reason)) = &h.lost else {
            continue;
        };
        for r in ivs.iter() {
            if r.name != h.name || r.client == h.client || !conflict(h.prim, r.prim) {
                continue;
            }
            let rival_family_ok = h.prim.family() != Family::Semaphore;
            if !rival_family_ok || r.start <= h.granted || r.start < h.confirmed {
                continue;
            }
            if h.ended.is_some_and(|(at, _)| at <= r.start) {
                continue;
            }
            if *lost_at <= r.start + limits.drift {
                continue;
            }
            if during(&rec.stalls, h.client, r.start, *lost_at)
                || during(&forced, h.client, r.start, r.start)
            {
                continue;
            }
            fail(
                Rule::LostLate,
                true,
                format!(
                    "n{}: c{}'s lost() fired ({reason}) at {}ms, {}ms after {} was granted",
                    h.name,
                    h.client,
                    ms(*lost_at),
                    lost_at.saturating_duration_since(r.start).as_millis(),
                    r.who
                ),
            );
        }
    }

    // Liveness: every name free again within the bound once everything ended.
    for probe in &rec.probes {
        if probe.free_after.is_none() {
            let conflict = probe.last.starts_with("Conflict");
            fail(
                Rule::Liveness,
                !conflict,
                format!(
                    "n{} ({}) still refused {:?} after the run ended: {}",
                    probe.name, probe.prim, limits.liveness_bound, probe.last
                ),
            );
        }
    }

    // How names were used: a Conflict is expected only where kinds or limits differ.
    let mut uses: Vec<BTreeSet<(Family, u32)>> = vec![BTreeSet::new(); schedule.names.len()];
    let mut note = |name: usize, prim: Prim| {
        let limit = match prim {
            Prim::Permits { limit, .. } => limit,
            _ => 0,
        };
        if let Some(set) = uses.get_mut(name) {
            set.insert((prim.family(), limit));
        }
    };
    for call in &rec.calls {
        match &call.kind {
            CallKind::Acquire { name, prim, .. } => note(*name, *prim),
            CallKind::Multi { parts, .. } => parts.iter().for_each(|(n, p)| note(*n, *p)),
            _ => {}
        }
    }
    for fault in &schedule.faults {
        match fault.fault {
            Fault::Holder { name, .. } => note(name, Prim::Mutex),
            // Foreign data makes any use of the name a Conflict.
            Fault::Foreign { name, .. } => {
                note(name, Prim::Permits { limit: 0, count: 0 });
                note(name, Prim::Mutex);
            }
            _ => {}
        }
    }

    for call in &rec.calls {
        let who = format!("c{} {:?} at {}ms", call.client, call.kind, ms(call.start));
        let took = call.end.saturating_duration_since(call.start);
        let allowed = match &call.kind {
            CallKind::Acquire { wait, .. } | CallKind::Multi { wait, .. } => match wait {
                WaitHow::Forever => limits.forever_limit,
                WaitHow::Try => limits.margin,
                WaitHow::Timeout(ms) | WaitHow::Cancel(ms) => {
                    Duration::from_millis(*ms) + limits.margin
                }
            },
            _ => limits.op_limit,
        };
        match &call.result {
            CallResult::Hung => fail(Rule::Hang, true, format!("{who}: no answer")),
            _ if took > allowed => fail(
                Rule::Deadline,
                true,
                format!(
                    "{who}: took {took:?}, allowed {allowed:?} ({:?})",
                    call.result
                ),
            ),
            _ => {}
        }
        let cut_throughout = cuts.iter().any(|c| {
            (c.client == call.client || c.client == usize::MAX)
                && c.start <= call.start
                && call.end <= c.end
        });
        match &call.result {
            CallResult::Failed { variant, message } => match *variant {
                "Connection" | "Timeout" | "SessionExpired" | "NotOwner" | "Recovering" => {}
                "Conflict" => {
                    let names: Vec<usize> = match &call.kind {
                        CallKind::Acquire { name, .. } => vec![*name],
                        CallKind::Multi { parts, .. } => parts.iter().map(|p| p.0).collect(),
                        CallKind::Revoke { name } | CallKind::State { name } => vec![*name],
                        CallKind::Release | CallKind::Downgrade => vec![],
                    };
                    // (A release or downgrade names no lock here: not judged.)
                    if !names.is_empty()
                        && names
                            .iter()
                            .all(|n| uses.get(*n).is_none_or(|u| u.len() <= 1))
                    {
                        fail(
                            Rule::SpuriousConflict,
                            true,
                            format!("{who}: {message} (the name was used one way only)"),
                        );
                    }
                }
                "Backend" | "Other" => fail(Rule::Untyped, false, format!("{who}: {message}")),
                _ => fail(
                    Rule::UnexpectedError,
                    true,
                    format!("{who}: {variant}: {message}"),
                ),
            },
            CallResult::Busy if cut_throughout => {
                // A3: one attempt (try) or a wait that outlasted the request timeout, or a
                // connection already known to be down, must give an error, not "busy". A
                // shorter wait that ended before the backend could know is only a warning.
                let suspended = rec
                    .events
                    .iter()
                    .rfind(|(client, at, _)| *client == call.client && *at <= call.end)
                    .is_some_and(|(_, _, event)| {
                        matches!(
                            event,
                            tumbler_core::ConnectionEvent::Suspended
                                | tumbler_core::ConnectionEvent::Lost
                        )
                    });
                let is_try = matches!(
                    call.kind,
                    CallKind::Acquire {
                        wait: WaitHow::Try,
                        ..
                    } | CallKind::Multi {
                        wait: WaitHow::Try,
                        ..
                    }
                );
                let failure = is_try || suspended || took >= limits.request_timeout;
                fail(
                    Rule::BusyWhenUnreachable,
                    failure,
                    format!(
                        "{who}: said busy after {took:?} while the store was unreachable{}",
                        if suspended {
                            " (connection reported suspended)"
                        } else {
                            ""
                        }
                    ),
                )
            }
            CallResult::Done { .. } if cut_throughout && matches!(call.kind, CallKind::Release) => {
                fail(
                    Rule::ReleaseUnconfirmable,
                    true,
                    format!("{who}: release reported success while its connection was cut"),
                )
            }
            _ => {}
        }
        // A failing request must be reported as a connection event.
        if let CallResult::Failed { variant, .. } = &call.result {
            let cut = cuts.iter().find(|c| {
                (c.client == call.client || c.client == usize::MAX)
                    && c.start <= call.start
                    && call.end <= c.end
            });
            if let (Some(cut), true) = (cut, matches!(*variant, "Connection" | "Timeout")) {
                use tumbler_core::ConnectionEvent::{Connected, Lost, Suspended};
                let told_during = rec.events.iter().any(|(client, at, event)| {
                    *client == call.client
                        && *at >= cut.start
                        && *at <= call.end + limits.grace
                        && *event != Connected
                });
                // A connection already reported down before the cut (and not up again since)
                // needs no new event: the user was told.
                let down_before = rec
                    .events
                    .iter()
                    .filter(|(client, at, _)| *client == call.client && *at < cut.start)
                    .max_by_key(|(_, at, _)| *at)
                    .is_some_and(|(_, _, event)| matches!(event, Suspended | Lost));
                let told = told_during || down_before;
                if !told && !during(&rec.stalls, call.client, cut.start, call.end) {
                    fail(
                        Rule::SilentEvents,
                        true,
                        format!("{who}: failed on a cut connection, no connection event said so"),
                    );
                }
            }
        }
        // state() must see a hold whose holder went on acting after the call returned.
        if let (CallKind::State { name }, CallResult::Done { held: false }) =
            (&call.kind, &call.result)
        {
            let seen_by = ivs.iter().find(|iv| {
                iv.name == *name
                    && iv.start < call.start
                    && iv.end > call.end + limits.drift
                    && !during(&rec.stalls, iv.client, iv.start, call.end)
                    && !during(&cuts, iv.client, iv.start, call.end)
                    && !during(&forced, iv.client, iv.start, call.end)
            });
            if let Some(iv) = seen_by {
                fail(
                    Rule::StateBlind,
                    true,
                    format!("{who}: state said free while {} held it", iv.who),
                );
            }
        }
        // A revocation must reach the holders that keep holding.
        if let (CallKind::Revoke { name }, CallResult::Done { .. }) = (&call.kind, &call.result) {
            let until = call.end + limits.grace;
            for h in rec.holds.iter().filter(|h| h.name == *name && !h.multi) {
                let holds_on = h.granted < call.start
                    && h.ended.is_none_or(|(at, _)| at > until)
                    && h.lost.as_ref().is_none_or(|(at, _, _)| *at > until)
                    && !during(&rec.stalls, h.client, call.start, until)
                    && !during(&cuts, h.client, call.start, until)
                    && !during(&forced, h.client, call.start, until);
                if holds_on && h.revoke_seen.is_none_or(|at| at > until) {
                    fail(
                        Rule::RevokeUnseen,
                        true,
                        format!(
                            "{who}: revoke returned, c{} (token {}) never saw it",
                            h.client, h.token
                        ),
                    );
                }
            }
        }
    }

    for direct in &rec.direct {
        fail(
            Rule::Direct,
            direct.failure,
            format!("c{}: {}", direct.client, direct.what),
        );
    }
    for fault in rec.faults.iter().filter(|f| f.failed.is_some()) {
        fail(
            Rule::HookFailed,
            false,
            format!(
                "{} at {}ms: {}",
                fault.fault,
                ms(fault.start),
                fault.failed.clone().unwrap_or_default()
            ),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::recording::{EndHow, HoldRec, Recorder};

    fn limits() -> Limits {
        Limits {
            margin: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            op_limit: Duration::from_secs(1),
            forever_limit: Duration::from_secs(5),
            liveness_bound: Duration::from_secs(5),
            drift: Duration::from_millis(5),
            grace: Duration::from_millis(100),
        }
    }

    fn schedule() -> Schedule {
        Schedule {
            seed: 0,
            names: vec!["a".into()],
            clients: vec![vec![], vec![]],
            faults: vec![],
        }
    }

    /// A hold of `prim` by `client`, granted at `from` ms, last confirmed at `to` ms.
    fn hold(rec: &Recorder, client: usize, prim: Prim, token: u64, from: u64, to: u64) {
        let start = rec.with(|r| r.start);
        let at = |ms| start + Duration::from_millis(ms);
        rec.hold(HoldRec {
            client,
            name: 0,
            prim,
            token,
            granted: at(from),
            multi: false,
            confirmed: at(to),
            lost: None,
            ended: Some((at(to), EndHow::Release)),
            revoke_seen: None,
        });
    }

    fn rules(rec: &Recorder) -> BTreeSet<Rule> {
        let config = CheckConfig {
            strict_fencing: true,
            limits: limits(),
        };
        check(&schedule(), &rec.snapshot(), &config)
            .into_iter()
            .filter(|f| f.failure)
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn clean_history_passes() {
        let rec = Recorder::new();
        hold(&rec, 0, Prim::Mutex, 1, 0, 10);
        hold(&rec, 1, Prim::Mutex, 2, 20, 30);
        hold(&rec, 0, Prim::Read, 3, 40, 60);
        hold(&rec, 1, Prim::Read, 4, 45, 50);
        assert!(rules(&rec).is_empty(), "{:?}", rules(&rec));
    }

    #[test]
    fn a_holder_acting_after_a_rivals_grant_is_an_exclusion_failure() {
        let rec = Recorder::new();
        // Client 0 confirmed its hold at 50 ms; client 1 had been granted at 30 ms.
        hold(&rec, 0, Prim::Mutex, 1, 0, 50);
        hold(&rec, 1, Prim::Mutex, 2, 30, 60);
        assert_eq!(rules(&rec), BTreeSet::from([Rule::Exclusion]));
    }

    #[test]
    fn kinds_limits_and_tokens() {
        let rec = Recorder::new();
        hold(&rec, 0, Prim::Mutex, 5, 0, 30);
        hold(&rec, 1, Prim::Write, 6, 10, 40);
        assert!(rules(&rec).contains(&Rule::KindsCoexist));

        let rec = Recorder::new();
        hold(&rec, 0, Prim::Permits { limit: 2, count: 2 }, 1, 0, 20);
        hold(&rec, 1, Prim::Permits { limit: 3, count: 1 }, 2, 5, 15);
        let found = rules(&rec);
        assert!(found.contains(&Rule::SemaphoreBound), "{found:?}");
        assert!(found.contains(&Rule::LimitsCoexist), "{found:?}");

        let rec = Recorder::new();
        hold(&rec, 0, Prim::Mutex, 7, 0, 10);
        hold(&rec, 1, Prim::Mutex, 3, 20, 30);
        assert_eq!(rules(&rec), BTreeSet::from([Rule::TokenOrder]));
    }

    #[test]
    fn a_hold_lost_at_its_first_check_is_not_a_token_regression() {
        let rec = Recorder::new();
        // Granted and seen lost at once (no confirmation after the grant).
        hold(&rec, 0, Prim::Mutex, 4, 0, 0);
        hold(&rec, 1, Prim::Mutex, 5, 10, 20);
        assert!(rules(&rec).is_empty(), "{:?}", rules(&rec));
    }

    /// Times in ms from `rec`'s start, and a successful release from one such time to another.
    fn release_at(
        rec: &Recorder,
    ) -> (
        impl Fn(u64) -> Instant + Copy,
        impl Fn(u64, u64) -> crate::explore::recording::CallRec,
    ) {
        use crate::explore::recording::{CallRec, CallResult};
        let start = rec.with(|r| r.start);
        let at = move |ms| start + Duration::from_millis(ms);
        let release = move |from, to| CallRec {
            client: 0,
            kind: CallKind::Release,
            start: at(from),
            end: at(to),
            result: CallResult::Done { held: false },
        };
        (at, release)
    }

    #[test]
    fn a_resume_ends_every_overlapping_pause() {
        let rec = Recorder::new();
        let (at, release) = release_at(&rec);
        rec.with(|r| {
            // Two pauses of the whole store; the first one's resume (at 50 ms) resumed it.
            r.cuts.push(Span {
                client: usize::MAX,
                start: at(0),
                end: at(50),
            });
            r.cuts.push(Span {
                client: usize::MAX,
                start: at(20),
                end: at(200),
            });
            r.calls.push(release(60, 70));
        });
        assert!(rules(&rec).is_empty(), "{:?}", rules(&rec));
        // A release confirmed inside the real outage fails.
        rec.with(|r| r.calls.push(release(25, 40)));
        assert_eq!(rules(&rec), BTreeSet::from([Rule::ReleaseUnconfirmable]));
    }

    #[test]
    fn a_restart_ends_a_pause_of_the_store() {
        use crate::explore::recording::FaultRec;
        let rec = Recorder::new();
        let (at, release) = release_at(&rec);
        rec.with(|r| {
            // The store paused from 0 to 2000 ms, restarted (killed and started) at 500 ms.
            r.cuts.push(Span {
                client: usize::MAX,
                start: at(0),
                end: at(2000),
            });
            r.faults.push(FaultRec {
                fault: Fault::Restart,
                start: at(500),
                end: at(600),
                failed: None,
            });
            r.calls.push(release(900, 950));
        });
        assert!(rules(&rec).is_empty(), "{:?}", rules(&rec));
        // A release confirmed while the store was still paused fails.
        rec.with(|r| r.calls.push(release(100, 200)));
        assert_eq!(rules(&rec), BTreeSet::from([Rule::ReleaseUnconfirmable]));
    }

    #[test]
    fn a_failure_on_a_cut_connection_needs_an_event_unless_it_was_reported_down() {
        use crate::explore::recording::{CallRec, CallResult};
        use tumbler_core::ConnectionEvent;
        let failing_release = |rec: &Recorder| {
            let start = rec.with(|r| r.start);
            let at = move |ms| start + Duration::from_millis(ms);
            rec.with(|r| {
                r.cuts.push(Span {
                    client: 0,
                    start: at(100),
                    end: at(500),
                });
                r.calls.push(CallRec {
                    client: 0,
                    kind: CallKind::Release,
                    start: at(150),
                    end: at(200),
                    result: CallResult::Failed {
                        variant: "Connection",
                        message: "cut".into(),
                    },
                });
            });
            at
        };
        // Connected, then silent through the cut: the failure was not reported.
        let rec = Recorder::new();
        let at = failing_release(&rec);
        rec.with(|r| r.events.push((0, at(10), ConnectionEvent::Connected)));
        assert_eq!(rules(&rec), BTreeSet::from([Rule::SilentEvents]));
        // Suspended during the cut: reported.
        let rec = Recorder::new();
        let at = failing_release(&rec);
        rec.with(|r| r.events.push((0, at(120), ConnectionEvent::Suspended)));
        assert!(rules(&rec).is_empty(), "{:?}", rules(&rec));
        // Suspended before the cut and not reconnected since: reported already.
        let rec = Recorder::new();
        let at = failing_release(&rec);
        rec.with(|r| r.events.push((0, at(50), ConnectionEvent::Suspended)));
        assert!(rules(&rec).is_empty(), "{:?}", rules(&rec));
        // Suspended, then reconnected before the cut: the failure needs a new event.
        let rec = Recorder::new();
        let at = failing_release(&rec);
        rec.with(|r| {
            r.events.push((0, at(50), ConnectionEvent::Suspended));
            r.events.push((0, at(80), ConnectionEvent::Reconnected));
        });
        assert_eq!(rules(&rec), BTreeSet::from([Rule::SilentEvents]));
    }
}
