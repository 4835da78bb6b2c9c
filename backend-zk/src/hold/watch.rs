//! The watcher of one hold: its first node's deletion and data (Curator's revoke marker), and
//! the session's retirement.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tumbler_core::retry::Backoff;
use tumbler_core::LostReason;
use zookeeper_client as zk;

use super::{delete_paths, Shared};
use crate::layout::REVOKE_MESSAGE;

/// Watches a hold: its first node's deletion and data (Curator's revoke marker), and the
/// session's retirement.
pub(super) async fn watch(shared: Arc<Shared>) {
    let session = shared.session.clone();
    let path = shared.nodes[0].clone();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
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
            _ = shared.notifier().closed() => return,
            fetched = client.get_and_watch_data(&path) => fetched,
        };
        drop(client);
        match fetched {
            Ok((data, _, watcher)) => {
                backoff.reset();
                if shared.revocable && data == REVOKE_MESSAGE {
                    tracing::info!("revocation requested");
                    shared.notifier().revoke_requested();
                }
                let event = tokio::select! {
                    reason = session.retired() => {
                        session_lost(&shared, reason).await;
                        return;
                    }
                    _ = shared.notifier().closed() => return,
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
                    _ = shared.notifier().closed() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

fn node_deleted(shared: &Shared) {
    if !shared.releasing.load(Ordering::SeqCst) && shared.notifier().lost(LostReason::Deleted) {
        tracing::warn!("lock lost: its node was deleted by someone else");
    }
}

async fn session_lost(shared: &Shared, reason: LostReason) {
    if shared.releasing.load(Ordering::SeqCst) {
        return;
    }
    // Usually told already by the session itself (see `OnRetire`).
    if shared.notifier().lost(reason.clone()) {
        tracing::warn!(%reason, "lock lost");
    }
    if reason == LostReason::RenewalFailed {
        // The session may still come back; if it does, remove our nodes at once so that
        // nobody waits for an expiry that will not happen.
        let session = &shared.session;
        let reconnected = tokio::time::timeout(session.timeout() * 2, session.connected()).await;
        if reconnected == Ok(true) && session.retired_reason() == Some(LostReason::RenewalFailed) {
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
