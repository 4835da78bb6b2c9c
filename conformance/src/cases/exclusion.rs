//! Promises 1 and 2: mutual exclusion and fencing tokens, on each exclusive adapter.

use std::sync::Arc;

use crate::history::{check_exclusive, History};
use crate::util::{
    answered, exclusive_rounds, lock, needs_strict_fencing, unique_name, CaseResult, Context,
    Exclusive, Verdict, Wait, PROMPT,
};
use crate::{ensure, hook, Harness};

/// Four clients contend for one lock; the recorded holds never overlap and tokens increase.
pub async fn mutual_exclusion(h: Arc<dyn Harness>, adapter: Exclusive) -> CaseResult {
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 6;
    let mut clients = vec![h.client().await?];
    let caps = clients[0].locks.capabilities();
    if let Some(skip) = adapter.unsupported(&caps) {
        return Ok(skip);
    }
    for _ in 1..CLIENTS {
        clients.push(h.client().await?);
    }
    let name = unique_name("exclusion");
    let history = History::new();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(exclusive_rounds(
                adapter,
                c.locks.clone(),
                i,
                name.clone(),
                ROUNDS,
                history.clone(),
            ))
        })
        .collect();
    for task in tasks {
        task.await.ctx("workload task")??;
    }
    let found = check_exclusive(&history.intervals());
    ensure!(
        found.checked == CLIENTS * ROUNDS,
        "expected {} holds, recorded {}",
        CLIENTS * ROUNDS,
        found.checked
    );
    ensure!(found.overlaps == 0, "holds overlapped: {found}");
    if needs_strict_fencing(&caps).is_none() {
        ensure!(
            found.token_regressions == 0,
            "tokens went backwards: {found}"
        );
    }
    Ok(Verdict::Passed)
}

/// While one client holds, another's try and short timeout see "busy"; after release it gets in.
pub async fn try_lock_sees_busy(h: Arc<dyn Harness>, adapter: Exclusive) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    if let Some(skip) = adapter.unsupported(&a.locks.capabilities()) {
        return Ok(skip);
    }
    let name = unique_name("busy");
    let held = adapter
        .acquire(&a.locks, &name, Wait::No)
        .await
        .ctx("A's try on a free lock")?
        .ok_or("A's try on a free lock returned busy")?;
    // A store request that meets a leader election is no answer about the lock: ask again.
    let tried = answered(|| adapter.acquire(&b.locks, &name, Wait::No))
        .await
        .ctx("B's try")?;
    ensure!(tried.is_none(), "B's try succeeded while A held the lock");
    let waited = answered(|| {
        adapter.acquire(
            &b.locks,
            &name,
            Wait::For(std::time::Duration::from_millis(300)),
        )
    })
    .await
    .ctx("B's timed wait")?;
    ensure!(
        waited.is_none(),
        "B's timed wait succeeded while A held the lock"
    );
    held.release_boxed().await.ctx("A's release")?;
    let after = adapter
        .acquire(&b.locks, &name, Wait::For(PROMPT))
        .await
        .ctx("B after release")?
        .ok_or_else(|| format!("B did not get the released lock within {PROMPT:?}"))?;
    after.release_boxed().await.ctx("B's release")?;
    Ok(Verdict::Passed)
}

/// Alternating clients take the lock in turn: every token is larger than the one before.
pub async fn fencing_tokens_increase(h: Arc<dyn Harness>, adapter: Exclusive) -> CaseResult {
    let clients = [h.client().await?, h.client().await?, h.client().await?];
    let caps = clients[0].locks.capabilities();
    if let Some(skip) = adapter
        .unsupported(&caps)
        .or_else(|| needs_strict_fencing(&caps))
    {
        return Ok(skip);
    }
    let name = unique_name("fencing");
    let mut last = 0;
    for round in 0..9 {
        let client = &clients[round % clients.len()];
        let guard = adapter
            .acquire(&client.locks, &name, Wait::For(PROMPT))
            .await
            .ctx("acquire")?
            .ok_or("lock not granted in time")?;
        let token = guard.fencing_token();
        ensure!(
            token > last,
            "round {round}: token {token} is not larger than {last}"
        );
        last = token;
        guard.release_boxed().await.ctx("release")?;
    }
    Ok(Verdict::Passed)
}

/// A holder whose session the store expires is succeeded by a holder with a larger token.
pub async fn fencing_token_after_session_expiry(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    if let Some(skip) = needs_strict_fencing(&a.locks.capabilities()) {
        return Ok(skip);
    }
    let name = unique_name("fence-expiry");
    let old = lock(&a, &name, "A").await?;
    hook!(h.expire_session(&a).await);
    let new = b
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock_timeout(h.crash_release_bound())
        .await
        .ctx("B's lock")?
        .ok_or("B did not get the lock after A's session expired")?;
    ensure!(
        new.fencing_token() > old.fencing_token(),
        "after expiry the token went from {} to {}",
        old.fencing_token(),
        new.fencing_token()
    );
    new.release().await.ctx("B's release")?;
    drop(old);
    Ok(Verdict::Passed)
}
