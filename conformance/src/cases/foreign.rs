//! Issue 12 A.5: foreign or damaged data is a typed error. Data tumbler did not write, where a
//! lock keeps its records, gives `Conflict` naming the key: never "busy" forever, never a
//! fencing token lower than one already issued.

use std::sync::Arc;

use tumbler_core::Error;

use crate::harness::Foreign;
use crate::util::answered;
use crate::util::{unique_name, CaseResult, Context, Verdict};
use crate::{Harness, HookError};

/// For each kind of foreign data the harness can write: a first hold issues a token, the data
/// is written, and then two `try_lock`s must each be a `Conflict` naming the lock.
pub async fn foreign_data_is_conflict(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let mut checked = Vec::new();
    let mut unsupported = Vec::new();
    for what in Foreign::ALL {
        let name = unique_name("foreign");
        let mutex = a.locks.mutex(&name).ctx("mutex")?;
        let first = answered(|| mutex.try_lock())
            .await
            .ctx("first try_lock")?
            .ok_or("a fresh name was busy")?;
        let issued = first.fencing_token();
        first.release().await.ctx("first release")?;
        match h.write_foreign(&name, what).await {
            Ok(()) => {}
            Err(HookError::Unsupported(why)) => {
                unsupported.push(format!("{what:?}: {why}"));
                continue;
            }
            Err(HookError::Failed(why)) => return Err(format!("writing {what:?}: {why}")),
        }
        for attempt in ["first", "second"] {
            // A transient error (a leader election) is no answer about the data: retried.
            match answered(|| mutex.try_lock()).await {
                Err(e @ Error::Conflict { .. }) => {
                    let message = e.to_string();
                    if !message.contains(name.as_str()) {
                        return Err(format!(
                            "{what:?}: the conflict does not name the lock {name}: {message}"
                        ));
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "{what:?}: the {attempt} try_lock failed with {e}, not Conflict"
                    ))
                }
                Ok(None) => {
                    return Err(format!(
                        "{what:?}: the {attempt} try_lock said busy on a free lock whose \
                         records hold foreign data, not Conflict"
                    ))
                }
                Ok(Some(guard)) => {
                    let token = guard.fencing_token();
                    let _ = guard.release().await;
                    return Err(if token <= issued && issued > 0 {
                        format!(
                            "{what:?}: the {attempt} try_lock was granted token {token}, not \
                             above the {issued} issued before: a fencing violation"
                        )
                    } else {
                        format!(
                            "{what:?}: the {attempt} try_lock was granted (token {token}) over \
                             foreign data, not refused with Conflict"
                        )
                    });
                }
            }
        }
        checked.push(what);
    }
    if checked.is_empty() {
        return Ok(Verdict::Skipped(unsupported.join("; ")));
    }
    if !unsupported.is_empty() {
        tracing::info!(?checked, ?unsupported, "foreign data checked in part");
    }
    Ok(Verdict::Passed)
}
