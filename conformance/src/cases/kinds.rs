//! Issue 12 A.4: one name, one kind. A name in use by one primitive and asked for by another
//! is a `Conflict` naming both; nested names are independent locks; a semaphore's limit is
//! recorded and a different limit is a `Conflict`.

use std::sync::Arc;
use std::time::Duration;

use tumbler_core::{Error, LockName};

use crate::util::{answered, unique_name, CaseResult, Context, Kind, Verdict, Wait, PROMPT};
use crate::{ensure, Harness};

/// How long a mismatching `lock_timeout` may wait before it must have said `Conflict`: longer
/// than one store request may take, so a wait that ran out is the store's answer "busy" and not
/// a request still unanswered (a leader election): a correct backend answers `Conflict` at once,
/// and one whose request timed out gives a transient error, which [`answered`] retries.
fn mismatch_wait(h: &dyn Harness) -> Duration {
    h.request_timeout() + Duration::from_millis(300)
}

/// Checks that `result` is a `Conflict` on `name` naming both kinds.
fn conflict_naming<T>(
    result: tumbler_core::Result<Option<T>>,
    name: &LockName,
    held: Kind,
    asked: Kind,
    how: &str,
) -> Result<(), String> {
    match result {
        Err(e @ Error::Conflict { .. }) => {
            let message = e.to_string();
            ensure!(
                message.contains(name.as_str()),
                "the conflict does not name the lock {name}: {message}"
            );
            ensure!(
                held.named_in(&message) && asked.named_in(&message),
                "the conflict does not name both the {} and the {}: {message}",
                held.primitive(),
                asked.primitive()
            );
            Ok(())
        }
        Err(e) => Err(format!(
            "{how} as a {asked:?} of a name held as a {held:?} failed with {e}, not Conflict"
        )),
        Ok(Some(_)) => Err(format!(
            "{how} as a {asked:?} was granted while the name is held as a {held:?}: both kinds \
             hold one name at once"
        )),
        Ok(None) => Err(format!(
            "{how} as a {asked:?} said busy while the name is held as a {held:?}; different \
             kinds on one name must be a Conflict naming both"
        )),
    }
}

/// For every pair of different primitives, in both orders: A holds the name one way, B asks
/// for it the other way (try and timed wait) and gets a `Conflict` naming both.
pub async fn one_name_one_kind(h: Arc<dyn Harness>) -> CaseResult {
    every_pair_conflicts(h, "one-kind", false).await
}

/// The same-kind acquisition that has to wait behind a holder of `held`, if there is one: it
/// queues on the name and leaves a trace (a waiter mark, a flag on the holder) for a while.
fn blocked_by(held: Kind) -> Option<Kind> {
    match held {
        Kind::Mutex => Some(Kind::Mutex),
        Kind::Read | Kind::Write => Some(Kind::Write),
        // A permit of a limit-2 semaphore leaves room for another: nothing waits.
        Kind::Semaphore => None,
    }
}

/// The kind rule holds after a waiter of the holder's kind gave up (explorer finding, Redis
/// seed 2158): A holds the name one way, B waits for it the same way and times out, and then
/// B's ask as another primitive is still a `Conflict`. A waiter's passing must not make the
/// name look free to the other primitives while it is held.
pub async fn one_kind_after_a_waiter_gave_up(h: Arc<dyn Harness>) -> CaseResult {
    every_pair_conflicts(h, "kind-after-waiter", true).await
}

/// For every pair (held, asked) of different primitives the store offers: A holds a fresh
/// name as `held`; with `waiter_first`, B first waits for it as the kind [`blocked_by`] names
/// (held kinds behind which nothing waits are skipped) and gives up; then B asks as `asked`, a
/// try and a timed wait, and must get a `Conflict` naming both.
async fn every_pair_conflicts(h: Arc<dyn Harness>, label: &str, waiter_first: bool) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let caps = a.locks.capabilities();
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.unsupported(&caps).is_none())
        .collect();
    let wait = mismatch_wait(&*h);
    let mut pairs = 0;
    for &held in &kinds {
        let waiter = blocked_by(held).filter(|k| kinds.contains(k));
        if waiter_first && waiter.is_none() {
            continue;
        }
        for &asked in &kinds {
            if held.primitive() == asked.primitive() {
                continue;
            }
            pairs += 1;
            let name = unique_name(label);
            let guard = held
                .acquire(&a.locks, &name, Wait::No)
                .await
                .ctx("A's acquire")?
                .ok_or_else(|| format!("A's {held:?} on a fresh name was refused"))?;
            let mut before = String::new();
            if let (true, Some(waiter)) = (waiter_first, waiter) {
                let gave_up = waiter
                    .acquire(&b.locks, &name, Wait::For(Duration::from_millis(300)))
                    .await
                    .ctx("B's timed wait of the same kind")?;
                ensure!(
                    gave_up.is_none(),
                    "B's {waiter:?} was granted while A holds the name as a {held:?}"
                );
                before = format!("after B's {waiter:?} wait gave up, ");
            }
            // A hold lost meanwhile (a fault) frees the name: say so, it changes the diagnosis.
            let with_loss = |failure: String| match guard.signals().lost_reason() {
                Some(reason) => format!("{failure} (A's hold was lost meanwhile: {reason})"),
                None => failure,
            };
            for (how, how_long) in [("a try", Wait::No), ("a timed wait", Wait::For(wait))] {
                conflict_naming(
                    answered(|| asked.acquire(&b.locks, &name, how_long)).await,
                    &name,
                    held,
                    asked,
                    &format!("{before}{how}"),
                )
                .map_err(with_loss)?;
            }
            guard.release_boxed().await.ctx("A's release")?;
        }
    }
    if pairs == 0 {
        return Ok(Verdict::Skipped(format!(
            "{} offers only one primitive",
            caps.backend
        )));
    }
    Ok(Verdict::Passed)
}

/// `p` and `p/b` are independent locks, both ways round: with one held, the other is free in
/// `state()`, to `try_lock` and to `lock_timeout`.
pub async fn nested_names_independent(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    let parent = unique_name("nested");
    let child = LockName::new(format!("{parent}/b")).ctx("child name")?;
    for (held_name, other) in [(&parent, &child), (&child, &parent)] {
        let held = a
            .locks
            .mutex(held_name)
            .ctx("mutex")?
            .try_lock()
            .await
            .ctx("A's try_lock")?
            .ok_or_else(|| format!("A could not take the fresh {held_name}"))?;
        let state = b.locks.state(other).await.ctx("state")?;
        ensure!(
            !state.is_held(),
            "with {held_name} held, state({other}) shows holders: {state:?}"
        );
        let mutex = b.locks.mutex(other).ctx("mutex")?;
        let tried =
            mutex.try_lock().await.ctx("B's try_lock")?.ok_or_else(|| {
                format!("with {held_name} held, B's try_lock on {other} said busy")
            })?;
        tried.release().await.ctx("B's release")?;
        let waited = mutex
            .lock_timeout(PROMPT)
            .await
            .ctx("B's lock_timeout")?
            .ok_or_else(|| {
                format!("with {held_name} held, B's lock_timeout on {other} waited {PROMPT:?}")
            })?;
        waited.release().await.ctx("B's release")?;
        held.release().await.ctx("A's release")?;
    }
    Ok(Verdict::Passed)
}

/// Handles with limits 2, 5 and 3 on one name: the first recorded limit rules; the others get
/// a `Conflict`, and never are more than 2 permits held.
pub async fn semaphore_limit_mismatch_conflict(h: Arc<dyn Harness>) -> CaseResult {
    let clients = [h.client().await?, h.client().await?, h.client().await?];
    let caps = clients[0].locks.capabilities();
    if !caps.semaphore {
        return Ok(Verdict::Skipped(format!(
            "{} has no semaphores",
            caps.backend
        )));
    }
    let wait = mismatch_wait(&*h);
    let name = unique_name("sem-mismatch");
    let first = clients[0].locks.semaphore(&name, 2).ctx("semaphore")?;
    let mut leases = vec![first
        .try_acquire(1)
        .await
        .ctx("first try")?
        .ok_or("the first permit of a fresh semaphore was refused")?];
    for (client, limit) in [(&clients[1], 5), (&clients[2], 3)] {
        let sem = client.locks.semaphore(&name, limit).ctx("semaphore")?;
        for (how, result) in [
            ("a try", answered(|| sem.try_acquire(1)).await),
            (
                "a timed wait",
                answered(|| sem.acquire_timeout(1, wait)).await,
            ),
        ] {
            match result {
                Err(e @ Error::Conflict { .. }) => {
                    let message = e.to_string();
                    ensure!(
                        message.contains(name.as_str()),
                        "the conflict does not name the semaphore {name}: {message}"
                    );
                }
                Err(e) => {
                    return Err(format!(
                        "{how} with limit {limit} on a semaphore of limit 2 failed with {e}, \
                         not Conflict"
                    ))
                }
                Ok(Some(lease)) => {
                    leases.push(lease);
                    return Err(format!(
                        "{how} with limit {limit} on a semaphore of limit 2 was granted ({} \
                         permits held): a mismatching limit must be a Conflict",
                        leases.len()
                    ));
                }
                Ok(None) => {
                    return Err(format!(
                        "{how} with limit {limit} on a semaphore of limit 2 said busy, not \
                         Conflict"
                    ))
                }
            }
        }
    }
    let second = first
        .try_acquire(1)
        .await
        .ctx("second try")?
        .ok_or("the second permit of 2 was refused")?;
    ensure!(
        first.try_acquire(1).await.ctx("third try")?.is_none(),
        "a third permit of a limit-2 semaphore was granted"
    );
    second.release().await.ctx("release")?;
    for lease in leases {
        lease.release().await.ctx("release")?;
    }
    Ok(Verdict::Passed)
}
