//! Waiting for a freshly started server to be truly ready, with a deadline.
//!
//! This polls a real condition (the server answers its readiness probe) every few tens of
//! milliseconds; it is not a fixed sleep. It gives up early if the process exits.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::ServerProcess;

/// Pause between two probes.
const POLL: Duration = Duration::from_millis(25);
/// Longest time one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The start deadline for a server kind: `default`, or `TESTKIT_START_TIMEOUT_SECS` if set.
pub(crate) fn start_timeout(default: Duration) -> Duration {
    std::env::var("TESTKIT_START_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// Runs `probe` until it returns `Ok`, the process exits, or `timeout` passes.
///
/// `probe` returns `Err(reason)` while the server is not ready; the last reason is added to the
/// timeout error together with the tail of the server log.
pub(crate) async fn wait_ready<F, Fut>(
    proc: &ServerProcess,
    timeout: Duration,
    mut probe: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let last = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(reason)) => reason,
            Err(_) => format!("probe took longer than {PROBE_TIMEOUT:?}"),
        };
        if let Some(status) = proc.exit_status() {
            return Err(Error::Exited {
                what: proc.name().to_string(),
                status,
                log_tail: proc.log_tail(),
            });
        }
        if start.elapsed() > timeout {
            return Err(Error::StartTimeout {
                what: proc.name().to_string(),
                after: start.elapsed(),
                log_tail: format!("{}\n(last probe: {last})", proc.log_tail()),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Retries `attempt` on fresh ports while it fails because a port was taken (up to 3 tries).
pub(crate) async fn retry_on_port_clash<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if tries < 3 && e.is_address_in_use() => {
                tracing::warn!("testkit: port clash, retrying on fresh ports: {e}");
            }
            other => return other,
        }
    }
}

/// Polls `check` every 50 ms until it says `true` or `limit` passes; then a
/// [`Error::StartTimeout`] naming `what` (a deployment and what it was waiting for) with the
/// last check's answer. For deployments of several servers (a Redis Cluster forming, a
/// Sentinel failover), where no single server's log tells the story.
pub(crate) async fn settle<F, Fut>(
    what: impl FnOnce() -> String,
    limit: Duration,
    mut check: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < limit {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "not yet".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::StartTimeout {
        what: what(),
        after: limit,
        log_tail: format!("last check: {last}"),
    })
}
