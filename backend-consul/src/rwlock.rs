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

use std::sync::Arc;

use async_trait::async_trait;
use lockcore::cleanup::CancelCleanup;
use lockcore::{hold_signals, Error, HeldLock, Hold, HoldNotifier, LockName, LostReason, Result};
use tokio::time::Instant;

use crate::api::{Acquire, Api, Block, KvPair};
use crate::backend::Inner;
use crate::layout::{Entry, Folder, RWLOCK_FLAGS};
use crate::record::{encode, RwRecord};
use crate::session::Session;
use crate::watch::{monitor, next_index, watch_hold, Backoff, Check, Target, Watcher};

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
        let cleanup = CancelCleanup::new(
            "leave a cancelled Consul read-write lock acquisition",
            leave(
                inner.api.clone(),
                folder.clone(),
                lease.clone(),
                session.clone(),
            ),
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
            _ = session.lost() => return Err(Error::SessionExpired { name: name.clone() }),
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
    let mut backoff = Backoff::new();
    loop {
        let listed = match inner.api.kv_list(&folder.rw_prefix(), block).await {
            Ok(listed) => listed,
            Err(e) if wait && e.is_transient() => {
                backoff.wait().await;
                continue;
            }
            Err(e) => return Err(e),
        };
        backoff.reset();
        let view = RwView::read(folder, name, &listed.value)?;
        if view.holds(lease, write) {
            return Ok(Some(Admitted {
                token: view.record_index,
                index: listed.index,
                revoke: view.record.revoke.clone(),
            }));
        }
        if !view.alive(lease) {
            return Err(Error::SessionExpired { name: name.clone() });
        }
        let Some(record) = view.decide(lease, write, wait) else {
            if !wait {
                return Ok(None);
            }
            block = Some(Block {
                index: listed.index,
                wait: inner.api.query_wait(),
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

/// A read-write lock as one listing of `NAME/.rw` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RwView {
    /// The record (empty if there is none yet).
    pub(crate) record: RwRecord,
    /// Its ModifyIndex (0: none yet).
    pub(crate) record_index: u64,
    /// Leases whose contender key is held by a session.
    pub(crate) live: Vec<String>,
}

impl RwView {
    /// Reads the listing of `folder.rw_prefix()`.
    pub(crate) fn read(folder: &Folder, name: &LockName, pairs: &[KvPair]) -> Result<RwView> {
        let mut view = RwView {
            record: RwRecord::default(),
            record_index: 0,
            live: Vec::new(),
        };
        for pair in pairs {
            match folder.classify(&pair.key) {
                Entry::RwRecord => {
                    if pair.flags != RWLOCK_FLAGS {
                        return Err(Error::Conflict {
                            name: name.clone(),
                            problem: format!(
                                "the Consul key {} has flags {:#x}, not tumbler's read-write \
                                 lock flags; use another name",
                                pair.key, pair.flags
                            ),
                        });
                    }
                    if !pair.value.is_empty() {
                        view.record = serde_json::from_slice(&pair.value).map_err(|e| {
                            Error::backend(
                                crate::api::BACKEND,
                                format!("the read-write record {} does not decode: {e}", pair.key),
                            )
                        })?;
                    }
                    view.record_index = pair.modify_index;
                }
                Entry::RwContender(lease) if pair.is_held() => view.live.push(lease.to_string()),
                _ => {}
            }
        }
        Ok(view)
    }

    /// Whether `lease`'s contender key is held.
    pub(crate) fn alive(&self, lease: &str) -> bool {
        self.live.iter().any(|l| l == lease)
    }

    /// The live writer.
    pub(crate) fn writer(&self) -> Option<&str> {
        self.record.writer.as_deref().filter(|w| self.alive(w))
    }

    /// The live readers.
    pub(crate) fn readers(&self) -> Vec<&str> {
        self.record
            .readers
            .iter()
            .map(String::as_str)
            .filter(|r| self.alive(r))
            .collect()
    }

    /// The live waiting writers, in arrival order.
    fn waiting(&self) -> Vec<&str> {
        self.record
            .waiting
            .iter()
            .map(String::as_str)
            .filter(|w| self.alive(w))
            .collect()
    }

    /// Live contenders that hold nothing (waiting readers and writers).
    pub(crate) fn waiters(&self) -> usize {
        let readers = self.readers();
        let writer = self.writer();
        self.live
            .iter()
            .filter(|l| writer != Some(l.as_str()) && !readers.contains(&l.as_str()))
            .count()
    }

    /// Whether `lease` holds the side it asked for (and is alive).
    pub(crate) fn holds(&self, lease: &str, write: bool) -> bool {
        if write {
            self.writer() == Some(lease)
        } else {
            self.readers().contains(&lease)
        }
    }

    /// The record to CAS for `lease`'s next step (grant, or join the waiting writers), or
    /// `None` to wait for a change.
    fn decide(&self, lease: &str, write: bool, wait: bool) -> Option<RwRecord> {
        let writer = self.writer().map(str::to_string);
        let readers: Vec<String> = self.readers().into_iter().map(str::to_string).collect();
        let waiting: Vec<String> = self.waiting().into_iter().map(str::to_string).collect();
        let revoke = self.record.revoke.clone();
        if write {
            let first = waiting.first().is_none_or(|w| w == lease);
            if writer.is_none() && readers.is_empty() && first {
                return Some(RwRecord {
                    writer: Some(lease.to_string()),
                    readers,
                    waiting: waiting.into_iter().filter(|w| w != lease).collect(),
                    revoke,
                });
            }
            if wait && !waiting.iter().any(|w| w == lease) {
                let mut waiting = waiting;
                waiting.push(lease.to_string());
                return Some(RwRecord {
                    writer,
                    readers,
                    waiting,
                    revoke,
                });
            }
            return None;
        }
        if writer.is_none() && waiting.is_empty() {
            let mut readers = readers;
            readers.push(lease.to_string());
            return Some(RwRecord {
                writer,
                readers,
                waiting,
                revoke,
            });
        }
        None
    }
}

/// Builds the hold and starts watching it.
fn grant(
    inner: &Arc<Inner>,
    name: &LockName,
    who: RwLease,
    write: bool,
    admitted: Admitted,
) -> Hold {
    let (notifier, signals) = hold_signals();
    let notifier = Arc::new(notifier);
    let watcher = start_watch(
        inner,
        name,
        &who,
        write,
        admitted.index,
        admitted.revoke,
        &notifier,
    );
    Hold {
        token: admitted.token,
        held: Box::new(RwHold {
            api: inner.api.clone(),
            inner: inner.clone(),
            name: name.clone(),
            who,
            write,
            token: admitted.token,
            notifier,
            watcher: Some(watcher),
            left_record: false,
            not_owner: false,
            released: false,
        }),
        signals,
    }
}

fn start_watch(
    inner: &Arc<Inner>,
    name: &LockName,
    who: &RwLease,
    write: bool,
    index: u64,
    revoke: Option<String>,
    notifier: &Arc<HoldNotifier>,
) -> Watcher {
    let folder = who.folder.clone();
    let lease = who.lease.clone();
    let watch_name = name.clone();
    let mut seen = revoke;
    let check = move |pairs: &[KvPair]| match RwView::read(&folder, &watch_name, pairs) {
        Ok(view) if view.holds(&lease, write) => {
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
        Target::Prefix(who.folder.rw_prefix()),
        index,
        notifier.clone(),
        check,
    );
    watch_hold(
        name,
        notifier.clone(),
        who.session.clone(),
        store_side,
        || {},
    )
}

/// A held read or write side.
struct RwHold {
    api: Arc<Api>,
    inner: Arc<Inner>,
    name: LockName,
    who: RwLease,
    write: bool,
    token: u64,
    notifier: Arc<HoldNotifier>,
    watcher: Option<Watcher>,
    left_record: bool,
    not_owner: bool,
    released: bool,
}

impl RwHold {
    /// CAS-updates the record from a listing of the record and the contender keys: `change`
    /// sees the listing and edits the record, or returns false to leave it alone.
    async fn update(&self, mut change: impl FnMut(&RwView, &mut RwRecord) -> bool) -> Result<()> {
        loop {
            let listed = self.api.kv_list(&self.who.folder.rw_prefix(), None).await?;
            let view = RwView::read(&self.who.folder, &self.name, &listed.value)?;
            let mut record = view.record.clone();
            if !change(&view, &mut record) {
                return Ok(());
            }
            if self
                .api
                .kv_cas(
                    &self.who.folder.rw_record_key(),
                    RWLOCK_FLAGS,
                    encode(&record),
                    view.record_index,
                )
                .await?
            {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl HeldLock for RwHold {
    async fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        if !self.left_record {
            let lease = self.who.lease.clone();
            let write = self.write;
            let mut first = None;
            self.update(|view, record| {
                // Whether we still held, as the store shows it before we leave: our contender
                // key may be dead (the session expired) while the record still lists us.
                first.get_or_insert(view.holds(&lease, write));
                let before = record.clone();
                remove_lease(record, &lease);
                *record != before
            })
            .await?;
            self.not_owner = first == Some(false);
            self.left_record = true;
        }
        self.api
            .kv_delete(&self.who.folder.rw_contender_key(&self.who.lease))
            .await?;
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

    async fn downgrade(&mut self) -> Result<Hold> {
        if !self.write || self.released {
            return Err(Error::invalid(
                "downgrade",
                "only a held write side of a read-write lock can be downgraded",
            ));
        }
        let lease = self.who.lease.clone();
        let mut held = false;
        self.update(|view, record| {
            held = view.holds(&lease, true);
            if !held {
                return false;
            }
            record.writer = None;
            record.readers.push(lease.clone());
            true
        })
        .await?;
        if !held {
            self.notifier.lost(LostReason::Deleted);
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        }
        self.released = true;
        self.watcher = None;
        // Follow the read hold from the record as it is now.
        let listed = self.api.kv_list(&self.who.folder.rw_prefix(), None).await;
        let (index, revoke) = match listed {
            Ok(listed) => {
                let revoke = RwView::read(&self.who.folder, &self.name, &listed.value)
                    .ok()
                    .and_then(|v| v.record.revoke);
                (listed.index, revoke)
            }
            Err(_) => (1, None),
        };
        let (notifier, signals) = hold_signals();
        let notifier = Arc::new(notifier);
        let watcher = start_watch(
            &self.inner,
            &self.name,
            &self.who,
            false,
            index,
            revoke,
            &notifier,
        );
        Ok(Hold {
            token: self.token,
            held: Box::new(RwHold {
                api: self.api.clone(),
                inner: self.inner.clone(),
                name: self.name.clone(),
                who: self.who.clone(),
                write: false,
                token: self.token,
                notifier,
                watcher: Some(watcher),
                left_record: false,
                not_owner: false,
                released: false,
            }),
            signals,
        })
    }
}

/// Removes `lease` from every list of the record.
fn remove_lease(record: &mut RwRecord, lease: &str) {
    if record.writer.as_deref() == Some(lease) {
        record.writer = None;
    }
    record.readers.retain(|r| r != lease);
    record.waiting.retain(|w| w != lease);
}

/// Cleans up a cancelled acquisition: leaves the record, deletes the contender key, and
/// watches the key for one request timeout in case a late acquire recreates it.
async fn leave(api: Arc<Api>, folder: Folder, lease: String, session: Arc<Session>) {
    let record_key = folder.rw_record_key();
    let contender = folder.rw_contender_key(&lease);
    let mut backoff = Backoff::new();
    while session.is_live() {
        let step: Result<bool> = async {
            let read = api.kv_get(&record_key, None).await?;
            let Some(pair) = read.value else {
                return Ok(true);
            };
            let Ok(mut record) = serde_json::from_slice::<RwRecord>(&pair.value) else {
                return Ok(true);
            };
            let before = record.clone();
            remove_lease(&mut record, &lease);
            if record == before {
                return Ok(true);
            }
            api.kv_cas(
                &record_key,
                RWLOCK_FLAGS,
                encode(&record),
                pair.modify_index,
            )
            .await
        }
        .await;
        match step {
            Ok(true) => break,
            Ok(false) => continue,
            Err(_) => backoff.wait().await,
        }
    }
    while session.is_live() {
        match api.kv_delete(&contender).await {
            Ok(()) => break,
            Err(_) => backoff.wait().await,
        }
    }
    let until = Instant::now() + api.request_timeout();
    let mut index = 1;
    while session.is_live() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        let block = Block {
            index,
            wait: until - now,
        };
        match api.kv_get(&contender, Some(block)).await {
            Ok(read) => {
                if read.value.is_some_and(|p| p.held_by(session.id())) {
                    let _ = api.kv_delete(&contender).await;
                }
                index = next_index(index, read.index);
            }
            Err(_) => backoff.wait().await,
        }
    }
}
