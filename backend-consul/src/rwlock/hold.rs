//! The hold of a read or write side: watching, release, downgrade, and the cleanup of a
//! cancelled acquisition.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;
use tumbler_core::keeper::HoldTicket;
use tumbler_core::{hold_signals, Error, HeldLock, Hold, LockName, LostReason, Result};

use super::view::RwView;
use super::{Admitted, RwLease};
use crate::api::{Api, Block, KvPair};
use crate::backend::Inner;
use crate::layout::{Folder, RWLOCK_FLAGS};
use crate::record::{encode, RwRecord};
use crate::session::Session;
use crate::watch::{
    backoff, monitor, next_index, register, sleep_next, watch_hold, Check, Target, Watcher,
};

/// Builds the hold and starts watching it.
pub(super) fn grant(
    inner: &Arc<Inner>,
    name: &LockName,
    who: RwLease,
    write: bool,
    admitted: Admitted,
) -> Hold {
    let (notifier, signals) = hold_signals();
    let ticket = register(&who.session, notifier);
    let watcher = start_watch(
        inner,
        name,
        &who,
        write,
        admitted.index,
        admitted.revoke,
        &ticket,
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
            ticket,
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
    ticket: &Arc<HoldTicket>,
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
        ticket.clone(),
        check,
    );
    watch_hold(name, ticket.clone(), who.session.clone(), store_side, || {})
}

/// A held read or write side.
struct RwHold {
    api: Arc<Api>,
    inner: Arc<Inner>,
    name: LockName,
    who: RwLease,
    write: bool,
    token: u64,
    ticket: Arc<HoldTicket>,
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
        // Stop watching first: the watcher would otherwise see our own release change the key
        // and report the hold lost. Nobody listens for a loss once release has been called.
        self.watcher = None;
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
            self.ticket.notifier().lost(LostReason::Deleted);
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
            self.ticket.notifier().lost(LostReason::Deleted);
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
        let ticket = register(&self.who.session, notifier);
        let watcher = start_watch(
            &self.inner,
            &self.name,
            &self.who,
            false,
            index,
            revoke,
            &ticket,
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
                ticket,
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
pub(super) async fn leave(api: Arc<Api>, folder: Folder, lease: String, session: Arc<Session>) {
    let record_key = folder.rw_record_key();
    let contender = folder.rw_contender_key(&lease);
    let mut backoff = backoff();
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
            Err(_) => sleep_next(&mut backoff).await,
        }
    }
    while session.is_live() {
        match api.kv_delete(&contender).await {
            Ok(()) => break,
            Err(_) => sleep_next(&mut backoff).await,
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
            Err(_) => sleep_next(&mut backoff).await,
        }
    }
}
