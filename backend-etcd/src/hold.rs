//! A granted hold: its monitor (key deleted → lost, revocation marker deleted → revocation
//! requested), its owner-checked release, the write → read downgrade, and a leader's proclaim.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tracing::Instrument;
use tumbler_core::keeper::HoldTicket;
use tumbler_core::{hold_signals, Error, HeldLock, Hold, LockKind, LockName, LostReason, Result};

use crate::instance::{range_at, revision_of, Instance, Reservation};
use crate::key_watch::{KeyWatch, Seen};
use crate::keys::DOWNGRADED;
use crate::lease::Lease;
use crate::watch::Note;

/// Everything known about a hold at the moment it is granted.
pub(crate) struct Granted {
    pub(crate) inner: Arc<Instance>,
    pub(crate) session: Arc<Lease>,
    pub(crate) name: LockName,
    pub(crate) kind: LockKind,
    pub(crate) key: String,
    /// The key's create revision: the fencing token.
    pub(crate) revision: i64,
    /// The revision at which the store showed the hold granted.
    pub(crate) granted_at: i64,
    pub(crate) own: KeyWatch,
    pub(crate) reservation: Option<Reservation>,
}

/// Turns a granted acquisition into a [`Hold`]: registers it with the session and starts its
/// monitor.
pub(crate) fn grant(granted: Granted) -> Hold {
    let Granted {
        inner,
        session,
        name,
        kind,
        key,
        revision,
        granted_at,
        own,
        reservation,
    } = granted;
    let (notifier, signals) = hold_signals();
    let notifier = Arc::new(session.register(notifier));
    let releasing = Arc::new(AtomicBool::new(false));
    let monitor = Monitor::spawn(MonitorState {
        inner: inner.clone(),
        session: session.clone(),
        name: name.clone(),
        key: key.clone(),
        revision,
        since: granted_at,
        own,
        notifier: notifier.clone(),
        releasing: releasing.clone(),
    });
    Hold {
        token: u64::try_from(revision).unwrap_or(0),
        held: Box::new(EtcdHeld {
            inner,
            session,
            name,
            kind,
            key,
            revision,
            live: Some(Live {
                notifier,
                releasing,
                monitor,
                reservation,
            }),
        }),
        signals,
    }
}

/// The backend's handle on one hold.
struct EtcdHeld {
    inner: Arc<Instance>,
    session: Arc<Lease>,
    name: LockName,
    kind: LockKind,
    key: String,
    revision: i64,
    /// `None` once released or downgraded.
    live: Option<Live>,
}

struct Live {
    notifier: Arc<HoldTicket>,
    releasing: Arc<AtomicBool>,
    monitor: Monitor,
    reservation: Option<Reservation>,
}

impl EtcdHeld {
    /// Forgets the hold locally (the key is gone or handed on).
    fn finish(&mut self) {
        if let Some(live) = self.live.take() {
            live.monitor.stop();
        }
    }

    fn owner_checked(&self, then: TxnOp) -> Txn {
        Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                self.revision,
            )])
            .and_then([then])
    }
}

#[async_trait]
impl HeldLock for EtcdHeld {
    async fn release(&mut self) -> Result<()> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        live.releasing.store(true, Ordering::SeqCst);
        let txn = self.owner_checked(TxnOp::delete(self.key.as_str(), None));
        let what = format!("release of {}", self.name);
        let (response, doubtful) = self.inner.txn_reporting_doubt(&what, txn).await?;
        let lost = live.notifier.notifier().is_lost();
        self.finish();
        // After an attempt whose answer was lost, "already gone" most likely means that attempt
        // deleted the key: nobody else deletes the key of a live lease (only an operator).
        if response.succeeded() || (doubtful && !lost && self.session.is_alive()) {
            Ok(())
        } else {
            Err(Error::NotOwner {
                name: self.name.clone(),
            })
        }
    }

    /// Election.Proclaim: puts the new value on our key (with our hold lease) if the key still
    /// has our create revision. The key keeps its create revision, so the term stays.
    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        if self.kind != LockKind::Leader {
            return Err(Error::invalid(
                "proclaim",
                "only a leadership (from Election::campaign) can proclaim a value",
            ));
        }
        let not_owner = || Error::NotOwner {
            name: self.name.clone(),
        };
        let Some(live) = &self.live else {
            return Err(not_owner());
        };
        // A leadership whose lost() fired proclaims nothing, even while its key lingers.
        if live.notifier.notifier().is_lost() || !self.session.is_alive() {
            return Err(not_owner());
        }
        let put = TxnOp::put(
            self.key.as_str(),
            value,
            Some(PutOptions::new().with_lease(self.session.lease())),
        );
        let what = format!("proclaim in election {}", self.name);
        let response = self.inner.txn(&what, self.owner_checked(put)).await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(not_owner())
        }
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        if self.kind != LockKind::Write {
            return Err(Error::invalid(
                "downgrade",
                "only the write side of a read-write lock can be downgraded",
            ));
        }
        // Rewriting the value keeps the key's create revision, so its place in the queue: no
        // writer queued behind it can slip in between the write and the read hold.
        let put = TxnOp::put(
            self.key.as_str(),
            DOWNGRADED,
            Some(PutOptions::new().with_ignore_lease()),
        );
        let txn = self.owner_checked(put);
        let Some(live) = self.live.as_mut() else {
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        };
        if live.notifier.notifier().is_lost() || !self.session.is_alive() {
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        }
        // Take the key watcher back from the write hold's monitor; the read hold keeps it.
        let own = live.monitor.take().await;
        let what = format!("downgrade of {}", self.name);
        let outcome = self.inner.txn(&what, txn).await;
        let own = match own {
            Some(own) => own,
            None => KeyWatch::start(
                &self.inner.watches,
                &self.inner.layout.own_prefix(
                    &self.name,
                    crate::keys::KeyRole::Write,
                    self.session.lease(),
                ),
                &self.inner.layout.revoke_prefix(&self.name),
                &self.key,
            ),
        };
        let response = match outcome {
            Ok(response) if response.succeeded() => response,
            Ok(_) => {
                live.notifier.notifier().lost(LostReason::Deleted);
                live.monitor = Monitor::spawn(MonitorState {
                    inner: self.inner.clone(),
                    session: self.session.clone(),
                    name: self.name.clone(),
                    key: self.key.clone(),
                    revision: self.revision,
                    since: self.revision,
                    own,
                    notifier: live.notifier.clone(),
                    releasing: live.releasing.clone(),
                });
                return Err(Error::NotOwner {
                    name: self.name.clone(),
                });
            }
            Err(error) => {
                // The write hold stays as it was: watch it again.
                live.monitor = Monitor::spawn(MonitorState {
                    inner: self.inner.clone(),
                    session: self.session.clone(),
                    name: self.name.clone(),
                    key: self.key.clone(),
                    revision: self.revision,
                    since: self.revision,
                    own,
                    notifier: live.notifier.clone(),
                    releasing: live.releasing.clone(),
                });
                return Err(error);
            }
        };
        let downgraded_at = revision_of(&response);
        let reservation = live.reservation.take();
        self.finish();
        let (notifier, signals) = hold_signals();
        let notifier = Arc::new(self.session.register(notifier));
        let releasing = Arc::new(AtomicBool::new(false));
        let monitor = Monitor::spawn(MonitorState {
            inner: self.inner.clone(),
            session: self.session.clone(),
            name: self.name.clone(),
            key: self.key.clone(),
            revision: self.revision,
            since: downgraded_at,
            own,
            notifier: notifier.clone(),
            releasing: releasing.clone(),
        });
        Ok(Hold {
            token: u64::try_from(self.revision).unwrap_or(0),
            held: Box::new(EtcdHeld {
                inner: self.inner.clone(),
                session: self.session.clone(),
                name: self.name.clone(),
                kind: LockKind::Read,
                key: self.key.clone(),
                revision: self.revision,
                live: Some(Live {
                    notifier,
                    releasing,
                    monitor,
                    reservation,
                }),
            }),
            signals,
        })
    }
}

impl Drop for EtcdHeld {
    fn drop(&mut self) {
        let Some(live) = self.live.take() else {
            return;
        };
        // Dropped without a confirmed release: delete the key in the background, or the shared
        // lease would keep it (and the lock) for as long as this backend lives.
        live.releasing.store(true, Ordering::SeqCst);
        live.monitor.stop();
        let (inner, session, key, revision, reservation) = (
            self.inner.clone(),
            self.session.clone(),
            self.key.clone(),
            self.revision,
            live.reservation,
        );
        let ticket = inner.cleanup_ticket(&inner.layout.lock_prefix(&self.name), &key);
        let cleanup = inner.clone();
        cleanup.spawn_cleanup("release a dropped etcd hold", async move {
            let _ticket = ticket;
            inner.remove_key(&session, &key, revision).await;
            drop(reservation);
        });
    }
}

/// The task watching one hold's key.
struct Monitor {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<KeyWatch>>>,
}

struct MonitorState {
    inner: Arc<Instance>,
    session: Arc<Lease>,
    name: LockName,
    key: String,
    /// The key's create revision.
    revision: i64,
    /// The revision from which on this hold counts as held: revocation requests after it are
    /// for this hold.
    since: i64,
    own: KeyWatch,
    notifier: Arc<HoldTicket>,
    releasing: Arc<AtomicBool>,
}

impl Monitor {
    fn spawn(state: MonitorState) -> Self {
        let (stop, stopped) = oneshot::channel();
        let span = tracing::debug_span!("etcd_hold", name = %state.name, token = state.revision);
        let task = tokio::spawn(state.run(stopped).instrument(span));
        Monitor {
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the monitor and returns its watcher (if it still had one).
    async fn take(&mut self) -> Option<KeyWatch> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        }
    }
}

impl MonitorState {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Option<KeyWatch> {
        let mut check = self.needs_check();
        loop {
            if check {
                check = false;
                match self.check().await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(error) => {
                        tracing::debug!(%error, "cannot read our etcd key; trying again");
                        check = true;
                    }
                }
            }
            tokio::select! {
                _ = &mut stop => return Some(self.own),
                _ = self.notifier.notifier().closed() => return Some(self.own),
                _ = sleep(Duration::from_millis(250)), if check => {}
                seen = self.own.next() => match seen {
                    None => return None,
                    Some(Seen::Own(Note::Created { .. })) => check = self.needs_check(),
                    Some(Seen::Own(Note::Deleted { key, revision })) => {
                        if self.own.is_own(&key) && revision > self.revision {
                            self.deleted().await;
                            return None;
                        }
                    }
                    Some(Seen::Revoke(Note::Deleted { revision, .. })) if revision > self.since => {
                        tracing::info!("revocation requested");
                        self.notifier.notifier().revoke_requested();
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// A watcher created after the hold began may have missed our key's deletion.
    fn needs_check(&self) -> bool {
        self.own.created.is_some_and(|at| at > self.since)
    }

    /// Reads the key once; returns false when the hold is gone.
    async fn check(&self) -> Result<bool> {
        let txn = Txn::new().and_then([TxnOp::get(self.key.as_str(), None)]);
        let response = self
            .inner
            .txn_once(&format!("check of our key for {}", self.name), txn)
            .await?;
        let ours = range_at(&response, 0);
        if ours.first().map(KeyValue::create_revision) == Some(self.revision) {
            Ok(true)
        } else {
            self.deleted().await;
            Ok(false)
        }
    }

    async fn deleted(&self) {
        if self.releasing.load(Ordering::SeqCst) {
            return;
        }
        // A key that went with its lease (expired, or revoked by an operator) is the
        // session's loss, the same event as on every store: SessionExpired.
        if self.inner.lease_gone(self.session.lease()).await {
            self.session.kill(LostReason::SessionExpired);
            return;
        }
        if self.notifier.notifier().lost(LostReason::Deleted) {
            tracing::warn!(key = %self.key, "etcd lock key deleted by someone else; hold lost");
        }
    }
}
