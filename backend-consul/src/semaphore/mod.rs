//! Semaphores on api.Semaphore's layout, so Go's `api.Semaphore` and `consul lock -n N` share
//! a semaphore with us.
//!
//! Each lease has its own session (`Behavior=delete`, like api.Semaphore's) and a contender key
//! `NAME/<session>` acquired with it, whose value says how many permits the lease takes
//! (`{"TumblerPermits":n}`). The holders record `NAME/.lock` is api.Semaphore's
//! `{"Limit":n,"Holders":{"<session>":true}}`, changed only with `?cas=`. A holder whose session
//! holds no key under `NAME/` any more is dead and pruned, as api.Semaphore does. A lease is
//! granted when the permits of the live holders plus its own fit the limit and its CAS adding
//! it to the record succeeds, all at once (acquire(n) is all or nothing). Its fencing token is
//! the record's ModifyIndex as read right after it was admitted.
//!
//! Go clients count one permit per holder entry, so a tumbler lease of n > 1 permits counts as
//! 1 for them: mix Go clients only with leases of one permit each.

mod hold;
mod view;

use std::sync::Arc;

use tumbler_core::{Error, Hold, LockName, Result};

use crate::api::{Acquire, Block};
use crate::backend::Inner;
use crate::kinds::{self, Kind};
use crate::layout::{Folder, SEMAPHORE_FLAGS};
use crate::record::{encode, ContenderValue};
use crate::session::Session;
use crate::watch::{backoff, sleep_next};
use hold::grant;
pub(crate) use view::View;

/// How many lost CAS races a one-attempt acquire tolerates before it reports "busy".
const TRY_CAS_ROUNDS: usize = 5;

/// Acquires `count` of `limit` permits of the semaphore `name`.
pub(crate) async fn acquire(
    inner: &Arc<Inner>,
    name: &LockName,
    limit: u32,
    count: u32,
    wait: bool,
) -> Result<Option<Hold>> {
    let folder = inner.layout.folder(name)?;
    loop {
        let lease = inner.sessions.temporary().await?;
        let contender = folder.contender_key(lease.id());
        let value = ContenderValue { permits: count }.encode();
        match inner
            .api
            .kv_acquire(&contender, lease.id(), SEMAPHORE_FLAGS, value)
            .await?
        {
            Acquire::Acquired => {}
            other => {
                return Err(Error::backend(
                    crate::api::BACKEND,
                    format!("could not create the semaphore contender key {contender}: {other:?}"),
                ))
            }
        }
        // From here on, dropping `lease` (a cancelled acquisition) destroys the session: Consul
        // deletes the contender key, and a holder entry without it is dead for everyone.
        let outcome = tokio::select! {
            outcome = admit(inner, name, &folder, &lease, limit, count, wait) => outcome,
            _ = lease.lost() => continue,
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                // Refused (a conflict) or failed: the contender key goes with the session.
                let _ = lease.destroy().await;
                return Err(e);
            }
        };
        return match outcome {
            Some(admitted) => Ok(Some(grant(inner, name, folder, lease, admitted))),
            None => {
                let _ = lease.destroy().await;
                Ok(None)
            }
        };
    }
}

/// Reads and CASes until the lease is admitted (or, for one attempt, until it is clear that
/// it cannot be).
async fn admit(
    inner: &Inner,
    name: &LockName,
    folder: &Folder,
    lease: &Session,
    limit: u32,
    count: u32,
    wait: bool,
) -> Result<Option<Admitted>> {
    let mut block = None;
    let mut cas_rounds = 0;
    let mut backoff = backoff();
    loop {
        let listed = match inner.api.kv_list(folder.base(), block).await {
            Ok(listed) => listed,
            Err(e) if wait && e.is_transient() => {
                sleep_next(&mut backoff).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        backoff.reset();
        kinds::check(Kind::Semaphore, name, folder, &listed.value)?;
        let view = View::read(folder, name, &listed.value, Some(limit))?;
        if view.holds(lease.id()) {
            return Ok(Some(Admitted {
                token: view.lock_index,
                index: listed.index,
                revoke: view.record.revoke,
            }));
        }
        if view.used.saturating_add(count) > limit {
            if !wait {
                return Ok(None);
            }
            block = Some(Block {
                index: listed.index,
                wait: inner.api.query_wait(),
            });
            continue;
        }
        let record = view.with_holder(lease.id());
        let lock_key = folder.lock_key();
        if inner
            .api
            .kv_cas(&lock_key, SEMAPHORE_FLAGS, encode(&record), view.lock_index)
            .await?
        {
            // Admitted; the next read confirms it and gives the token.
            block = None;
            continue;
        }
        cas_rounds += 1;
        if !wait && cas_rounds >= TRY_CAS_ROUNDS {
            return Ok(None);
        }
        block = None;
    }
}

/// What the read that confirmed an admission showed.
struct Admitted {
    token: u64,
    index: u64,
    revoke: Option<String>,
}
