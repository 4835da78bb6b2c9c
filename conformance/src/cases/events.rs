//! Issue 12 A.7: the same event has the same name on every store: a session expiry is
//! `LostReason::SessionExpired`, and connection events follow one sequence (Connected, then
//! Suspended, then Reconnected or Lost followed by Reconnected).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_core::{ConnectionEvent, ConnectionEvents, LostReason};

use crate::util::{lock, unique_name, CaseResult, Verdict, PROMPT};
use crate::{ensure, hook, Harness};

/// The store expires A's session: A's `lost()` says `SessionExpired` (on stores without
/// sessions, where the hook deletes the holds, `Deleted`).
pub async fn session_expiry_is_session_expired(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let name = unique_name("expiry-variant");
    let held = lock(&a, &name, "A").await?;
    hook!(h.expire_session(&a).await);
    let bound = h.crash_release_bound();
    let reason = tokio::time::timeout(bound, held.lost())
        .await
        .map_err(|_| format!("A's lost() did not fire within {bound:?} of its session expiring"))?;
    let expected = if h.expiry_is_deletion() {
        LostReason::Deleted
    } else {
        LostReason::SessionExpired
    };
    ensure!(
        reason == expected,
        "a session expired by the store was reported as {reason:?} ({reason}), not {expected:?}"
    );
    drop(held);
    Ok(Verdict::Passed)
}

/// The TTL of the client that watches a stall: far longer than a request timeout.
const STALL_TTL: Duration = Duration::from_secs(30);

/// Reads events until `stop` returns true for one, or `within` passes; returns them all.
async fn events_until(
    events: &mut ConnectionEvents,
    within: Duration,
    stop: impl Fn(ConnectionEvent) -> bool,
) -> Vec<ConnectionEvent> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
        seen.push(event);
        if stop(event) {
            break;
        }
    }
    seen
}

/// Every event already delivered to `events`, without waiting.
async fn ready(events: &mut ConnectionEvents) -> Vec<ConnectionEvent> {
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, events.next()).await {
        seen.push(event);
    }
    seen
}

/// Checks that `seen`, the events after the state `from`, follow the contract's sequence
/// (lockcore's `events` module): Suspended only after Connected or Reconnected; Lost only
/// after Suspended; Reconnected only after Suspended or Lost; Connected never again.
fn check_sequence(from: ConnectionEvent, seen: &[ConnectionEvent]) -> Result<(), String> {
    use ConnectionEvent::*;
    let mut state = from;
    for &event in seen {
        let allowed = match event {
            Suspended => matches!(state, Connected | Reconnected),
            Lost => state == Suspended,
            Reconnected => matches!(state, Suspended | Lost),
            Connected => false,
        };
        ensure!(
            allowed,
            "{event:?} came after {state:?} (events {seen:?} after {from:?}); the contract's \
             sequence is Connected -> Suspended -> Reconnected | Lost -> Reconnected"
        );
        state = event;
    }
    Ok(())
}

/// Checks the events after a heal: Reconnected, or Lost then Reconnected, nothing else.
fn check_recovery(seen: &[ConnectionEvent], must_lose: bool) -> Result<(), String> {
    use ConnectionEvent::*;
    match seen {
        [Reconnected] if !must_lose => Ok(()),
        [Lost, Reconnected] => Ok(()),
        [Reconnected] => Err(format!(
            "after a cut longer than the hold TTL, whose holds were lost, the events were \
             {seen:?}: expected Lost before Reconnected"
        )),
        _ => Err(format!(
            "after the heal the events were {seen:?}: expected [Reconnected] or [Lost, \
             Reconnected]"
        )),
    }
}

/// What a probe request during a fault did, for messages.
fn outcome<T>(probe: &Result<tumbler_core::Result<T>, tokio::time::error::Elapsed>) -> String {
    match probe {
        Ok(Ok(_)) => "succeeded".to_string(),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => "hung".to_string(),
    }
}

/// A request that failed or hung during a fault must have left the connection Suspended (or
/// Lost) by the time it returned: "Suspended as soon as a request fails".
fn suspended_by_failure<T>(
    probe: &Result<tumbler_core::Result<T>, tokio::time::error::Elapsed>,
    right_after: ConnectionEvent,
    fault: &str,
) -> Result<(), String> {
    use ConnectionEvent::*;
    if matches!(probe, Ok(Ok(_))) {
        return Ok(());
    }
    ensure!(
        matches!(right_after, Suspended | Lost),
        "a request during the {fault} {}, yet right after it the connection state was \
         {right_after:?}: a backend reports Suspended as soon as a request fails",
        outcome(probe)
    );
    Ok(())
}

/// The first event is Connected; a cut gives Suspended first (at the latest when a request
/// fails); the heal gives Reconnected (or Lost, Reconnected). Then the same for a stalled
/// store (every server stopped: connections open, nothing answered), where no connection
/// drops and only a request or renewal that gets no answer can tell, watched on a client with a
/// long TTL, so that the request's failure, not a renewal, must be what reports Suspended.
/// Every event of the case follows the contract's sequence.
pub async fn connection_events_follow_sequence(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let mut events = a.locks.connection_events();
    ensure!(
        events.current() == ConnectionEvent::Connected,
        "a fresh client's connection state is {:?}, not Connected",
        events.current()
    );
    let name = unique_name("event-sequence");
    let held = lock(&a, &name, "A").await?;
    let mut all = ready(&mut events).await;
    let before_cut = all.last().copied().unwrap_or(ConnectionEvent::Connected);
    hook!(h.cut_connection(&a).await);
    // A request, so that stores which learn of a cut only when a request fails do so now.
    let probe = tokio::time::timeout(h.request_timeout() + PROMPT, a.locks.state(&name)).await;
    let right_after = events.current();
    let cut = events_until(&mut events, h.crash_release_bound(), |_| true).await;
    hook!(h.heal_connection(&a).await);
    suspended_by_failure(&probe, right_after, "cut")?;
    if before_cut != ConnectionEvent::Suspended {
        ensure!(
            cut.first() == Some(&ConnectionEvent::Suspended),
            "after the cut (and a request that {}) the first event was {:?}, not Suspended",
            outcome(&probe),
            cut.first()
        );
    }
    let mut healed = events_until(&mut events, h.crash_release_bound() + PROMPT, |e| {
        e == ConnectionEvent::Reconnected
    })
    .await;
    if healed.last() == Some(&ConnectionEvent::Lost) {
        // The session was lost on the way back (on an ensemble whose leader was just killed,
        // say): making a new one is a second recovery, with a bound of its own.
        healed.extend(
            events_until(&mut events, h.crash_release_bound() + PROMPT, |e| {
                e == ConnectionEvent::Reconnected
            })
            .await,
        );
    }
    let after_cut: Vec<_> = cut.iter().chain(&healed).copied().collect();
    let recovery = match after_cut.split_first() {
        Some((ConnectionEvent::Suspended, rest)) if before_cut != ConnectionEvent::Suspended => {
            rest
        }
        _ => &after_cut[..],
    };
    check_recovery(recovery, false)?;
    all.extend(after_cut);
    check_sequence(ConnectionEvent::Connected, &all)?;
    drop(held);

    // The stall is watched on a client whose TTL outlasts its request timeout many times over
    // (where the harness can make one): its renewals cannot notice the stall before a failed
    // request does, so its Suspended must come from the request's failure.
    let stall_client = match h.connect_with_ttl(STALL_TTL).await {
        Ok(Ok(locks)) => locks,
        Ok(Err(e)) => return Err(format!("connecting with a {STALL_TTL:?} TTL: {e}")),
        Err(crate::HookError::Unsupported(_)) => a.locks.clone(),
        Err(crate::HookError::Failed(why)) => return Err(format!("fault hook failed: {why}")),
    };
    let mut events = stall_client.connection_events();
    let request_timeout = stall_client.capabilities().request_timeout;
    let before_stall = events.current();
    match h.pause_server().await {
        Err(crate::HookError::Unsupported(why)) => {
            tracing::info!(%why, "no stall hook: the cut alone was checked");
            return Ok(Verdict::Passed);
        }
        Err(crate::HookError::Failed(why)) => return Err(format!("fault hook failed: {why}")),
        Ok(()) => {}
    }
    let probe = tokio::time::timeout(request_timeout + PROMPT, stall_client.state(&name)).await;
    let right_after = events.current();
    let stalled = ready(&mut events).await;
    let resumed = h.resume_server().await;
    if let Err(why) = resumed {
        return Err(format!("resuming the store: {why}"));
    }
    suspended_by_failure(&probe, right_after, "stall")?;
    let mut seen = stalled;
    if seen.last() != Some(&ConnectionEvent::Reconnected) || matches!(probe, Ok(Err(_)) | Err(_)) {
        seen.extend(
            events_until(&mut events, h.crash_release_bound() + PROMPT, |e| {
                e == ConnectionEvent::Reconnected
            })
            .await,
        );
    }
    if !matches!(probe, Ok(Ok(_))) {
        ensure!(
            seen.first() == Some(&ConnectionEvent::Suspended),
            "during a stall (a request that {}) the first event was {:?}, not Suspended (all: \
             {seen:?})",
            outcome(&probe),
            seen.first()
        );
        ensure!(
            seen.last() == Some(&ConnectionEvent::Reconnected),
            "after the stalled store answered again the events were {seen:?}: expected them to \
             end with Reconnected"
        );
    }
    check_sequence(before_stall, &seen)?;
    Ok(Verdict::Passed)
}

/// A cut that lasts past the hold TTL loses the holds: the events are Suspended, Lost (the
/// store has dropped the session or the keys), Reconnected. Events before the cut (a leader
/// election on a cluster: Suspended, Reconnected) are allowed, and every event of the case
/// follows the contract's sequence.
pub async fn cut_past_ttl_reports_lost(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let mut events = a.locks.connection_events();
    let name = unique_name("cut-past-ttl");
    let held = lock(&a, &name, "A").await?;
    let before = ready(&mut events).await;
    let state_at_cut = before.last().copied().unwrap_or(ConnectionEvent::Connected);
    hook!(h.cut_connection(&a).await);
    let cut_at = Instant::now();
    let bound = h.crash_release_bound();
    let lost = tokio::time::timeout(bound, held.lost()).await;
    // Waiting the TTL out is what is under test: the store must have dropped the hold.
    let past = h.hold_ttl() * 2;
    if let Some(rest) = past.checked_sub(cut_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let during = ready(&mut events).await;
    hook!(h.heal_connection(&a).await);
    ensure!(
        lost.is_ok(),
        "A's lost() did not fire within {bound:?} of the cut"
    );
    ensure!(
        !during.contains(&ConnectionEvent::Reconnected),
        "while every connection was cut the events were {during:?}: Reconnected with no \
         request able to succeed"
    );
    let mut seen = during.clone();
    seen.extend(
        events_until(&mut events, bound + PROMPT, |e| {
            e == ConnectionEvent::Reconnected
        })
        .await,
    );
    let from_cut = if state_at_cut == ConnectionEvent::Suspended {
        // Already suspended (an election) when the cut came: the cut adds no Suspended.
        &seen[..]
    } else {
        ensure!(
            seen.first() == Some(&ConnectionEvent::Suspended),
            "the cut's first event was {:?}, not Suspended (all: {seen:?})",
            seen.first()
        );
        &seen[1..]
    };
    check_recovery(from_cut, true)?;
    let all: Vec<_> = before.iter().chain(&seen).copied().collect();
    check_sequence(ConnectionEvent::Connected, &all)?;
    drop(held);
    Ok(Verdict::Passed)
}
