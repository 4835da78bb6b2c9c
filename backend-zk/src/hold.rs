//! A granted hold: its watcher (deletion, revocation, session loss), owner-checked release and
//! the atomic write-to-read downgrade.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use lockcore::{hold_signals, Error, HeldLock, Hold, HoldNotifier, LockName, LostReason, Result};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;
use zookeeper_client as zk;

use crate::error::{convert, limited, outcome_unknown, session_gone};
use crate::layout::{join, node_prefix, Marker, REVOKE_MESSAGE};
use crate::nodes::{delete_in_background, AclPolicy};
use crate::session::Session;

/// What every hold of one backend shares.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// The backend's address, for messages.
    pub(crate) addr: Arc<str>,
    /// The ACL of created nodes.
    pub(crate) acl: AclPolicy,
}

/// The state a hold shares with its watcher task.
struct Shared {
    session: Arc<Session>,
    name: LockName,
    /// Full paths of the hold's nodes (one, or one per permit); the first is watched.
    nodes: Vec<String>,
    notifier: HoldNotifier,
    releasing: AtomicBool,
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
    /// For a write hold: the lock folder, so that it can be downgraded.
    write_dir: Option<String>,
    env: Env,
}

/// Grants a hold on `nodes` (full paths) with fencing token `czxid`, and starts watching it.
pub(crate) fn grant(
    env: &Env,
    session: Arc<Session>,
    name: &LockName,
    nodes: Vec<String>,
    czxid: i64,
    write_dir: Option<String>,
) -> Hold {
    let (notifier, signals) = hold_signals();
    let shared = Arc::new(Shared {
        session,
        name: name.clone(),
        nodes,
        notifier,
        releasing: AtomicBool::new(false),
    });
    let span = tracing::info_span!("zk_hold", name = %name, node = %shared.nodes[0]);
    let watcher = tokio::spawn(watch(shared.clone()).instrument(span));
    Hold {
        token: u64::try_from(czxid).unwrap_or(0),
        held: Box::new(ZkHeld {
            shared,
            watcher: Some(watcher),
            status: Status::Held,
            write_dir,
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
        let Some(dir) = self.write_dir.clone() else {
            return Err(Error::invalid(
                "downgrade",
                "only the write side of a read-write lock can be downgraded",
            ));
        };
        if self.status != Status::Held || self.shared.notifier.is_lost() {
            return Err(self.not_owner());
        }
        let session = self.shared.session.clone();
        let limit = session.request_limit();
        let write_path = self.shared.nodes[0].clone();
        // The read node takes the write node's place in the queue: same sequence, created and
        // the write node deleted in one transaction (Curator's downgrade ordering).
        let seq = write_path
            .rsplit_once(Marker::Write.text())
            .map(|(_, seq)| seq.to_owned())
            .ok_or_else(|| {
                Error::backend(
                    crate::error::BACKEND,
                    format!(
                        "write node {write_path} has no {} marker",
                        Marker::Write.text()
                    ),
                )
            })?;
        let read_path = join(
            &dir,
            &format!("{}{seq}", node_prefix(&Uuid::new_v4(), Marker::Read)),
        );
        let addr = self.env.addr.clone();
        let what = format!("downgrade of {}", self.shared.name);
        let client = session.client().map_err(|e| convert(e, &addr, &what))?;
        self.shared.releasing.store(true, Ordering::SeqCst);
        let committed = {
            let mut multi = client.new_multi_writer();
            let options = self.env.acl.options(zk::CreateMode::Ephemeral);
            let staged = multi
                .add_create(&read_path, &[], &options)
                .and_then(|()| multi.add_delete(&write_path, None));
            match staged {
                Ok(()) => {
                    limited(limit, async {
                        multi.commit().await.map_err(zk::Error::from)
                    })
                    .await
                }
                Err(error) => Err(error),
            }
        };
        let czxid = match committed {
            Ok(results) => match results.first() {
                Some(zk::MultiWriteResult::Create { stat, .. }) if !stat.is_invalid() => {
                    Some(stat.czxid)
                }
                _ => None,
            },
            Err(error) if outcome_unknown(&error) => None,
            Err(zk::Error::NoNode) => {
                self.shared.releasing.store(false, Ordering::SeqCst);
                return Err(self.not_owner());
            }
            Err(error) => {
                self.shared.releasing.store(false, Ordering::SeqCst);
                return Err(convert(error, &addr, &what));
            }
        };
        let czxid = match czxid {
            Some(czxid) => czxid,
            // Unknown outcome or no stat: the read node tells whether the transaction happened.
            None => {
                let found = async {
                    limited(limit, client.sync(&dir)).await?;
                    limited(limit, client.check_stat(&read_path)).await
                }
                .await;
                match found {
                    Ok(Some(stat)) => stat.czxid,
                    Ok(None) => {
                        self.shared.releasing.store(false, Ordering::SeqCst);
                        return Err(Error::connection(
                            crate::error::BACKEND,
                            &*addr,
                            format!("{what}: the transaction did not happen; the write lock is still held"),
                        ));
                    }
                    Err(error) => {
                        self.shared.releasing.store(false, Ordering::SeqCst);
                        return Err(convert(error, &addr, &what));
                    }
                }
            }
        };
        drop(client);
        self.stop_watching();
        self.status = Status::Released;
        Ok(grant(
            &self.env,
            session,
            &self.shared.name,
            vec![read_path],
            czxid,
            None,
        ))
    }
}

impl ZkHeld {
    /// Deletes the hold's nodes and reports what the store confirmed.
    async fn delete_nodes(&mut self) -> Result<()> {
        let session = &self.shared.session;
        if session.retired_reason() == Some(LostReason::SessionExpired) {
            // Ephemeral nodes die with their session.
            self.status = Status::Released;
            return Err(self.not_owner());
        }
        let Ok(client) = session.client() else {
            self.status = Status::Released;
            return Err(Error::Closed {
                backend: crate::error::BACKEND,
            });
        };
        let outcome = delete_paths(&client, &self.shared.nodes, session.request_limit()).await;
        match outcome {
            Ok(0) => {
                self.status = Status::Released;
                Ok(())
            }
            Ok(_missing) if self.status == Status::Unconfirmed => {
                // Our earlier attempt deleted them before its reply was lost.
                self.status = Status::Released;
                Ok(())
            }
            Ok(_missing) => {
                self.status = Status::Released;
                Err(self.not_owner())
            }
            Err(error) if session_gone(&error) => {
                self.status = Status::Released;
                Err(self.not_owner())
            }
            Err(error) => {
                self.status = Status::Unconfirmed;
                Err(convert(
                    error,
                    &self.env.addr,
                    &format!("release of {}", self.shared.name),
                ))
            }
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

/// Watches a hold: its first node's deletion and data (Curator's revoke marker), and the
/// session's retirement.
async fn watch(shared: Arc<Shared>) {
    let session = shared.session.clone();
    let path = shared.nodes[0].clone();
    loop {
        let Ok(client) = session.client() else {
            session_lost(&shared, LostReason::Abandoned).await;
            return;
        };
        let fetched = tokio::select! {
            reason = session.retired() => {
                drop(client);
                session_lost(&shared, reason).await;
                return;
            }
            _ = shared.notifier.closed() => return,
            fetched = client.get_and_watch_data(&path) => fetched,
        };
        drop(client);
        match fetched {
            Ok((data, _, watcher)) => {
                if data == REVOKE_MESSAGE {
                    tracing::info!("revocation requested");
                    shared.notifier.revoke_requested();
                }
                let event = tokio::select! {
                    reason = session.retired() => {
                        session_lost(&shared, reason).await;
                        return;
                    }
                    _ = shared.notifier.closed() => return,
                    event = watcher.changed() => event,
                };
                if event.event_type == zk::EventType::NodeDeleted {
                    node_deleted(&shared);
                    return;
                }
            }
            Err(zk::Error::NoNode) => {
                node_deleted(&shared);
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot watch the lock node yet");
                tokio::select! {
                    reason = session.retired() => {
                        session_lost(&shared, reason).await;
                        return;
                    }
                    _ = shared.notifier.closed() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

fn node_deleted(shared: &Shared) {
    if !shared.releasing.load(Ordering::SeqCst) && shared.notifier.lost(LostReason::Deleted) {
        tracing::warn!("lock lost: its node was deleted by someone else");
    }
}

async fn session_lost(shared: &Shared, reason: LostReason) {
    if shared.releasing.load(Ordering::SeqCst) {
        return;
    }
    if shared.notifier.lost(reason.clone()) {
        tracing::warn!(%reason, "lock lost");
    }
    if reason == LostReason::Disconnected {
        // The session may still come back; if it does, remove our nodes at once so that
        // nobody waits for an expiry that will not happen.
        let session = &shared.session;
        let reconnected = tokio::time::timeout(session.timeout() * 2, session.connected()).await;
        if reconnected == Ok(true) && session.retired_reason() == Some(LostReason::Disconnected) {
            if let Ok(client) = session.client() {
                match delete_paths(&client, &shared.nodes, session.request_limit()).await {
                    Ok(_) => tracing::info!("removed the nodes of a hold reported lost"),
                    Err(error) => {
                        tracing::debug!(%error, "could not remove the nodes of a lost hold")
                    }
                }
            }
        }
    }
}
