//! Issue 12 A.3: unreachable is an error, never "busy". Calls with a deadline on a store that
//! is cut off or stalled return a connection or timeout error within it plus a small margin.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_core::{Error, LockName};

use crate::util::{unique_name, CaseResult, Context, Verdict};
use crate::{hook, Harness, TestClient};

/// What a call may take beyond the request timeout and its own limit (a loaded machine).
const MARGIN: Duration = Duration::from_secs(2);
/// The limit given to `lock_timeout` on the unreachable store.
const WAIT: Duration = Duration::from_secs(1);

/// How a call on the unreachable store ended.
enum Ended {
    /// It returned a transient error: what is wanted.
    Transient,
    /// It returned something else: the failure message.
    Wrong(String),
}

/// Runs `call` (an acquisition that must fail) with a limit of `allowed`; checks it fails with
/// a connection or timeout error in time, and that a timeout states the real duration.
async fn must_fail<T, F>(what: &str, allowed: Duration, call: F) -> Ended
where
    F: Future<Output = tumbler_core::Result<Option<T>>>,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(allowed * 3, call).await;
    let took = started.elapsed();
    match outcome {
        Err(_) => Ended::Wrong(format!(
            "{what} had not returned after {:?} (allowed {allowed:?})",
            allowed * 3
        )),
        Ok(Ok(Some(_))) => Ended::Wrong(format!(
            "{what} was granted by an unreachable store after {took:?}"
        )),
        Ok(Ok(None)) => Ended::Wrong(format!(
            "{what} said Ok(None), \"busy\", after {took:?}: an unreachable store must give a \
             connection or timeout error"
        )),
        Ok(Err(e)) if !e.is_transient() => Ended::Wrong(format!(
            "{what} failed with {e}, not a connection or timeout error"
        )),
        Ok(Err(_)) if took > allowed => Ended::Wrong(format!(
            "{what} returned its error after {took:?}, beyond the allowed {allowed:?}"
        )),
        Ok(Err(Error::Timeout { after, .. }))
            if after + Duration::from_millis(500) < took || after > took + MARGIN =>
        {
            Ended::Wrong(format!(
                "{what}'s timeout error says {after:?} but the call took {took:?}"
            ))
        }
        Ok(Err(e)) => match repeated_phrase(&e.to_string()) {
            Some(phrase) => Ended::Wrong(format!(
                "{what}'s error repeats {phrase:?}: {e} (issue 12 A.11: no repeated prefixes)"
            )),
            None => Ended::Transient,
        },
    }
}

/// A phrase of an error's message that appears more than once (a prefix added at two layers).
fn repeated_phrase(message: &str) -> Option<&'static str> {
    [
        "cannot reach the",
        "did not finish within",
        "store reported an error",
    ]
    .into_iter()
    .find(|phrase| message.matches(phrase).count() > 1)
}

/// try_lock, lock_timeout and lock on `client`, which cannot reach its store.
async fn every_call_fails(
    h: &dyn Harness,
    client: &TestClient,
    name: &LockName,
) -> Result<(), String> {
    let mutex = client.locks.mutex(name).ctx("mutex")?;
    // The backend's declared request timeout (lockcore bounds try_lock by it), or the one the
    // harness configured if that is longer.
    let declared = client.locks.capabilities().request_timeout;
    let request = declared.max(h.request_timeout()) + MARGIN;
    let mut problems = Vec::new();
    if let Ended::Wrong(why) = must_fail("try_lock", request, mutex.try_lock()).await {
        problems.push(why);
    }
    if let Ended::Wrong(why) =
        must_fail("lock_timeout(1s)", request + WAIT, mutex.lock_timeout(WAIT)).await
    {
        problems.push(why);
    }
    // lock() has no deadline of its own; it must still give up with an error, not retry on.
    if let Ended::Wrong(why) =
        must_fail("lock", request * 2, async { mutex.lock().await.map(Some) }).await
    {
        problems.push(why);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The client's connection is cut: try_lock, lock_timeout and lock give connection or timeout
/// errors within the request timeout (plus lock_timeout's own limit), never `Ok(None)`.
pub async fn unreachable_is_error_not_busy(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let name = unique_name("unreachable");
    hook!(h.cut_connection(&a).await);
    let checked = every_call_fails(&*h, &a, &name).await;
    hook!(h.heal_connection(&a).await);
    checked?;
    Ok(Verdict::Passed)
}

/// The store is stalled (SIGSTOP): the same calls give errors within the deadline, and a
/// timeout error states the real time waited.
pub async fn stalled_store_is_error_within_deadline(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let name = unique_name("stalled");
    // One call first, so the client is connected and has a session before the stall.
    let warm = a
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .try_lock()
        .await
        .ctx("try_lock before the stall")?;
    if let Some(warm) = warm {
        warm.release().await.ctx("release before the stall")?;
    }
    hook!(h.pause_server().await);
    let checked = every_call_fails(&*h, &a, &name).await;
    hook!(h.resume_server().await);
    checked?;
    Ok(Verdict::Passed)
}
