//! Retrying an etcd request with lockcore's [`retry`](tumbler_core::retry::retry), giving each
//! attempt a share of the time left.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tumbler_core::retry::{retry, Backoff};
use tumbler_core::{Error, Result};

/// The first and the longest pause between attempts. Short: when a member is down, the
/// client's balancer keeps choosing it (it has no streams, so the least load) and such
/// attempts fail at once; many quick retries reach a live member well within the deadline.
const FIRST_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_millis(100);
/// The shortest time an attempt is given, even just before the deadline.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// Calls `attempt` (given the time it may take, at most `per_attempt`) until it succeeds, fails
/// for a reason a retry cannot cure, or `deadline` passes. Also returns whether a failed
/// attempt may have been applied by the store (its answer was lost). A timeout names the
/// time really spent, from the first attempt.
pub(crate) async fn retry_until<T, F, Fut>(
    deadline: Instant,
    per_attempt: Duration,
    mut attempt: F,
) -> Result<(T, bool)>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let failed = AtomicBool::new(false);
    let outcome = retry(Backoff::new(FIRST_PAUSE, MAX_PAUSE), Some(deadline), || {
        let left = deadline.saturating_duration_since(Instant::now());
        let request = attempt(left.min(per_attempt).max(MIN_ATTEMPT));
        let failed = &failed;
        async move {
            let answer = request.await;
            if answer.as_ref().is_err_and(Error::is_transient) {
                failed.store(true, Ordering::Relaxed);
            }
            answer
        }
    })
    .await;
    match outcome {
        Ok(value) => Ok((value, failed.load(Ordering::Relaxed))),
        Err(Error::Timeout {
            operation, addr, ..
        }) => Err(Error::Timeout {
            operation,
            addr,
            after: started.elapsed(),
        }),
        Err(error) => Err(error),
    }
}
