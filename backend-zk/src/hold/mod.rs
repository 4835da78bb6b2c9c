//! A granted hold: owner-checked release, plus its [watcher](watch) (deletion, revocation,
//! session loss), the atomic write-to-read [downgrade] and a leader's [proclaim].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;
use tumbler_core::keeper::HoldTicket;
use tumbler_core::retry::Backoff;
use tumbler_core::{
    hold_signals, Error, HeldLock, Hold, HoldNotifier, LockName, LostReason, Result,
};
use zookeeper_client as zk;

use crate::error::{convert, limited, outcome_unknown, session_gone};
use crate::nodes::{delete_in_background, AclPolicy};
use crate::session::Session;

mod downgrade;
mod proclaim;
mod watch;

use watch::watch;

/// What every hold of one backend shares.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// The backend's address, for messages.
    pub(crate) addr: Arc<str>,
    /// The ACL of created nodes.
    pub(crate) acl: AclPolicy,
}

/// What a hold can do besides being released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HoldKind {
    /// A mutex, read or semaphore hold: released only.
    Plain,
    /// The write side of a read-write lock in the folder `dir`: can be downgraded.
    Write {
        /// The lock folder.
        dir: String,
    },
    /// A leadership: can proclaim a new value into its node.
    Leader,
}

/// The state a hold shares with its watcher task.
struct Shared {
    session: Arc<Session>,
    name: LockName,
    /// Full paths of the hold's nodes (one, or one per permit); the first is watched.
    nodes: Vec<String>,
    /// The hold's place among the session's holds (deadline and loss fan-out); its notifier
    /// reports this hold's own events (deletion, revocation).
    ticket: HoldTicket,
    releasing: AtomicBool,
    /// Whether Curator's revoke marker in the node asks this hold to release (not for a
    /// leader, whose node's data is the value it proclaimed).
    revocable: bool,
}

impl Shared {
    fn notifier(&self) -> &HoldNotifier {
        self.ticket.notifier()
    }
}

/// Release progress of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Held,
    /// A release was sent but its outcome is unknown (the reply was lost).
    Unconfirmed,
    Released,
}

/// The backend's handle on one granted hold.
pub(crate) struct ZkHeld {
    shared: Arc<Shared>,
    watcher: Option<JoinHandle<()>>,
    status: Status,
    /// What else the hold can do (downgrade, proclaim).
    kind: HoldKind,
    env: Env,
}

/// Grants a hold on `nodes` (full paths) with fencing token `czxid`, and starts watching it.
pub(crate) fn grant(
    env: &Env,
    session: Arc<Session>,
    name: &LockName,
    nodes: Vec<String>,
    czxid: i64,
    kind: HoldKind,
) -> Hold {
    let (notifier, signals) = hold_signals();
    let ticket = session.register(notifier);
    let shared = Arc::new(Shared {
        session,
        name: name.clone(),
        nodes,
        ticket,
        releasing: AtomicBool::new(false),
        revocable: kind != HoldKind::Leader,
    });
    let span = tracing::info_span!("zk_hold", name = %name, node = %shared.nodes[0]);
    let watcher = tokio::spawn(watch(shared.clone()).instrument(span));
    Hold {
        token: u64::try_from(czxid).unwrap_or(0),
        held: Box::new(ZkHeld {
            shared,
            watcher: Some(watcher),
            status: Status::Held,
            kind,
            env: env.clone(),
        }),
        signals,
    }
}

impl ZkHeld {
    fn stop_watching(&mut self) {
        self.shared.releasing.store(true, Ordering::SeqCst);
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }

    fn not_owner(&self) -> Error {
        Error::NotOwner {
            name: self.shared.name.clone(),
        }
    }
}

#[async_trait]
impl HeldLock for ZkHeld {
    async fn release(&mut self) -> Result<()> {
        if self.status == Status::Released {
            return Ok(());
        }
        // The watcher stays until the delete is answered: the server delivers the node's
        // deletion event first, which ends the watch without a RemoveWatches request.
        self.shared.releasing.store(true, Ordering::SeqCst);
        let outcome = self.delete_nodes().await;
        self.stop_watching();
        outcome
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        downgrade::downgrade(self).await
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        proclaim::proclaim(self, value).await
    }
}

impl ZkHeld {
    /// The answer to a release once the session was retired for `reason`, at once: no request
    /// waits for a timeout on a session that cannot vouch for the hold any more.
    fn retired(&mut self, reason: LostReason) -> Result<()> {
        self.status = Status::Released;
        if reason == LostReason::SessionExpired {
            // Ephemeral nodes die with their session.
            return Err(Error::SessionExpired {
                name: self.shared.name.clone(),
            });
        }
        // Cut off past its validity, or closed. If the session comes back, the nodes are
        // deleted then (see `watch`), and in the background here.
        delete_in_background(self.shared.session.clone(), self.shared.nodes.clone());
        Err(self.not_owner())
    }

    /// Deletes the hold's nodes and reports what the store confirmed.
    async fn delete_nodes(&mut self) -> Result<()> {
        if let Some(reason) = self.shared.session.retired_reason() {
            return self.retired(reason);
        }
        let session = &self.shared.session;
        // A delete whose reply was lost (a failover) is sent again while the session lives,
        // within the request time limit; a node then already gone was deleted by us.
        let deadline = Instant::now() + session.request_limit();
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            let Ok(client) = session.client() else {
                self.status = Status::Released;
                return Err(Error::Closed {
                    backend: crate::error::BACKEND,
                });
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = Instant::now();
            let outcome = tokio::select! {
                outcome = delete_paths(&client, &self.shared.nodes, left) => Ok(outcome),
                reason = session.retired() => Err(reason),
            };
            drop(client);
            let outcome = match outcome {
                Ok(outcome) => outcome,
                // Retired meanwhile: answer now.
                Err(reason) => return self.retired(reason),
            };
            match &outcome {
                Ok(_) => session.heard(sent),
                Err(error) if outcome_unknown(error) => session.doubt(),
                Err(_) => {}
            }
            return match outcome {
                Ok(0) => {
                    self.status = Status::Released;
                    Ok(())
                }
                Ok(_missing) if self.status == Status::Unconfirmed => {
                    self.status = Status::Released;
                    Ok(())
                }
                Ok(_missing) => {
                    self.status = Status::Released;
                    Err(self.not_owner())
                }
                Err(error) if session_gone(&error) => {
                    self.status = Status::Released;
                    Err(match error {
                        zk::Error::SessionExpired | zk::Error::SessionMoved => {
                            Error::SessionExpired {
                                name: self.shared.name.clone(),
                            }
                        }
                        _ => self.not_owner(),
                    })
                }
                Err(error) => {
                    self.status = Status::Unconfirmed;
                    let pause = backoff.next_delay();
                    if outcome_unknown(&error)
                        && session.retired_reason().is_none()
                        && Instant::now() + pause < deadline
                    {
                        tracing::debug!(%error, "release reply lost; sending it again");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    Err(convert(
                        error,
                        &self.env.addr,
                        &format!("release of {}", self.shared.name),
                    ))
                }
            };
        }
    }
}

impl Drop for ZkHeld {
    fn drop(&mut self) {
        self.stop_watching();
        if self.status != Status::Released
            && self.shared.session.retired_reason() != Some(LostReason::SessionExpired)
        {
            // Never confirmed released: keep deleting in the background while the session lives.
            delete_in_background(self.shared.session.clone(), self.shared.nodes.clone());
        }
    }
}

/// Deletes `paths` (requests pipelined); returns how many were already gone.
async fn delete_paths(
    client: &zk::Client,
    paths: &[String],
    limit: std::time::Duration,
) -> std::result::Result<usize, zk::Error> {
    let requests: Vec<_> = paths.iter().map(|p| client.delete(p, None)).collect();
    limited(limit, async {
        let mut missing = 0;
        let mut failure = None;
        for request in requests {
            match request.await {
                Ok(()) => {}
                Err(zk::Error::NoNode) => missing += 1,
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        failure.map_or(Ok(missing), Err)
    })
    .await
}
