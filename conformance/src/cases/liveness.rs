//! Promises 5 and 6: a crashed or paused holder frees the lock, and `lost()` fires before a
//! rival can acquire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{lock, needs_strict_fencing, unique_name, CaseResult, Context, Verdict, PROMPT};
use crate::{ensure, hook, Harness};

/// A holder process killed without cleanup: the lock is free again within the bound, with a
/// larger token.
pub async fn crashed_holder_frees_lock(h: Arc<dyn Harness>) -> CaseResult {
    let rival = h.client().await?;
    let name = unique_name("crash");
    let mut holder = hook!(h.spawn_holder(&name).await);
    let old_token = holder.token();
    let mutex = rival.locks.mutex(&name).ctx("mutex")?;
    ensure!(
        mutex.try_lock().await.ctx("try")?.is_none(),
        "the lock was free while the holder lived"
    );
    hook!(holder.kill().await);
    let killed_at = Instant::now();
    let bound = h.crash_release_bound();
    let guard = mutex
        .lock_timeout(bound)
        .await
        .ctx("rival's lock")?
        .ok_or_else(|| format!("the crashed holder's lock was not free within {bound:?}"))?;
    tracing::info!(after = ?killed_at.elapsed(), "crashed holder's lock taken over");
    if needs_strict_fencing(&rival.locks.capabilities()).is_none() {
        ensure!(
            guard.fencing_token() > old_token,
            "token {} after crash is not above {old_token}",
            guard.fencing_token()
        );
    }
    guard.release().await.ctx("release")?;
    Ok(Verdict::Passed)
}

/// A holder paused (SIGSTOP) past its TTL loses the lock to a rival with a larger token, and
/// says so once it runs again.
pub async fn paused_holder_loses_lock(h: Arc<dyn Harness>) -> CaseResult {
    let rival = h.client().await?;
    let name = unique_name("pause");
    let mut holder = hook!(h.spawn_holder(&name).await);
    let old_token = holder.token();
    hook!(holder.pause().await);
    let bound = h.crash_release_bound();
    let taken = rival
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(bound)
        .await
        .ctx("rival's lock");
    hook!(holder.resume().await);
    let guard =
        taken?.ok_or_else(|| format!("the paused holder's lock was not free within {bound:?}"))?;
    if needs_strict_fencing(&rival.locks.capabilities()).is_none() {
        ensure!(
            guard.fencing_token() > old_token,
            "token {} is not above the paused holder's {old_token}",
            guard.fencing_token()
        );
    }
    let noticed = hook!(holder.wait_lost(PROMPT).await);
    ensure!(
        noticed,
        "the resumed holder did not report lost() within {PROMPT:?}"
    );
    guard.release().await.ctx("release")?;
    Ok(Verdict::Passed)
}

/// The store expires the holder's session: its `lost()` has fired by the time a rival holds.
pub async fn lost_fires_on_session_expiry(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let name = unique_name("lost-expiry");
    let held = lock(&a, &name, "A").await?;
    let rival = b.locks.mutex(&name).ctx("mutex")?;
    let bound = h.crash_release_bound();
    let waiting = tokio::spawn(async move { rival.lock_timeout(bound).await });
    hook!(h.expire_session(&a).await);
    let guard = waiting
        .await
        .ctx("rival task")?
        .ctx("rival's lock")?
        .ok_or_else(|| {
            format!("B did not get the lock within {bound:?} of A's session expiring")
        })?;
    ensure!(
        held.lost_reason().is_some(),
        "B holds the lock but A's lost() has not fired"
    );
    tokio::time::timeout(PROMPT, held.lost())
        .await
        .ctx("A's lost()")?;
    if needs_strict_fencing(&b.locks.capabilities()).is_none() {
        ensure!(
            guard.fencing_token() > held.fencing_token(),
            "B's token is not above A's"
        );
    }
    guard.release().await.ctx("B's release")?;
    drop(held);
    Ok(Verdict::Passed)
}

/// The holder's connection is cut: `lost()` fires within the bound and before a rival holds.
pub async fn lost_fires_on_connection_cut(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let name = unique_name("lost-cut");
    let held = lock(&a, &name, "A").await?;
    let rival = b.locks.mutex(&name).ctx("mutex")?;
    let bound = h.crash_release_bound();
    hook!(h.cut_connection(&a).await);
    let waiting = tokio::spawn(async move { rival.lock_timeout(bound).await });
    let lost = tokio::time::timeout(bound, held.lost()).await;
    let taken = waiting.await.ctx("rival task")?;
    let was_lost_when_taken = held.lost_reason().is_some();
    hook!(h.heal_connection(&a).await);
    ensure!(
        lost.is_ok(),
        "A's lost() did not fire within {bound:?} of its connection being cut"
    );
    let guard = taken
        .ctx("rival's lock")?
        .ok_or_else(|| format!("B did not get the lock within {bound:?}"))?;
    ensure!(
        was_lost_when_taken,
        "B holds the lock but A's lost() has not fired"
    );
    guard.release().await.ctx("B's release")?;
    drop(held);
    Ok(Verdict::Passed)
}

/// A hold outlives its TTL many times over while a rival waits: the rival never gets it and
/// A's `lost()` never fires.
///
/// A's validity is checked first, with no `.await` after the rival's wait: a rival granted
/// while A's `lost_reason()` is still `None` is two holders at once, whatever happened. If A's
/// hold was lost while a connection was suspended (a leader election on a cluster: renewals
/// can fail through no fault of the backend) or the rival's wait failed transiently, the round
/// proves nothing and is run once more, on a fresh name; that round must be clean.
pub async fn hold_survives_renewal_periods(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let span = h.crash_release_bound();
    for round in 1..=2 {
        let name = unique_name("renew");
        let (mut a_events, mut b_events) =
            (a.locks.connection_events(), b.locks.connection_events());
        let held = lock(&a, &name, "A").await?;
        let rival = b.locks.mutex(&name).ctx("mutex")?;
        // Time passing is what is under test: the hold must outlive its TTL many times over.
        let intruder = rival.lock_timeout(span).await;
        let lost = held.lost_reason();
        let disturbed = was_suspended(&mut a_events).await || was_suspended(&mut b_events).await;
        let retry = round == 1 && disturbed;
        match (intruder, lost) {
            (Ok(Some(_)), None) => {
                return Err("B got the lock while A held it (A's lost_reason() was None)".into())
            }
            (Ok(None), None) => {
                held.release().await.ctx("A's release after a long hold")?;
                return Ok(Verdict::Passed);
            }
            (Ok(intruder), Some(reason)) if retry => {
                tracing::info!(
                    ?reason,
                    "A's hold was lost while a connection was suspended; again"
                );
                if let Some(intruder) = intruder {
                    intruder.release().await.ctx("B's release")?;
                }
            }
            (Ok(_), Some(reason)) => {
                return Err(format!(
                    "A's lost() fired while healthy: {reason:?} (a connection was {}suspended)",
                    if disturbed { "" } else { "never " }
                ))
            }
            (Err(e), None) if e.is_transient() && round == 1 => {
                tracing::info!(error = %e, "B's wait failed transiently; again");
            }
            (Err(e), _) => return Err(format!("B's wait: {e}")),
        }
        drop(held);
    }
    Err("A's hold was lost in both rounds while a connection was suspended".into())
}

/// Whether `events` saw the connection suspended or lost since they were subscribed to (reads
/// only what is already there).
async fn was_suspended(events: &mut tumbler_core::ConnectionEvents) -> bool {
    use tumbler_core::ConnectionEvent::{Connected, Lost, Suspended};
    let mut seen = events.current() != Connected;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, events.next()).await {
        seen |= matches!(event, Suspended | Lost);
    }
    seen
}

/// `request_revoke` reaches the holder's `revoke_requested()`.
pub async fn revocation_reaches_holder(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let caps = a.locks.capabilities();
    if !caps.revocation {
        return Ok(Verdict::Skipped(format!(
            "{} has no revocation",
            caps.backend
        )));
    }
    let name = unique_name("revoke");
    let held = lock(&a, &name, "A").await?;
    ensure!(
        !held.is_revoke_requested(),
        "revocation requested before anyone asked"
    );
    let notified = b.locks.request_revoke(&name).await.ctx("request_revoke")?;
    ensure!(
        notified >= 1,
        "request_revoke reported {notified} holders notified"
    );
    tokio::time::timeout(PROMPT, held.revoke_requested())
        .await
        .map_err(|_| format!("A's revoke_requested() did not fire within {PROMPT:?}"))?;
    held.release().await.ctx("A's release")?;
    let next = b
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(PROMPT)
        .await
        .ctx("B's lock")?;
    ensure!(
        next.is_some(),
        "B did not get the lock after A honoured the revocation"
    );
    Ok(Verdict::Passed)
}
