//! The rest of the API on every store: state, FIFO order where promised, multi-lock,
//! re-entrancy across clients, connection events.

use std::sync::Arc;
use std::time::Duration;

use tumbler_core::{ConnectionEvent, LockSpec, MultiLock};

use super::semaphore::wait_until_queued;
use crate::util::{lock, unique_name, CaseResult, Context, Verdict, PROMPT};
use crate::{ensure, hook, Harness};

/// `state()` shows the holder (with its token where known) and then shows the lock free.
pub async fn state_reports_holders(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let name = unique_name("state");
    let free = b.locks.state(&name).await.ctx("state of a fresh name")?;
    ensure!(!free.is_held(), "a fresh name shows holders: {free:?}");
    let held = lock(&a, &name, "A").await?;
    let state = b.locks.state(&name).await.ctx("state while held")?;
    ensure!(state.holders.len() == 1, "expected one holder: {state:?}");
    if let Some(token) = state.holders[0].token {
        ensure!(
            token == held.fencing_token(),
            "state shows token {token}, guard has {}",
            held.fencing_token()
        );
    }
    held.release().await.ctx("release")?;
    let after = b.locks.state(&name).await.ctx("state after release")?;
    ensure!(
        !after.is_held(),
        "released lock still shows holders: {after:?}"
    );
    Ok(Verdict::Passed)
}

/// Where the backend promises FIFO, queued waiters are served in arrival order.
pub async fn fifo_order_when_promised(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let caps = a.locks.capabilities();
    if !caps.fifo || !caps.lists_waiters {
        return Ok(Verdict::Skipped(format!(
            "{} does not promise FIFO order with visible waiters",
            caps.backend
        )));
    }
    let name = unique_name("fifo");
    let held = lock(&a, &name, "A").await?;
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for position in 1..=3usize {
        let client = h.client().await?;
        let mutex = client.locks.mutex(&name).ctx("mutex")?;
        let order_tx = order_tx.clone();
        tasks.push(tokio::spawn(async move {
            let _keep = client;
            let guard = mutex.lock_timeout(PROMPT * 2).await?;
            let _ = order_tx.send(position);
            if let Some(guard) = guard {
                guard.release().await?;
            }
            Ok::<(), tumbler_core::Error>(())
        }));
        wait_until_queued(&a.locks, &name, position).await?;
    }
    held.release().await.ctx("A's release")?;
    for task in tasks {
        task.await.ctx("waiter task")?.ctx("waiter")?;
    }
    drop(order_tx);
    let mut order = Vec::new();
    while let Some(position) = order_rx.recv().await {
        order.push(position);
    }
    ensure!(order == [1, 2, 3], "waiters were served in order {order:?}");
    Ok(Verdict::Passed)
}

/// A MultiLock with one busy part takes nothing; once free it takes all.
pub async fn multilock_all_or_nothing(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let names = [
        unique_name("multi-a"),
        unique_name("multi-b"),
        unique_name("multi-c"),
    ];
    let blocker = b
        .locks
        .mutex(&names[1])
        .ctx("mutex")?
        .lock()
        .await
        .ctx("B's lock")?;
    let parts: Vec<LockSpec> = names
        .iter()
        .map(|n| a.locks.mutex(n).map(LockSpec::from))
        .collect::<Result<_, _>>()
        .ctx("mutex")?;
    let multi = MultiLock::new(parts);
    ensure!(
        multi.try_lock().await.ctx("try_lock")?.is_none(),
        "MultiLock succeeded with a busy part"
    );
    for n in [&names[0], &names[2]] {
        let state = b.locks.state(n).await.ctx("state")?;
        ensure!(
            !state.is_held(),
            "{n} was left held after the MultiLock gave up: {state:?}"
        );
    }
    blocker.release().await.ctx("B's release")?;
    let all = multi
        .lock_timeout(PROMPT)
        .await
        .ctx("MultiLock")?
        .ok_or("MultiLock not granted")?;
    for n in &names {
        let busy = b
            .locks
            .mutex(n)
            .ctx("mutex")?
            .try_lock()
            .await
            .ctx("B's try")?;
        ensure!(busy.is_none(), "{n} is not held by the MultiLock");
    }
    all.release().await.ctx("MultiLock release")?;
    Ok(Verdict::Passed)
}

/// A re-entered lock excludes other clients until the last level is released.
pub async fn reentrant_excludes_other_clients(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let name = unique_name("reentrant");
    let handle = a.locks.reentrant_mutex(&name).ctx("reentrant")?;
    let outer = handle.lock().await.ctx("outer")?;
    let inner = handle
        .lock_timeout(Duration::from_secs(1))
        .await
        .ctx("inner")?
        .ok_or("re-entry waited")?;
    let other = b.locks.mutex(&name).ctx("mutex")?;
    ensure!(
        other.try_lock().await.ctx("B's try")?.is_none(),
        "B got in while A held twice"
    );
    inner.release().await.ctx("inner release")?;
    ensure!(
        other.try_lock().await.ctx("B's try")?.is_none(),
        "B got in while A still held once"
    );
    outer.release().await.ctx("outer release")?;
    let got = other.lock_timeout(PROMPT).await.ctx("B's lock")?;
    ensure!(
        got.is_some(),
        "B did not get the lock after A's last release"
    );
    Ok(Verdict::Passed)
}

/// Cutting a client's connection is reported on its event stream, and so is healing it.
pub async fn connection_events_report_cut(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let name = unique_name("events");
    let held = lock(&a, &name, "A").await?;
    let mut events = a.locks.connection_events();
    hook!(h.cut_connection(&a).await);
    let bound = h.crash_release_bound();
    let cut_seen = tokio::time::timeout(bound, async {
        loop {
            match events.next().await {
                Some(ConnectionEvent::Suspended | ConnectionEvent::Lost) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    hook!(h.heal_connection(&a).await);
    ensure!(
        cut_seen == Ok(true),
        "no Suspended/Lost event within {bound:?} of the cut"
    );
    let healed = tokio::time::timeout(bound + PROMPT, async {
        loop {
            match events.next().await {
                Some(ConnectionEvent::Reconnected | ConnectionEvent::Connected) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    ensure!(
        healed == Ok(true),
        "no Reconnected event after the connection healed"
    );
    drop(held);
    Ok(Verdict::Passed)
}
