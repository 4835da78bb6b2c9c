//! Promise 8: only the owner releases, release is idempotent, and release during connection
//! loss never claims success it did not get.

use std::sync::Arc;

use tumbler_core::{AcquireRequest, LockKind};

use crate::util::{lock, needs_strict_fencing, unique_name, CaseResult, Context, Verdict, PROMPT};
use crate::{ensure, hook, Harness};

/// A holder whose session expired releases late: the successor keeps the lock, and the late
/// release does not report success.
pub async fn stale_release_keeps_successor(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    let name = unique_name("stale");
    let stale = lock(&a, &name, "A").await?;
    hook!(h.expire_session(&a).await);
    let bound = h.crash_release_bound();
    let successor = b
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(bound)
        .await
        .ctx("B's lock")?
        .ok_or_else(|| format!("B did not get the lock within {bound:?} of A's expiry"))?;
    let late = stale.release().await;
    ensure!(
        late.is_err(),
        "A's release after losing the lock reported success"
    );
    let intruder = c
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .try_lock()
        .await
        .ctx("C's try")?;
    ensure!(
        intruder.is_none(),
        "A's stale release freed B's lock: C got in"
    );
    let state = c.locks.state(&name).await.ctx("state")?;
    ensure!(
        state.holders.len() == 1,
        "the store should show B alone holding: {state:?}"
    );
    successor.release().await.ctx("B's release")?;
    Ok(Verdict::Passed)
}

/// Releasing a hold twice succeeds and the second release touches nobody else's hold.
pub async fn release_is_idempotent(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    let name = unique_name("idem");
    let request = AcquireRequest {
        name: name.clone(),
        kind: LockKind::Exclusive,
        wait: false,
        value: Vec::new(),
    };
    let mut hold = a
        .locks
        .acquire(request)
        .await
        .ctx("A's acquire")?
        .ok_or("A's one attempt on a free lock returned busy")?;
    hold.held.release().await.ctx("A's first release")?;
    let next = b
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(PROMPT)
        .await
        .ctx("B's lock")?
        .ok_or("B did not get the released lock")?;
    hold.held.release().await.ctx("A's second release")?;
    let intruder = c
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .try_lock()
        .await
        .ctx("C's try")?;
    ensure!(intruder.is_none(), "A's second release freed B's lock");
    if needs_strict_fencing(&b.locks.capabilities()).is_none() {
        ensure!(
            next.fencing_token() > hold.token,
            "B's token is not above A's"
        );
    }
    next.release().await.ctx("B's release")?;
    Ok(Verdict::Passed)
}

/// A release while the connection is cut returns an error (never a false success) within the
/// bound; afterwards the lock becomes free and the same client can lock again.
pub async fn release_during_connection_loss(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let name = unique_name("release-cut");
    let mutex_a = a.locks.mutex(&name).ctx("mutex")?;
    let held = mutex_a.lock().await.ctx("A's lock")?;
    hook!(h.cut_connection(&a).await);
    let bound = h.crash_release_bound();
    let released = tokio::time::timeout(bound, held.release()).await;
    hook!(h.heal_connection(&a).await);
    let released = released.map_err(|_| format!("release hung for {bound:?} during the cut"))?;
    ensure!(
        released.is_err(),
        "release reported success although the store was unreachable"
    );
    let next = b
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(bound + PROMPT)
        .await
        .ctx("B's lock")?
        .ok_or("the lock never became free after the failed release")?;
    next.release().await.ctx("B's release")?;
    let again = mutex_a
        .lock_timeout(PROMPT)
        .await
        .ctx("A's lock after healing")?;
    ensure!(
        again.is_some(),
        "A could not lock again after the connection healed"
    );
    if let Some(again) = again {
        again.release().await.ctx("A's release")?;
    }
    Ok(Verdict::Passed)
}

/// The store restarts while A holds and B waits: if B gets the lock, A's `lost()` fired first
/// and B's token is larger; either way the lock is usable again afterwards.
pub async fn restart_loses_no_safety(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let name = unique_name("restart");
    let held = lock(&a, &name, "A").await?;
    let rival = b.locks.mutex(&name).ctx("mutex")?;
    let bound = h.crash_release_bound();
    let waiting = tokio::spawn(async move { rival.lock_timeout(bound * 2).await });
    hook!(h.restart_server().await);
    let outcome = waiting.await.ctx("rival task")?;
    if let Ok(Some(guard)) = outcome {
        ensure!(
            held.lost_reason().is_some(),
            "B got the lock after the restart but A's lost() never fired"
        );
        if needs_strict_fencing(&b.locks.capabilities()).is_none() {
            ensure!(
                guard.fencing_token() > held.fencing_token(),
                "token went from {} to {} across the restart",
                held.fencing_token(),
                guard.fencing_token()
            );
        }
        let _ = guard.release().await;
    }
    // Whatever A's release reports, the lock must be usable again afterwards.
    let _ = held.release().await;
    let c = h.client().await?;
    let again = c
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(bound * 2)
        .await
        .ctx("C's lock")?;
    ensure!(
        again.is_some(),
        "the lock was not usable within {:?} after the restart",
        bound * 2
    );
    Ok(Verdict::Passed)
}
