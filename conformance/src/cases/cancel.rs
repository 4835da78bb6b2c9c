//! Promise 7: dropping an acquire future at any point leaks no hold and no queue entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_core::SharedBackend;

use super::semaphore::wait_until_queued;
use crate::util::{lock, unique_name, CaseResult, Context, Verdict, PROMPT};
use crate::{ensure, Harness};

/// Waits until the store shows `name` free with no waiters (where it can tell).
async fn wait_until_idle(
    locks: &SharedBackend,
    name: &tumbler_core::LockName,
) -> Result<(), String> {
    let deadline = Instant::now() + PROMPT;
    loop {
        let state = locks.state(name).await.ctx("state")?;
        if !state.is_held() && state.waiters.unwrap_or(0) == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{name} still shows holders or waiters: {state:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A waiter that gives up (its future dropped while queued) does not block the next one.
pub async fn cancelled_waiter_leaves_no_entry(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    let name = unique_name("cancel-wait");
    let held = lock(&a, &name, "A").await?;
    let b_mutex = b.locks.mutex(&name).ctx("mutex")?;
    let waiter = tokio::spawn(async move { b_mutex.lock().await });
    wait_until_queued(&c.locks, &name, 1).await?;
    waiter.abort();
    let _ = waiter.await;
    held.release().await.ctx("A's release")?;
    let next = c
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(PROMPT)
        .await
        .ctx("C's lock")?
        .ok_or("C was blocked by B's cancelled wait")?;
    next.release().await.ctx("C's release")?;
    wait_until_idle(&c.locks, &name).await?;
    Ok(Verdict::Passed)
}

/// Acquisitions on a free lock cancelled at many points: afterwards the lock is free.
pub async fn cancel_at_any_point_leaks_nothing(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let name = unique_name("cancel-any");
    let mutex = a.locks.mutex(&name).ctx("mutex")?;
    let mut completed = 0;
    for step in 0..30u64 {
        // Cancelled mid-acquire (Err) must leave nothing behind; completed ones are released.
        if let Ok(guard) =
            tokio::time::timeout(Duration::from_micros(150 * step), mutex.lock()).await
        {
            guard.ctx("lock")?.release().await.ctx("release")?;
            completed += 1;
        }
    }
    tracing::debug!(
        completed,
        "acquisitions completed before their cancellation point"
    );
    let next = b
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(PROMPT)
        .await
        .ctx("B's lock")?;
    ensure!(
        next.is_some(),
        "a cancelled acquisition left a hold behind ({completed} of 30 completed)"
    );
    if let Some(next) = next {
        next.release().await.ctx("B's release")?;
    }
    wait_until_idle(&b.locks, &name).await?;
    Ok(Verdict::Passed)
}
