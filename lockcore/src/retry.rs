//! Retrying transient failures with exponential backoff, once for every store.
//!
//! Backends call [`retry`] wherever a request may fail for a passing reason (a connection blip,
//! a leader election, a timeout) and should be tried again until a deadline; the pause between
//! attempts comes from a [`Backoff`]. Only errors for which [`Error::is_transient`] is true are
//! retried: anything else (bad input, refused credentials, conflicts) is returned at once.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use tumbler_core::retry::{retry, Backoff};
//! use tumbler_core::Error;
//!
//! let mut attempts = 0;
//! let answer = retry(
//!     Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
//!     None,
//!     || {
//!         attempts += 1;
//!         let failing = attempts < 3;
//!         async move {
//!             if failing {
//!                 Err(Error::connection("redis", "127.0.0.1:6379", "connection reset"))
//!             } else {
//!                 Ok(42)
//!             }
//!         }
//!     },
//! )
//! .await;
//! assert_eq!(answer.unwrap(), 42);
//! assert_eq!(attempts, 3);
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Exponentially growing pauses between attempts, with random jitter so that many clients that
/// failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Backoff {
    /// Pauses start at `initial` and double up to `max`; 20 % jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            jitter: 0.2,
            next: initial,
        }
    }

    /// Sets the jitter: each pause is scaled by a random factor in `1 - share ..= 1 + share`
    /// (clamped to `0.0..=1.0`).
    pub fn with_jitter(mut self, share: f64) -> Self {
        self.jitter = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The pause before the next attempt; each call doubles the one after it, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        let factor = 1.0 + self.jitter * (2.0 * unit_random() - 1.0);
        base.mul_f64(factor.max(0.0)).min(self.max)
    }

    /// Starts again from the initial pause (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A cheap random number in `0.0..1.0` for jitter (not for anything that needs quality).
fn unit_random() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `op` until it succeeds, fails with an error that is not
/// [transient](Error::is_transient), or `deadline` passes (then the last error is returned).
/// With `deadline` `None` it retries transient errors for ever.
///
/// The pause before a retry never reaches past the deadline: the last attempt starts before it.
///
/// # Errors
///
/// The first non-transient error, or the last transient one when the deadline passed.
pub async fn retry<T, F, Fut>(
    mut backoff: Backoff,
    deadline: Option<Instant>,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) if !error.is_transient() => return Err(error),
            Err(error) => error,
        };
        let pause = backoff.next_delay();
        match deadline {
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(error);
                }
                tracing::debug!(%error, ?pause, "transient failure; retrying");
                tokio::time::sleep_until((now + pause).min(deadline)).await;
                if Instant::now() >= deadline {
                    return Err(error);
                }
            }
            None => {
                tracing::debug!(%error, ?pause, "transient failure; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Shorthand for retrying until `within` from now.
pub async fn retry_for<T, F, Fut>(backoff: Backoff, within: Duration, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry(backoff, Some(Instant::now() + within), op).await
}

/// Whether `error` should be retried (a convenience for loops that cannot use [`retry`]).
pub fn should_retry(error: &Error) -> bool {
    error.is_transient()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum() {
        let mut b =
            Backoff::new(Duration::from_millis(10), Duration::from_millis(35)).with_jitter(0.0);
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![10, 20, 35, 35]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let mut b =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(0.5);
        for _ in 0..50 {
            b.reset();
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(150),
                "{d:?}"
            );
        }
    }

    #[tokio::test]
    async fn non_transient_errors_are_returned_at_once() {
        let mut calls = 0;
        let result: Result<()> = retry(
            Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
            None,
            || {
                calls += 1;
                async { Err(Error::invalid("ttl", "zero")) }
            },
        )
        .await;
        assert!(matches!(result, Err(Error::InvalidArgument { .. })));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_with_the_last_error() {
        let start = Instant::now();
        let mut calls = 0u32;
        let result: Result<()> = retry_for(
            Backoff::new(Duration::from_millis(100), Duration::from_millis(100)).with_jitter(0.0),
            Duration::from_millis(350),
            || {
                calls += 1;
                let n = calls;
                async move { Err(Error::connection("etcd", "x", format!("attempt {n}"))) }
            },
        )
        .await;
        let message = result.unwrap_err().to_string();
        assert!(message.contains(&format!("attempt {calls}")), "{message}");
        assert!(calls >= 4, "{calls}");
        // It stops at the deadline, not at some later pause (a generous bound: no timing test).
        assert!(
            start.elapsed() < Duration::from_millis(350) + Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
