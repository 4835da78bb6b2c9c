//! Issue 12 A.2: a waiter that stops stops blocking. A killed waiter process costs at most the
//! store's waiter bound, whatever its hold TTL; a timed-out waiter costs nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{
    lock, on_own_runtime, unique_name, wait_until_queued, CaseResult, Context, Verdict, PROMPT,
};
use crate::{ensure, hook, Harness};

/// The hold TTL of the killed waiter: far above every store's waiter bound, so the case fails
/// where a waiter entry lives as long as a hold.
const WAITER_TTL: Duration = Duration::from_secs(30);

/// A waiter process with a 30 s TTL is SIGKILLed while it waits; once the holder releases,
/// another client gets the lock within the store's waiter bound.
pub async fn killed_waiter_stops_blocking(h: Arc<dyn Harness>) -> CaseResult {
    let (a, c) = (h.client().await?, h.client().await?);
    let name = unique_name("killed-waiter");
    let held = lock(&a, &name, "A").await?;
    let mut waiter = hook!(h.spawn_waiter(&name, WAITER_TTL).await);
    wait_until_queued(&c.locks, &name, 1).await?;
    hook!(waiter.kill().await);
    let killed_at = Instant::now();
    held.release().await.ctx("A's release")?;
    let bound = h.killed_waiter_bound();
    if let Some(declared) = c.locks.capabilities().waiter_release_bound {
        ensure!(
            declared <= bound,
            "the backend declares a waiter release bound of {declared:?}, above the store's \
             contract ({bound:?} with slack)"
        );
    }
    let next = c
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(bound)
        .await
        .ctx("C's lock")?;
    let Some(next) = next else {
        return Err(format!(
            "C did not get the free lock within {bound:?} of a waiter (TTL {WAITER_TTL:?}) \
             being killed: the dead waiter's entry keeps blocking it"
        ));
    };
    tracing::info!(after = ?killed_at.elapsed(), "lock taken after the waiter was killed");
    next.release().await.ctx("C's release")?;
    Ok(Verdict::Passed)
}

/// B's `lock_timeout` runs out while A holds; B calls `shutdown()` (as the docs say to before
/// exit) and its runtime ends right after, as a CLI process exits after a timeout (nothing B
/// left for later runs). The moment A releases, C's `try_lock` gets the lock, and `state()`
/// shows nobody waiting.
pub async fn timed_out_waiter_leaves_nothing(h: Arc<dyn Harness>) -> CaseResult {
    let (a, c) = (h.client().await?, h.client().await?);
    let name = unique_name("timed-out-waiter");
    let held = lock(&a, &name, "A").await?;
    let (waiter, waited) = (h.clone(), name.clone());
    let gave_up = on_own_runtime(move || async move {
        let b = waiter.client().await?;
        let outcome = b
            .locks
            .mutex(&waited)
            .ctx("mutex")?
            .lock_timeout(Duration::from_millis(400))
            .await;
        let token = match outcome {
            Ok(outcome) => outcome.map(|guard| guard.fencing_token()),
            // Running out while the connection is suspended (a cluster's leader killed
            // mid-case) is a Timeout, not "busy": B gave up all the same.
            Err(e) if e.is_transient() => None,
            Err(e) => return Err(format!("B's lock_timeout: {e}")),
        };
        tokio::time::timeout(PROMPT, b.locks.shutdown())
            .await
            .map_err(|_| format!("B's shutdown() did not return within {PROMPT:?}"))?
            .ctx("B's shutdown")?;
        Ok(token)
    })
    .await?;
    ensure!(gave_up.is_none(), "B got a lock that A holds");
    held.release().await.ctx("A's release")?;
    let next = c
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .try_lock()
        .await
        .ctx("C's try_lock")?;
    let Some(next) = next else {
        let state = c.locks.state(&name).await.ctx("state")?;
        return Err(format!(
            "C's try_lock on the free lock said busy after B's lock_timeout ran out: B's wait \
             left something behind ({state:?})"
        ));
    };
    let state = c.locks.state(&name).await.ctx("state")?;
    ensure!(
        state.waiters.unwrap_or(0) == 0,
        "state() still shows a waiter after B timed out: {state:?}"
    );
    next.release().await.ctx("C's release")?;
    Ok(Verdict::Passed)
}
