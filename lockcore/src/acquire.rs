//! The deadline layer: every user-facing acquire goes through [`acquire`], once for all stores.

use std::time::Duration;

use tracing::Instrument;

use crate::backend::{AcquireRequest, LockKind, SharedBackend};
use crate::error::Result;
use crate::guard::HoldCore;
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
    let caps = backend.capabilities();
    let span = tracing::info_span!(
        "acquire",
        backend = caps.backend,
        name = %name,
        kind = %kind,
        wait = ?wait,
        token = tracing::field::Empty,
    );
    async move {
        let request = |wait| AcquireRequest {
            name: name.clone(),
            kind,
            wait,
        };
        let outcome = match wait {
            Wait::Forever => backend.acquire(request(true)).await?,
            Wait::No | Wait::For(Duration::ZERO) => backend.acquire(request(false)).await?,
            Wait::For(limit) => {
                match tokio::time::timeout(limit, backend.acquire(request(true))).await {
                    Ok(result) => result?,
                    Err(_) => {
                        tracing::debug!(?limit, "gave up waiting");
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
    .await
}

/// Waits until granted; a backend that returns "busy" for a waiting request is reported as
/// an error rather than trusted.
pub(crate) async fn acquire_granted(
    backend: &SharedBackend,
    name: &LockName,
    kind: LockKind,
) -> Result<HoldCore> {
    acquire(backend, name, kind, Wait::Forever)
        .await?
        .ok_or_else(|| {
            crate::Error::backend(
                backend.capabilities().backend,
                format!("the backend returned no hold for a waiting {kind} acquire of {name}"),
            )
        })
}
