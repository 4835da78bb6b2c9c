//! Issue 12 A.1: validity starts at the grant. A holder that stalls right after `lock()`
//! returns sees its loss as soon as it runs again, before any `.await`.

use std::sync::Arc;
use std::time::Duration;

use crate::util::{lock, on_own_runtime, unique_name, CaseResult, Context, Verdict, PROMPT};
use crate::{ensure, Harness};

/// Lock on a runtime of its own, then block that runtime's only thread (every backend task on
/// it stalls, like a GC pause) for longer than the hold TTL; with no `.await` in between,
/// `lost_reason()` must already say the hold is gone. Then a rival can take the lock.
pub async fn validity_starts_at_grant(h: Arc<dyn Harness>) -> CaseResult {
    let rival = h.client().await?;
    let name = unique_name("validity");
    let ttl = h.hold_ttl();
    let stall = ttl + ttl / 2 + Duration::from_millis(200);
    let holder = h.clone();
    let held_name = name.clone();
    let seen = on_own_runtime(move || async move {
        let a = holder.client().await?;
        let guard = lock(&a, &held_name, "A").await?;
        // The stall under test: nothing on this runtime runs, no renewal, no event.
        std::thread::sleep(stall);
        let seen = guard.lost_reason();
        // The hold is gone either way; the release only tidies up (its result is not checked).
        let _ = tokio::time::timeout(PROMPT, guard.release()).await;
        Ok(seen)
    })
    .await?;
    ensure!(
        seen.is_some(),
        "A stalled {stall:?} right after lock() (hold TTL {ttl:?}) and still sees lost_reason() \
         None: the validity deadline was not published with the grant"
    );
    let bound = h.crash_release_bound();
    let taken = rival
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(bound)
        .await
        .ctx("rival's lock")?
        .ok_or_else(|| format!("the stalled holder's lock was not free within {bound:?}"))?;
    taken.release().await.ctx("rival's release")?;
    Ok(Verdict::Passed)
}
