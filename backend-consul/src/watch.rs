//! Watching a granted hold: the session's validity and the hold's keys on the agent.
//!
//! One task per hold waits, whichever comes first, for the session to be lost, for the store
//! to show the hold gone (a blocking query on the hold's key or folder, like api.Lock's
//! `monitorLock`), or for the guard to be dropped. Revocation requests seen on the way fire
//! `revoke_requested()`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lockcore::{HoldNotifier, LockName, LostReason, Result};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::api::{Api, Block, KvPair, Queried};
use crate::session::{Session, SessionState};

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

/// A growing pause after failed reads: 100ms doubling up to 5s.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    /// Starts at 100ms.
    pub(crate) fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }

    /// Sleeps the current pause and doubles it.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.step()).await;
    }

    /// The current pause (doubling it for next time), to wait some other way.
    pub(crate) fn step(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (pause * 2).min(Duration::from_secs(5));
        pause
    }

    /// Back to 100ms after a success.
    pub(crate) fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

/// Follows `target` with blocking queries from `index` until `check` says the hold is lost.
/// Read errors are retried: while the agent cannot be reached, the session's validity deadline
/// is what ends the hold.
pub(crate) async fn monitor(
    api: Arc<Api>,
    target: Target,
    mut index: u64,
    notifier: Arc<HoldNotifier>,
    mut check: impl FnMut(&[KvPair]) -> Check + Send,
) -> LostReason {
    let mut backoff = Backoff::new();
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
                            notifier.revoke_requested();
                        }
                    }
                    Check::Lost(reason) => return reason,
                }
            }
            Err(error) => {
                tracing::debug!(%error, "consul hold monitor read failed; retrying");
                backoff.wait().await;
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

/// Starts the watcher of one hold. The hold's validity deadline (checked by lockcore on the
/// local clock, so a paused holder sees its loss the moment it runs again) follows the
/// session's from now on. `on_lost` runs once the loss has been signalled.
pub(crate) fn watch_hold(
    name: &LockName,
    notifier: Arc<HoldNotifier>,
    session: Arc<Session>,
    store_side: impl Future<Output = LostReason> + Send + 'static,
    on_lost: impl FnOnce() + Send + 'static,
) -> Watcher {
    let mut state = session.subscribe();
    follow_validity(&notifier, &state.borrow_and_update());
    let span = tracing::info_span!("consul hold", name = %name, session = %session.id());
    Watcher(tokio::spawn(
        async move {
            tokio::pin!(store_side);
            let reason = loop {
                tokio::select! {
                    _ = notifier.closed() => return,
                    changed = state.changed() => {
                        if changed.is_err() {
                            break LostReason::Abandoned;
                        }
                        let now = state.borrow_and_update().clone();
                        if let SessionState::Gone(reason) = now {
                            break reason;
                        }
                        follow_validity(&notifier, &now);
                    }
                    reason = &mut store_side => break reason,
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

fn follow_validity(notifier: &HoldNotifier, state: &SessionState) {
    if let SessionState::Live(until) = state {
        notifier.set_valid_until(Some(until.into_std()));
    }
}
