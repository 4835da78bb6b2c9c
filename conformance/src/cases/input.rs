//! Promise 9: bad input gives a typed error that says what to fix, never a panic or a hang.

use std::sync::Arc;
use std::time::Duration;

use tumbler_core::Error;

use crate::util::{unique_name, CaseResult, Context, Verdict};
use crate::{ensure, hook, Harness};

/// Every handle constructor rejects each kind of bad name with `InvalidName`.
pub async fn bad_names_rejected(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let long = "x".repeat(tumbler_core::MAX_NAME_LEN + 1);
    for bad in [
        "",
        "/lead",
        "trail/",
        "a//b",
        "a/../b",
        "sp ace",
        "tab\t",
        "ünï",
        long.as_str(),
    ] {
        let results = [
            a.locks.mutex(bad).err(),
            a.locks.reentrant_mutex(bad).err(),
            a.locks
                .rwlock(bad)
                .err()
                .filter(|e| !matches!(e, Error::Unsupported { .. })),
            a.locks
                .semaphore(bad, 2)
                .err()
                .filter(|e| !matches!(e, Error::Unsupported { .. })),
        ];
        for result in results.into_iter().flatten() {
            ensure!(
                matches!(result, Error::InvalidName { .. }),
                "{bad:?} gave {result}"
            );
        }
        ensure!(
            a.locks.mutex(bad).is_err(),
            "{bad:?} was accepted as a lock name"
        );
        let state = a.locks.state(bad).await;
        ensure!(
            matches!(state, Err(Error::InvalidName { .. })),
            "state({bad:?}) gave {state:?}"
        );
    }
    Ok(Verdict::Passed)
}

/// Zero or excessive permits are `InvalidArgument`.
pub async fn bad_permits_rejected(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    if !a.locks.capabilities().semaphore {
        return Ok(Verdict::Skipped("no semaphores".into()));
    }
    let name = unique_name("permits");
    ensure!(
        matches!(
            a.locks.semaphore(&name, 0),
            Err(Error::InvalidArgument { .. })
        ),
        "limit 0 accepted"
    );
    let sem = a.locks.semaphore(&name, 2).ctx("semaphore")?;
    ensure!(
        matches!(sem.try_acquire(0).await, Err(Error::InvalidArgument { .. })),
        "0 permits accepted"
    );
    ensure!(
        matches!(sem.try_acquire(3).await, Err(Error::InvalidArgument { .. })),
        "3 of 2 permits accepted"
    );
    let ok = sem
        .try_acquire(2)
        .await
        .ctx("valid acquire after rejects")?;
    ensure!(
        ok.is_some(),
        "a valid acquire failed after the rejected ones"
    );
    Ok(Verdict::Passed)
}

/// A zero or absurd TTL / session timeout is `InvalidArgument` at connect.
pub async fn bad_ttl_rejected(h: Arc<dyn Harness>) -> CaseResult {
    for ttl in [Duration::ZERO, Duration::from_secs(10 * 365 * 24 * 3600)] {
        let result = hook!(h.connect_with_ttl(ttl).await);
        match result {
            Err(Error::InvalidArgument { .. }) => {}
            Err(other) => {
                return Err(format!(
                    "ttl {ttl:?} gave {other}, expected InvalidArgument"
                ))
            }
            Ok(_) => return Err(format!("ttl {ttl:?} was accepted")),
        }
    }
    Ok(Verdict::Passed)
}

/// An address where nothing listens gives a connection or timeout error within 30 s, at connect
/// or at the first operation.
pub async fn unreachable_store_is_typed_error(h: Arc<dyn Harness>) -> CaseResult {
    let limit = Duration::from_secs(30);
    let connected = tokio::time::timeout(limit, h.connect_unreachable())
        .await
        .map_err(|_| format!("connecting to an unreachable store hung for {limit:?}"))?;
    let connected = hook!(connected);
    let typed = |e: &Error| matches!(e, Error::Connection { .. } | Error::Timeout { .. });
    match connected {
        Err(e) => ensure!(typed(&e), "unreachable store gave {e}"),
        Ok(locks) => {
            let mutex = locks.mutex(unique_name("unreachable")).ctx("mutex")?;
            let tried = tokio::time::timeout(limit, mutex.try_lock())
                .await
                .map_err(|_| format!("try_lock on an unreachable store hung for {limit:?}"))?;
            match tried {
                Err(e) => ensure!(typed(&e), "try_lock on an unreachable store gave {e}"),
                Ok(_) => return Err("try_lock on an unreachable store succeeded".into()),
            }
        }
    }
    Ok(Verdict::Passed)
}
