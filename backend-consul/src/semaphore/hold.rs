//! A held lease: watching it, and leaving the holders record on release.

use std::sync::Arc;

use async_trait::async_trait;
use tumbler_core::keeper::HoldTicket;
use tumbler_core::{hold_signals, Error, HeldLock, Hold, LockName, LostReason, Result};

use super::view::View;
use super::Admitted;
use crate::api::{Api, KvPair};
use crate::backend::Inner;
use crate::layout::{Folder, SEMAPHORE_FLAGS};
use crate::record::encode;
use crate::session::Session;
use crate::watch::{monitor, register, watch_hold, Check, Target, Watcher};

/// Builds the lease's hold and starts watching it.
pub(super) fn grant(
    inner: &Arc<Inner>,
    name: &LockName,
    folder: Folder,
    lease: Arc<Session>,
    admitted: Admitted,
) -> Hold {
    let (notifier, signals) = hold_signals();
    let ticket = register(&lease, notifier);
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
        ticket.clone(),
        check,
    );
    let watcher = watch_hold(name, ticket.clone(), lease.clone(), store_side, || {});
    Hold {
        token: admitted.token,
        held: Box::new(SemaphoreHold {
            api: inner.api.clone(),
            name: name.clone(),
            base: folder.base().to_string(),
            folder,
            lease,
            ticket,
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
    ticket: Arc<HoldTicket>,
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
        // Stop watching first: the watcher would otherwise see our own release change the key
        // and report the hold lost. Nobody listens for a loss once release has been called.
        self.watcher = None;
        if !self.left_record {
            self.leave_record().await?;
            self.left_record = true;
        }
        // Destroying the lease session deletes its contender key (Behavior=delete).
        self.lease.destroy().await?;
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
}
