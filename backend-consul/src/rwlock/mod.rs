//! Read-write locks: tumbler's own design on Consul KV (Consul's Go API has none).
//!
//! # Layout
//!
//! - `NAME/.rw/<lease>`: one contender key per acquisition, acquired with the backend's
//!   session. An entry of the record counts only while its contender key is held by a session,
//!   so a crashed holder (whose session Consul invalidates) stops counting by itself.
//! - `NAME/.rwlock`: the record `{"Writer":lease|null,"Readers":[…],"WaitingWriters":[…]}`,
//!   changed only with `?cas=<ModifyIndex>`.
//!
//! # Why it excludes
//!
//! Every grant is a CAS on the one record, computed from a listing that contains the record
//! and every contender key at a single index. A writer is written into `Writer` only when the
//! listing shows no live writer and no live reader; a reader is added to `Readers` only when it
//! shows no live writer. Two grants computed from the same listing cannot both succeed (the
//! second CAS fails and is recomputed), so no live writer ever coexists with another holder.
//!
//! # Writers are not starved
//!
//! A waiting writer adds itself to `WaitingWriters` (arrival order). While any live writer
//! waits, no new reader is admitted; the first waiting writer gets the lock when the readers
//! are gone.
//!
//! # Downgrade
//!
//! One CAS moves the lease from `Writer` to `Readers`: there is no moment in which the lease
//! holds neither, so a queued writer cannot slip in.
//!
//! # Tokens
//!
//! The record's ModifyIndex as read right after the lease was admitted (a downgraded read keeps
//! the write's token).

mod hold;
mod view;

use std::sync::Arc;

use tokio::time::Instant;
use tumbler_core::{Error, Hold, LockName, LostReason, Result};

use crate::api::{Acquire, Block};
use crate::backend::Inner;
use crate::kinds::{self, Kind};
use crate::layout::{Folder, RWLOCK_FLAGS};
use crate::queue::DEAD_WAITER_GRACE;
use crate::record::encode;
use crate::session::Session;
use crate::watch::{backoff, sleep_next};
use hold::{grant, leave};
use tumbler_core::cleanup::RestartableCleanup as Cleanup;
pub(crate) use view::RwView;

/// How many lost CAS races a one-attempt acquire tolerates before it reports "busy".
const TRY_CAS_ROUNDS: usize = 5;

/// Acquires the read (`write == false`) or write side of `name`.
pub(crate) async fn acquire(
    inner: &Arc<Inner>,
    name: &LockName,
    write: bool,
    wait: bool,
) -> Result<Option<Hold>> {
    let folder = inner.layout.folder(name)?;
    let lease = uuid::Uuid::new_v4().simple().to_string();
    let contender = folder.rw_contender_key(&lease);
    for _ in 0..3 {
        let session = inner.sessions.main().await?;
        let (api, left_folder, left_lease, held_by) = (
            inner.api.clone(),
            folder.clone(),
            lease.clone(),
            session.clone(),
        );
        let cleanup = Cleanup::new(
            "leave a cancelled Consul read-write lock acquisition",
            move || {
                leave(
                    api.clone(),
                    left_folder.clone(),
                    left_lease.clone(),
                    held_by.clone(),
                )
            },
        );
        match inner
            .api
            .kv_acquire(&contender, session.id(), RWLOCK_FLAGS, Vec::new())
            .await?
        {
            Acquire::Acquired => {}
            Acquire::InvalidSession => {
                cleanup.disarm();
                inner.sessions.forget(session.id()).await;
                continue;
            }
            Acquire::Busy => {
                return Err(Error::backend(
                    crate::api::BACKEND,
                    format!("the new contender key {contender} is busy"),
                ))
            }
        }
        let outcome = tokio::select! {
            outcome = admit(inner, name, &folder, &lease, write, wait) => outcome?,
            reason = session.lost() => {
                inner.sessions.check_open()?;
                // Waiting with the backend's session, which was lost: an agent that stopped
                // answering is a connection error, an expired session an expiry.
                return Err(match reason {
                    LostReason::RenewalFailed => Error::connection(
                        crate::api::BACKEND,
                        inner.api.address(),
                        "the agent did not answer before the session's validity ran out",
                    ),
                    _ => Error::SessionExpired { name: name.clone() },
                });
            }
        };
        return match outcome {
            Some(admitted) => {
                cleanup.disarm();
                Ok(Some(grant(
                    inner,
                    name,
                    RwLease {
                        folder,
                        lease,
                        session,
                    },
                    write,
                    admitted,
                )))
            }
            None => {
                // Busy: we never entered the record, so only the contender key goes.
                inner.api.kv_delete(&contender).await?;
                cleanup.disarm();
                Ok(None)
            }
        };
    }
    Err(Error::backend(
        crate::api::BACKEND,
        format!("could not create {contender}: the agent refused three fresh sessions"),
    ))
}

/// Who an acquisition is: its folder, lease ID and session.
#[derive(Clone)]
struct RwLease {
    folder: Folder,
    lease: String,
    session: Arc<Session>,
}

/// What the read that confirmed an admission showed.
struct Admitted {
    token: u64,
    index: u64,
    revoke: Option<String>,
}

/// Reads and CASes until the lease is admitted, or (one attempt) it is clear it cannot be.
async fn admit(
    inner: &Inner,
    name: &LockName,
    folder: &Folder,
    lease: &str,
    write: bool,
    wait: bool,
) -> Result<Option<Admitted>> {
    let mut block = None;
    let mut cas_rounds = 0;
    let mut backoff = backoff();
    // A waiting writer that has not taken the free lock, and since when.
    let mut idle: Option<(String, Instant)> = None;
    loop {
        // The whole folder, to see the other kinds' keys too.
        let listed = match inner.api.kv_list(folder.base(), block).await {
            Ok(listed) => listed,
            Err(e) if wait && e.is_transient() => {
                sleep_next(&mut backoff).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        backoff.reset();
        kinds::check(Kind::RwLock, name, folder, &listed.value)?;
        let view = RwView::read(folder, name, &listed.value)?;
        if view.holds(lease, write) {
            return Ok(Some(Admitted {
                token: view.record_index,
                index: listed.index,
                revoke: view.record.revoke.clone(),
            }));
        }
        if !view.alive(lease) {
            inner.sessions.check_open()?;
            return Err(Error::SessionExpired { name: name.clone() });
        }
        let Some(record) = view.decide(lease, write, wait) else {
            if !wait {
                return Ok(None);
            }
            // The lock is free but reserved for a waiting writer ahead that does not take it:
            // it was killed (its contender key lives until the agent invalidates its session).
            // After the grace, take it off the waiting list; a live one would put itself back.
            let wait_for = match view.idle_first_writer(lease) {
                None => {
                    idle = None;
                    inner.api.query_wait()
                }
                Some(first) => {
                    let since = match &idle {
                        Some((w, since)) if *w == first => *since,
                        _ => idle.insert((first.to_string(), Instant::now())).1,
                    };
                    let left =
                        (since + DEAD_WAITER_GRACE).saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        let mut record = view.record.clone();
                        record.waiting.retain(|w| w != first);
                        tracing::debug!(writer = first, "waiting writer did not take the free lock; dropped from the waiting list");
                        inner
                            .api
                            .kv_cas(
                                &folder.rw_record_key(),
                                RWLOCK_FLAGS,
                                encode(&record),
                                view.record_index,
                            )
                            .await?;
                        idle = None;
                        block = None;
                        continue;
                    }
                    left
                }
            };
            block = Some(Block {
                index: listed.index,
                wait: wait_for,
            });
            continue;
        };
        block = None;
        let done = inner
            .api
            .kv_cas(
                &folder.rw_record_key(),
                RWLOCK_FLAGS,
                encode(&record),
                view.record_index,
            )
            .await?;
        if !done {
            cas_rounds += 1;
            if !wait && cas_rounds >= TRY_CAS_ROUNDS {
                return Ok(None);
            }
        }
    }
}
