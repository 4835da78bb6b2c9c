//! Watching a granted hold: its session's loss and the hold's keys on the agent.
//!
//! One task per hold waits, whichever comes first, for the session to be lost, for the store
//! to show the hold gone (a blocking query on the hold's key or folder, like api.Lock's
//! `monitorLock`), or for the guard to be dropped. Revocation requests seen on the way fire
//! `revoke_requested()`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument;
use tumbler_core::keeper::HoldTicket;
use tumbler_core::retry::Backoff;
use tumbler_core::{HoldNotifier, LockName, LostReason, Result};

use crate::api::{Api, Block, KvPair, Queried};
use crate::session::Session;

/// What the store shows about a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// Still ours; `revoke` tells whether a (new) revocation request is pending.
    Held {
        /// A revocation was requested.
        revoke: bool,
    },
    /// Gone, and why.
    Lost(LostReason),
}

/// Which keys a monitor reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One key.
    Key(String),
    /// Every key under a prefix.
    Prefix(String),
}

impl Target {
    /// Reads the target, blocking when `block` is given.
    pub(crate) async fn read(
        &self,
        api: &Api,
        block: Option<Block>,
    ) -> Result<Queried<Vec<KvPair>>> {
        match self {
            Target::Key(key) => {
                let q = api.kv_get(key, block).await?;
                Ok(Queried {
                    value: q.value.into_iter().collect(),
                    index: q.index,
                })
            }
            Target::Prefix(prefix) => api.kv_list(prefix, block).await,
        }
    }
}

/// The next `?index=` after an answer at `got`, when the last one was `prev`: Consul's advice
/// is to start over when the index goes backwards (a snapshot restore), and never to use 0.
pub(crate) fn next_index(prev: u64, got: u64) -> u64 {
    if got < prev {
        1
    } else {
        got.max(1)
    }
}

/// The pauses after failed reads and writes: 100 ms doubling up to 5 s, with jitter.
pub(crate) fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// Sleeps the next pause of `backoff`.
pub(crate) async fn sleep_next(backoff: &mut Backoff) {
    tokio::time::sleep(backoff.next_delay()).await;
}

/// Follows `target` with blocking queries from `index` until `check` says the hold is lost.
/// Read errors are retried: while the agent cannot be reached, the session's validity deadline
/// is what ends the hold.
pub(crate) async fn monitor(
    api: Arc<Api>,
    target: Target,
    mut index: u64,
    ticket: Arc<HoldTicket>,
    mut check: impl FnMut(&[KvPair]) -> Check + Send,
) -> LostReason {
    let mut backoff = backoff();
    loop {
        let block = Block {
            index,
            wait: api.query_wait(),
        };
        match target.read(&api, Some(block)).await {
            Ok(q) => {
                backoff.reset();
                index = next_index(index, q.index);
                match check(&q.value) {
                    Check::Held { revoke } => {
                        if revoke {
                            tracing::info!("revocation requested");
                            ticket.notifier().revoke_requested();
                        }
                    }
                    Check::Lost(reason) => return reason,
                }
            }
            Err(error) => {
                tracing::debug!(%error, "consul hold monitor read failed; retrying");
                sleep_next(&mut backoff).await;
            }
        }
    }
}

/// Aborts the watcher task when dropped (release, downgrade, or the hold itself dropped).
#[derive(Debug)]
pub(crate) struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers a new hold with `session` (so it gets the session's validity deadline now, at the
/// grant, and its loss later) and returns its ticket.
pub(crate) fn register(session: &Session, notifier: HoldNotifier) -> Arc<HoldTicket> {
    Arc::new(session.holds().register(notifier))
}

/// Starts the watcher of one hold registered with `session` (see [`register`]): whichever
/// comes first of the session's loss (already fanned out to the hold), the store showing the
/// hold gone (`store_side`), or the guard being dropped. A hold whose keys the agent released
/// because it invalidated the session is lost with `SessionExpired`, not `Deleted`. `on_lost`
/// runs once the loss has been signalled.
pub(crate) fn watch_hold(
    name: &LockName,
    ticket: Arc<HoldTicket>,
    session: Arc<Session>,
    store_side: impl Future<Output = LostReason> + Send + 'static,
    on_lost: impl FnOnce() + Send + 'static,
) -> Watcher {
    let span = tracing::info_span!("consul hold", name = %name, session = %session.id());
    Watcher(tokio::spawn(
        async move {
            tokio::pin!(store_side);
            let notifier = ticket.notifier();
            let reason = tokio::select! {
                () = notifier.closed() => return,
                reason = session.lost() => reason,
                reason = &mut store_side => {
                    // The agent releases (or deletes) the keys of a session it invalidated:
                    // that is the session's expiry, not a deletion.
                    if reason == LostReason::Deleted && session.expired_on_agent().await {
                        LostReason::SessionExpired
                    } else {
                        reason
                    }
                }
            };
            if notifier.lost(reason.clone()) {
                tracing::warn!(%reason, "lock lost");
            }
            on_lost();
        }
        .instrument(span),
    ))
}
