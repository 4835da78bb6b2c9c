//! Promise 3: semaphores never exceed their limit and acquire(n) is all or nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_core::{HoldMode, LockState, SharedBackend};

use crate::history::{check_semaphore, History, Interval, Mode};
use crate::util::{answered, unique_name, CaseResult, Context, Verdict, PROMPT};
use crate::{ensure, Harness, TestClient};

fn needs_semaphore(client: &TestClient) -> Option<Verdict> {
    let caps = client.locks.capabilities();
    (!caps.semaphore).then(|| Verdict::Skipped(format!("{} has no semaphores", caps.backend)))
}

/// Permits held according to the store.
pub(crate) fn permits_held(state: &LockState) -> u32 {
    state
        .holders
        .iter()
        .map(|h| match h.mode {
            HoldMode::Permits(n) => n,
            _ => 0,
        })
        .sum()
}

/// Five clients take 1 or 2 permits of a 3-permit semaphore over and over; the recorded leases
/// never hold more than 3 permits at once.
pub async fn never_exceeds_limit(h: Arc<dyn Harness>) -> CaseResult {
    const LIMIT: u32 = 3;
    let first = h.client().await?;
    if let Some(skip) = needs_semaphore(&first) {
        return Ok(skip);
    }
    let mut clients = vec![first];
    for _ in 1..5 {
        clients.push(h.client().await?);
    }
    let name = unique_name("sem-limit");
    let history = History::new();
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let sem = client.locks.semaphore(&name, LIMIT).ctx("semaphore")?;
        let history = history.clone();
        let permits = (i as u32 % 2) + 1;
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let lease = sem
                    .acquire_timeout(permits, PROMPT * 3)
                    .await
                    .ctx("acquire")?
                    .ok_or("no permits within the deadline")?;
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(3)).await;
                history.record(Interval {
                    client: i,
                    mode: Mode::Permits(permits),
                    token: lease.fencing_token(),
                    start,
                    end: Instant::now(),
                });
                lease.release().await.ctx("release")?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.ctx("workload task")??;
    }
    let found = check_semaphore(&history.intervals(), LIMIT);
    ensure!(
        found.checked == 25,
        "expected 25 leases, recorded {}",
        found.checked
    );
    ensure!(found.is_clean(), "limit exceeded: {found}");
    Ok(Verdict::Passed)
}

/// Exactly `limit` single permits are granted; the next try is refused until one is returned.
pub async fn admits_exactly_limit(h: Arc<dyn Harness>) -> CaseResult {
    let clients = [
        h.client().await?,
        h.client().await?,
        h.client().await?,
        h.client().await?,
    ];
    if let Some(skip) = needs_semaphore(&clients[0]) {
        return Ok(skip);
    }
    let name = unique_name("sem-exact");
    let mut leases = Vec::new();
    for client in &clients[..3] {
        let sem = client.locks.semaphore(&name, 3).ctx("semaphore")?;
        // A try that meets a leader election is no answer about the permits: ask again.
        leases.push(
            answered(|| sem.try_acquire(1))
                .await
                .ctx("try")?
                .ok_or("a free permit was refused")?,
        );
    }
    let fourth = clients[3].locks.semaphore(&name, 3).ctx("semaphore")?;
    ensure!(
        answered(|| fourth.try_acquire(1))
            .await
            .ctx("4th try")?
            .is_none(),
        "a 4th permit of 3 was granted"
    );
    let returned = leases.remove(0);
    returned.release().await.ctx("release")?;
    let lease = fourth
        .acquire_timeout(1, PROMPT)
        .await
        .ctx("4th acquire")?
        .ok_or("the returned permit was not granted")?;
    leases.push(lease);
    tumbler_core::Semaphore::release_all(leases)
        .await
        .ctx("release all")?;
    Ok(Verdict::Passed)
}

/// A waiting acquire(2) holds no permit while it waits, then gets both at once.
pub async fn acquire_is_all_or_nothing(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, observer) = (h.client().await?, h.client().await?, h.client().await?);
    if let Some(skip) = needs_semaphore(&a) {
        return Ok(skip);
    }
    let name = unique_name("sem-all");
    let sem_a = a.locks.semaphore(&name, 3).ctx("semaphore")?;
    let two = sem_a.acquire(2).await.ctx("A's acquire(2)")?;
    let sem_b = b.locks.semaphore(&name, 3).ctx("semaphore")?;
    let waiting = tokio::spawn(async move { sem_b.acquire_timeout(2, PROMPT * 2).await });
    wait_until_queued(&observer.locks, &name, 1).await?;
    let state = observer.locks.state(&name).await.ctx("state")?;
    ensure!(
        permits_held(&state) == 2,
        "while B waits for 2 of the 1 free permits, the store shows {} permits held: {state:?}",
        permits_held(&state)
    );
    ensure!(
        !waiting.is_finished(),
        "B's acquire(2) returned while only 1 permit was free"
    );
    two.release().await.ctx("A's release")?;
    let lease = waiting
        .await
        .ctx("B's task")?
        .ctx("B's acquire")?
        .ok_or("B's acquire(2) was not granted after A released")?;
    ensure!(
        lease.permits() == 2,
        "B's lease holds {} permits",
        lease.permits()
    );
    let state = observer.locks.state(&name).await.ctx("state")?;
    ensure!(
        permits_held(&state) == 2,
        "after the hand-off the store shows {state:?}"
    );
    lease.release().await.ctx("B's release")?;
    Ok(Verdict::Passed)
}

/// Waits until the store lists `count` waiters on `name`, or, for stores that cannot list
/// waiters, for a fixed observation window in which a waiter has had ample time to queue.
pub(crate) async fn wait_until_queued(
    locks: &SharedBackend,
    name: &tumbler_core::LockName,
    count: usize,
) -> Result<(), String> {
    let deadline = Instant::now() + PROMPT;
    loop {
        let state = locks.state(name).await.ctx("state")?;
        match state.waiters {
            None => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(());
            }
            Some(n) if n >= count => return Ok(()),
            Some(_) if Instant::now() > deadline => {
                return Err(format!(
                    "{count} waiter(s) never showed up in state(): {state:?}"
                ))
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
