//! Promise 4: readers share, a writer excludes all, downgrade keeps the hold, upgrade is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_core::Error;

use super::semaphore::wait_until_queued;
use crate::history::{check_read_write, History, Interval, Mode};
use crate::util::{unique_name, CaseResult, Context, Verdict, PROMPT};
use crate::{ensure, Harness, TestClient};

fn needs_rwlock(client: &TestClient) -> Option<Verdict> {
    let caps = client.locks.capabilities();
    (!caps.rwlock).then(|| Verdict::Skipped(format!("{} has no read-write locks", caps.backend)))
}

/// Two clients hold the read side at once.
pub async fn readers_share(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    if let Some(skip) = needs_rwlock(&a) {
        return Ok(skip);
    }
    let name = unique_name("rw-share");
    let first = a
        .locks
        .rwlock(&name)
        .ctx("rwlock")?
        .read()
        .await
        .ctx("A's read")?;
    let second = b
        .locks
        .rwlock(&name)
        .ctx("rwlock")?
        .read_timeout(PROMPT)
        .await
        .ctx("B's read")?;
    ensure!(second.is_some(), "B could not read while A only read");
    if let Some(second) = second {
        second.release().await.ctx("B's release")?;
    }
    first.release().await.ctx("A's release")?;
    Ok(Verdict::Passed)
}

/// A writer keeps out readers and writers; readers keep out writers.
pub async fn writer_excludes(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    if let Some(skip) = needs_rwlock(&a) {
        return Ok(skip);
    }
    let name = unique_name("rw-excl");
    let (rw_a, rw_b, rw_c) = (
        a.locks.rwlock(&name).ctx("rwlock")?,
        b.locks.rwlock(&name).ctx("rwlock")?,
        c.locks.rwlock(&name).ctx("rwlock")?,
    );
    let writer = rw_a.write().await.ctx("A's write")?;
    ensure!(
        rw_b.try_read().await.ctx("B's try_read")?.is_none(),
        "a reader got in while a writer held"
    );
    ensure!(
        rw_c.try_write().await.ctx("C's try_write")?.is_none(),
        "a second writer got in"
    );
    writer.release().await.ctx("A's release")?;
    let reader = rw_b
        .read_timeout(PROMPT)
        .await
        .ctx("B's read")?
        .ok_or("B could not read a free lock")?;
    ensure!(
        rw_c.try_write().await.ctx("C's try_write")?.is_none(),
        "a writer got in while a reader held"
    );
    reader.release().await.ctx("B's release")?;
    let writer = rw_c
        .write_timeout(PROMPT)
        .await
        .ctx("C's write")?
        .ok_or("C could not write a free lock")?;
    writer.release().await.ctx("C's release")?;
    Ok(Verdict::Passed)
}

/// Four clients mix reads and writes; the history shows no writer overlapping anything.
pub async fn mixed_history(h: Arc<dyn Harness>) -> CaseResult {
    let first = h.client().await?;
    if let Some(skip) = needs_rwlock(&first) {
        return Ok(skip);
    }
    let mut clients = vec![first];
    for _ in 1..4 {
        clients.push(h.client().await?);
    }
    let name = unique_name("rw-mixed");
    let history = History::new();
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let rw = client.locks.rwlock(&name).ctx("rwlock")?;
        let history = history.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..6 {
                let write = (i + round) % 3 == 0;
                let (token, start, release) = if write {
                    let g = rw
                        .write_timeout(PROMPT * 3)
                        .await
                        .ctx("write")?
                        .ok_or("write timed out")?;
                    (
                        g.fencing_token(),
                        Instant::now(),
                        Box::new(g) as Box<dyn tumbler_core::Guard>,
                    )
                } else {
                    let g = rw
                        .read_timeout(PROMPT * 3)
                        .await
                        .ctx("read")?
                        .ok_or("read timed out")?;
                    (
                        g.fencing_token(),
                        Instant::now(),
                        Box::new(g) as Box<dyn tumbler_core::Guard>,
                    )
                };
                tokio::time::sleep(Duration::from_millis(3)).await;
                history.record(Interval {
                    client: i,
                    mode: if write { Mode::Exclusive } else { Mode::Shared },
                    token,
                    start,
                    end: Instant::now(),
                });
                release.release_boxed().await.ctx("release")?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.ctx("workload task")??;
    }
    let mut found = check_read_write(&history.intervals());
    if crate::util::needs_strict_fencing(&clients[0].locks.capabilities()).is_some() {
        found.token_regressions = 0;
    }
    ensure!(
        found.checked == 24,
        "expected 24 holds, recorded {}",
        found.checked
    );
    ensure!(found.is_clean(), "read-write rules broken: {found}");
    Ok(Verdict::Passed)
}

/// A writer queued behind a downgrading holder gets in only after the downgraded read is
/// released: the hold never lapses during the downgrade.
pub async fn downgrade_keeps_hold(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    if let Some(skip) = needs_rwlock(&a) {
        return Ok(skip);
    }
    let name = unique_name("rw-down");
    let writer = a
        .locks
        .rwlock(&name)
        .ctx("rwlock")?
        .write()
        .await
        .ctx("A's write")?;
    let rw_b = b.locks.rwlock(&name).ctx("rwlock")?;
    let queued = tokio::spawn(async move {
        let got = rw_b.write_timeout(PROMPT * 2).await;
        let at = Instant::now();
        match got {
            Ok(Some(g)) => g.release().await.map(|()| Some(at)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    });
    wait_until_queued(&c.locks, &name, 1).await?;
    let reader = writer.downgrade().await.ctx("A's downgrade")?;
    ensure!(
        !queued.is_finished(),
        "the queued writer got in during the downgrade"
    );
    let rw_c = c.locks.rwlock(&name).ctx("rwlock")?;
    ensure!(
        rw_c.try_write().await.ctx("C's try_write")?.is_none(),
        "a writer got in after the downgrade"
    );
    let released_at = Instant::now();
    reader.release().await.ctx("A's read release")?;
    let granted = queued
        .await
        .ctx("B's task")?
        .ctx("B's write")?
        .ok_or("B never got the write lock")?;
    ensure!(
        granted >= released_at,
        "B got the write lock {:?} before A released the downgraded read",
        released_at.duration_since(granted)
    );
    Ok(Verdict::Passed)
}

/// A read hold cannot be upgraded; the handle refuses write() while it holds reads.
pub async fn upgrade_refused(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    if let Some(skip) = needs_rwlock(&a) {
        return Ok(skip);
    }
    let rw = a.locks.rwlock(unique_name("rw-up")).ctx("rwlock")?;
    let reader = rw.read().await.ctx("read")?;
    ensure!(
        matches!(reader.upgrade(), Err(Error::UpgradeRefused { .. })),
        "upgrade was not refused"
    );
    ensure!(
        matches!(rw.try_write().await, Err(Error::UpgradeRefused { .. })),
        "write() while reading was not refused"
    );
    reader.release().await.ctx("release")?;
    ensure!(
        rw.try_write().await.ctx("write after release")?.is_some(),
        "write after release failed"
    );
    Ok(Verdict::Passed)
}

/// A queued writer keeps later readers out, so a stream of readers cannot starve it.
pub async fn writer_not_starved(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    if let Some(skip) = needs_rwlock(&a) {
        return Ok(skip);
    }
    let name = unique_name("rw-starve");
    let first_reader = a
        .locks
        .rwlock(&name)
        .ctx("rwlock")?
        .read()
        .await
        .ctx("A's read")?;
    let rw_b = b.locks.rwlock(&name).ctx("rwlock")?;
    let writer = tokio::spawn(async move {
        match rw_b.write_timeout(PROMPT * 2).await {
            Ok(Some(g)) => g.release().await.map(|()| true),
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        }
    });
    wait_until_queued(&c.locks, &name, 1).await?;
    let late_reader = c
        .locks
        .rwlock(&name)
        .ctx("rwlock")?
        .read_timeout(Duration::from_millis(500))
        .await
        .ctx("C's read")?;
    ensure!(
        late_reader.is_none(),
        "a reader arriving after a queued writer got in ahead of it"
    );
    first_reader.release().await.ctx("A's release")?;
    let wrote = writer.await.ctx("B's task")?.ctx("B's write")?;
    ensure!(
        wrote,
        "the queued writer was not granted after the readers left"
    );
    Ok(Verdict::Passed)
}
