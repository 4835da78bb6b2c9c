//! The deadline layer: every user-facing acquire goes through [`acquire`], once for all stores.
//!
//! Rules it enforces on every backend:
//! - requests no store can serve are refused before the store is touched
//!   ([`crate::checked::validate`], and for campaigns [`crate::checked::validate_value`]);
//! - one attempt (`try_lock`) returns within [`Capabilities::request_timeout`]: a store that
//!   does not answer gives [`Error::Timeout`] with the real elapsed time, never "busy";
//! - a bounded wait (`lock_timeout`) that runs out while the backend reports its connection
//!   [`Suspended`](ConnectionEvent::Suspended) or [`Lost`](ConnectionEvent::Lost) gives
//!   [`Error::Timeout`], not "busy": nobody could tell whether the lock was free.
//!
//! [`Capabilities::request_timeout`]: crate::Capabilities::request_timeout

use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::{AcquireRequest, LockKind, SharedBackend};
use crate::error::{Error, Result};
use crate::events::ConnectionEvent;
use crate::guard::HoldCore;
use crate::metrics::{AcquireMetrics, LockLabels};
use crate::name::LockName;

/// How long an acquisition may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Until granted.
    Forever,
    /// One attempt.
    No,
    /// At most this long; `Duration::ZERO` means one attempt.
    For(Duration),
}

/// Acquires `kind` on `name`, honouring `wait`, inside an `acquire` tracing span.
///
/// On a deadline the backend's acquire future is dropped; backends are cancel-safe, so nothing
/// is left behind.
pub(crate) async fn acquire(
    backend: &SharedBackend,
    name: &LockName,
    kind: LockKind,
    wait: Wait,
) -> Result<Option<HoldCore>> {
    acquire_with_value(backend, name, kind, Vec::new(), wait).await
}

/// [`acquire`] for a request that carries a value (a campaign, [`LockKind::Leader`]).
pub(crate) async fn acquire_with_value(
    backend: &SharedBackend,
    name: &LockName,
    kind: LockKind,
    value: Vec<u8>,
    wait: Wait,
) -> Result<Option<HoldCore>> {
    let caps = backend.capabilities();
    let span = tracing::info_span!(
        "acquire",
        backend = caps.backend,
        name = %name,
        kind = %kind,
        wait = ?wait,
        token = tracing::field::Empty,
    );
    let waiting = !matches!(wait, Wait::No | Wait::For(Duration::ZERO));
    let metrics = AcquireMetrics::start(LockLabels::new(caps.backend, kind, name), waiting);
    let result = async move {
        let request = |wait| AcquireRequest {
            name: name.clone(),
            kind,
            wait,
            value: value.clone(),
        };
        crate::checked::validate_on(&request(false), &caps)?;
        let started = Instant::now();
        let what = || format!("{kind} acquire of {name}");
        let outcome = match wait {
            Wait::Forever => backend.acquire(request(true)).await?,
            Wait::No | Wait::For(Duration::ZERO) => {
                within(
                    caps.request_timeout,
                    what,
                    || backend.address(),
                    backend.acquire(request(false)),
                )
                .await?
            }
            Wait::For(limit) => {
                match tokio::time::timeout(limit, backend.acquire(request(true))).await {
                    Ok(result) => result?,
                    Err(_) => {
                        gave_up(backend, what, started)?;
                        None
                    }
                }
            }
        };
        match outcome {
            Some(hold) => {
                tracing::Span::current().record("token", hold.token);
                tracing::debug!("acquired");
                Ok(Some(HoldCore::new(name.clone(), kind, caps.backend, hold)))
            }
            None => {
                tracing::debug!("busy");
                Ok(None)
            }
        }
    }
    .instrument(span)
    .await;
    metrics.finish(crate::metrics::outcome_of(&result));
    result
}

/// Runs one store request for at most `limit`: past it, [`Error::Timeout`] naming `what` at
/// `addr` with the real time spent, never a silent answer. One attempt of every kind (a
/// `try_lock`, a leader read, a proclaim) is bounded through here.
pub(crate) async fn within<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    addr: impl FnOnce() -> String,
    request: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result,
        Err(_) => Err(Error::timeout(what(), addr(), started.elapsed())),
    }
}

/// A bounded wait ran out: "busy" (`Ok`) if the backend's connection is healthy, otherwise
/// [`Error::Timeout`] with the real elapsed time, since nobody could tell whether the lock was
/// free. Every bounded wait of lockcore (mutex, re-entrant, read-write, semaphore, multi-lock)
/// ends through here.
pub(crate) fn gave_up(
    backend: &SharedBackend,
    what: impl FnOnce() -> String,
    started: Instant,
) -> Result<()> {
    let connection = backend.connection_events().current();
    if matches!(
        connection,
        ConnectionEvent::Suspended | ConnectionEvent::Lost
    ) {
        tracing::debug!(?connection, "gave up waiting, store unreachable");
        return Err(Error::timeout(what(), backend.address(), started.elapsed()));
    }
    tracing::debug!("gave up waiting");
    Ok(())
}

/// Waits until granted; a backend that returns "busy" for a waiting request is reported as
/// an error rather than trusted.
pub(crate) async fn acquire_granted(
    backend: &SharedBackend,
    name: &LockName,
    kind: LockKind,
) -> Result<HoldCore> {
    acquire_granted_with_value(backend, name, kind, Vec::new()).await
}

/// [`acquire_granted`] for a request that carries a value (a campaign).
pub(crate) async fn acquire_granted_with_value(
    backend: &SharedBackend,
    name: &LockName,
    kind: LockKind,
    value: Vec<u8>,
) -> Result<HoldCore> {
    acquire_with_value(backend, name, kind, value, Wait::Forever)
        .await?
        .ok_or_else(|| {
            crate::Error::backend(
                backend.capabilities().backend,
                format!("the backend returned no hold for a waiting {kind} acquire of {name}"),
            )
        })
}
