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

use std::sync::Arc;

use async_trait::async_trait;
use lockcore::{hold_signals, Error, HeldLock, Hold, HoldNotifier, LockName, LostReason, Result};

use crate::api::{Acquire, Api, Block, KvPair};
use crate::backend::Inner;
use crate::layout::{Entry, Folder, SEMAPHORE_FLAGS};
use crate::record::{encode, ContenderValue, SemaphoreRecord};
use crate::session::Session;
use crate::watch::{monitor, watch_hold, Backoff, Check, Target, Watcher};

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
            outcome = admit(inner, name, &folder, &lease, limit, count, wait) => outcome?,
            _ = lease.lost() => continue,
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
    let mut backoff = Backoff::new();
    loop {
        let listed = match inner.api.kv_list(folder.base(), block).await {
            Ok(listed) => listed,
            Err(e) if wait && e.is_transient() => {
                backoff.wait().await;
                continue;
            }
            Err(e) => return Err(e),
        };
        backoff.reset();
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

/// A semaphore as one listing of its folder shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    /// The holders record (a fresh one if there is none yet).
    pub(crate) record: SemaphoreRecord,
    /// The record's ModifyIndex (0: no record yet).
    pub(crate) lock_index: u64,
    /// Live holders and their permits.
    pub(crate) holders: Vec<(String, u32)>,
    /// Permits held by live holders.
    pub(crate) used: u32,
    /// Sessions holding their contender key.
    pub(crate) contenders: Vec<String>,
    /// Live contenders that are not holders (waiting).
    pub(crate) waiting: Vec<String>,
}

impl View {
    /// Reads the listing of `folder`. With `limit`, a record with another limit, or a record
    /// key that is not a semaphore's, is a conflict.
    pub(crate) fn read(
        folder: &Folder,
        name: &LockName,
        pairs: &[KvPair],
        limit: Option<u32>,
    ) -> Result<View> {
        let lock_pair = pairs
            .iter()
            .find(|p| folder.classify(&p.key) == Entry::Lock);
        let (record, lock_index) = match lock_pair {
            None => (
                SemaphoreRecord {
                    limit: limit.map_or(0, i64::from),
                    ..SemaphoreRecord::default()
                },
                0,
            ),
            Some(pair) => {
                if pair.flags != SEMAPHORE_FLAGS {
                    return Err(Error::Conflict {
                        name: name.clone(),
                        problem: format!(
                            "the Consul key {} has flags {:#x}, not api.Semaphore's \
                             {SEMAPHORE_FLAGS:#x}: a mutex of the same name uses it; use another name",
                            pair.key, pair.flags
                        ),
                    });
                }
                let record = if pair.value.is_empty() {
                    SemaphoreRecord::default()
                } else {
                    serde_json::from_slice(&pair.value).map_err(|e| {
                        Error::backend(
                            crate::api::BACKEND,
                            format!("the semaphore record {} does not decode: {e}", pair.key),
                        )
                    })?
                };
                (record, pair.modify_index)
            }
        };
        if let Some(limit) = limit {
            if lock_pair.is_some() && record.limit != i64::from(limit) {
                return Err(Error::Conflict {
                    name: name.clone(),
                    problem: format!(
                        "the semaphore's limit is {} on the store, but this handle uses {limit}; \
                         every client must use the same limit",
                        record.limit
                    ),
                });
            }
        }
        // api.Semaphore's rule: a holder is alive while its session holds any key listed.
        let alive = |session: &str| pairs.iter().any(|p| p.held_by(session));
        let contender = |session: &str| {
            let key = folder.contender_key(session);
            pairs.iter().find(|p| p.key == key)
        };
        let holders: Vec<(String, u32)> = record
            .holders
            .keys()
            .filter(|h| alive(h))
            .map(|h| {
                let permits = contender(h).map_or(1, |p| ContenderValue::permits_of(&p.value));
                (h.clone(), permits)
            })
            .collect();
        let used = holders
            .iter()
            .map(|(_, n)| *n)
            .fold(0u32, u32::saturating_add);
        let contenders: Vec<String> = pairs
            .iter()
            .filter_map(|p| match folder.classify(&p.key) {
                Entry::Contender(s) if p.held_by(s) && p.flags == SEMAPHORE_FLAGS => {
                    Some(s.to_string())
                }
                _ => None,
            })
            .collect();
        let waiting = contenders
            .iter()
            .filter(|s| !holders.iter().any(|(h, _)| h.eq_ignore_ascii_case(s)))
            .cloned()
            .collect();
        Ok(View {
            record,
            lock_index,
            holders,
            used,
            contenders,
            waiting,
        })
    }

    /// Whether `session` is an admitted holder that still holds its contender key.
    pub(crate) fn holds(&self, session: &str) -> bool {
        self.holders.iter().any(|(h, _)| h == session)
            && self.contenders.iter().any(|c| c == session)
    }

    /// The record with the dead holders pruned and `session` added.
    fn with_holder(&self, session: &str) -> SemaphoreRecord {
        let mut record = self.record.clone();
        record
            .holders
            .retain(|h, _| self.holders.iter().any(|(live, _)| live == h));
        record.holders.insert(session.to_string(), true);
        record
    }
}

/// Builds the lease's hold and starts watching it.
fn grant(
    inner: &Arc<Inner>,
    name: &LockName,
    folder: Folder,
    lease: Arc<Session>,
    admitted: Admitted,
) -> Hold {
    let (notifier, signals) = hold_signals();
    let notifier = Arc::new(notifier);
    let lid = lease.id().to_string();
    let mut seen = admitted.revoke;
    let watch_folder = folder.clone();
    let watch_name = name.clone();
    let check = move |pairs: &[KvPair]| match View::read(&watch_folder, &watch_name, pairs, None) {
        Ok(view) if view.holds(&lid) => {
            let revoke = view.record.revoke.is_some() && view.record.revoke != seen;
            if revoke {
                seen = view.record.revoke;
            }
            Check::Held { revoke }
        }
        Ok(_) => Check::Lost(LostReason::Deleted),
        Err(e) => Check::Lost(LostReason::Other(e.to_string())),
    };
    let store_side = monitor(
        inner.api.clone(),
        Target::Prefix(folder.base().to_string()),
        admitted.index,
        notifier.clone(),
        check,
    );
    let watcher = watch_hold(name, notifier.clone(), lease.clone(), store_side, || {});
    Hold {
        token: admitted.token,
        held: Box::new(SemaphoreHold {
            api: inner.api.clone(),
            name: name.clone(),
            base: folder.base().to_string(),
            folder,
            lease,
            notifier,
            watcher: Some(watcher),
            left_record: false,
            not_owner: false,
            released: false,
        }),
        signals,
    }
}

/// A held lease.
struct SemaphoreHold {
    api: Arc<Api>,
    name: LockName,
    folder: Folder,
    base: String,
    lease: Arc<Session>,
    notifier: Arc<HoldNotifier>,
    watcher: Option<Watcher>,
    /// Our entry is out of the record (a retried release skips that step).
    left_record: bool,
    /// The record did not list us any more when we came to leave it.
    not_owner: bool,
    released: bool,
}

impl SemaphoreHold {
    /// Removes our entry from the holders record with `?cas=`.
    async fn leave_record(&mut self) -> Result<()> {
        let lid = self.lease.id().to_string();
        let mut first = true;
        loop {
            let listed = self.api.kv_list(&self.base, None).await?;
            let view = View::read(&self.folder, &self.name, &listed.value, None)?;
            if first {
                // Whether we still held a permit, as the store shows it before we leave: our
                // contender key may be gone (the lease's session expired) while the record
                // still lists us.
                self.not_owner = !view.holds(&lid);
                first = false;
            }
            let mut record = view.record.clone();
            if record.holders.remove(&lid).is_none() {
                return Ok(());
            }
            if self
                .api
                .kv_cas(
                    &self.folder.lock_key(),
                    SEMAPHORE_FLAGS,
                    encode(&record),
                    view.lock_index,
                )
                .await?
            {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl HeldLock for SemaphoreHold {
    async fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        if !self.left_record {
            self.leave_record().await?;
            self.left_record = true;
        }
        // Destroying the lease session deletes its contender key (Behavior=delete).
        self.lease.destroy().await?;
        self.released = true;
        self.watcher = None;
        if self.not_owner {
            self.notifier.lost(LostReason::Deleted);
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        }
        Ok(())
    }
}
