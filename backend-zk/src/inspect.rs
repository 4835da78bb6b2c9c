//! `state()` and `request_revoke()`, read from a lock folder's children (Curator's
//! `getParticipantNodes` and `Revoker`).

use tumbler_core::{HoldMode, HolderInfo, LockName, LockState};
use zookeeper_client as zk;

use crate::error::limited;
use crate::layout::{
    holders, join, lease_groups, sorted, Marker, REVOKE_MESSAGE, SEMAPHORE_LEASES, SEMAPHORE_LOCKS,
};
use crate::nodes::{read, stats};
use crate::session::Session;

/// One current holder: the node that carries its token, and how it holds.
struct Holding {
    node: String,
    mode: HoldMode,
}

/// The holders of the lock in `dir` and how many wait.
async fn holdings(session: &Session, dir: &str) -> Result<(Vec<Holding>, usize), zk::Error> {
    let children = read(session, |client| async move {
        client.list_children(dir).await.or_else(empty_if_missing)
    })
    .await?;
    let (held, mut waiting) = holders(&children);
    let mut found: Vec<Holding> = held
        .into_iter()
        .map(|n| Holding {
            node: join(dir, &n.name),
            mode: match n.marker {
                Marker::Read => HoldMode::Read,
                Marker::Write => HoldMode::Write,
                Marker::Latch => HoldMode::Leader,
                _ => HoldMode::Exclusive,
            },
        })
        .collect();
    if children.iter().any(|c| c == SEMAPHORE_LEASES) {
        let leases_dir = join(dir, SEMAPHORE_LEASES);
        let locks_dir = join(dir, SEMAPHORE_LOCKS);
        let (leases, locks) = read(session, |client| {
            let (leases_dir, locks_dir) = (leases_dir.clone(), locks_dir.clone());
            async move {
                // Both requests are sent before either reply is awaited.
                let leases = client.list_children(&leases_dir);
                let locks = client.list_children(&locks_dir);
                let (leases, locks) = (leases.await, locks.await);
                Ok((
                    leases.or_else(empty_if_missing)?,
                    locks.or_else(empty_if_missing)?,
                ))
            }
        })
        .await?;
        let locks = sorted(&locks, &[Marker::Lock]);
        // The acquisition holding the semaphore's mutex is still waiting for its permits.
        let acquiring = locks.first().and_then(|n| n.uuid().map(str::to_owned));
        waiting += locks.len();
        for group in lease_groups(&leases) {
            if group.uuid.is_some() && group.uuid == acquiring {
                continue;
            }
            let permits = u32::try_from(group.nodes.len()).unwrap_or(u32::MAX);
            if let Some(first) = group.nodes.into_iter().next() {
                found.push(Holding {
                    node: join(&leases_dir, &first),
                    mode: HoldMode::Permits(permits),
                });
            }
        }
    }
    Ok((found, waiting))
}

fn empty_if_missing(error: zk::Error) -> Result<Vec<String>, zk::Error> {
    match error {
        zk::Error::NoNode => Ok(Vec::new()),
        other => Err(other),
    }
}

/// A snapshot of who holds the lock in `dir` (with fencing tokens) and how many wait.
pub(crate) async fn state(
    session: &Session,
    name: &LockName,
    dir: &str,
) -> Result<LockState, zk::Error> {
    let (found, waiting) = holdings(session, dir).await?;
    let paths: Vec<String> = found.iter().map(|h| h.node.clone()).collect();
    let stats = stats(session, &paths).await?;
    let mut holders = Vec::with_capacity(found.len());
    for (holding, stat) in found.into_iter().zip(stats) {
        // A holder that left between the listing and the stat is not a holder any more.
        if let Some(stat) = stat {
            holders.push(HolderInfo {
                id: format!(
                    "{} (session {:#x})",
                    holding.node.rsplit('/').next().unwrap_or(&holding.node),
                    stat.ephemeral_owner
                ),
                mode: holding.mode,
                token: u64::try_from(stat.czxid).ok(),
            });
        }
    }
    Ok(LockState {
        name: name.clone(),
        holders,
        waiters: Some(waiting),
    })
}

/// Writes Curator's revoke marker into every current holder's node; returns how many were
/// asked. A leader is never asked: its node's data is the value it advertises (LeaderLatch has
/// no revocation).
pub(crate) async fn request_revoke(session: &Session, dir: &str) -> Result<usize, zk::Error> {
    let (found, _) = holdings(session, dir).await?;
    let client = session.client()?;
    let writes: Vec<_> = found
        .iter()
        .filter(|h| h.mode != HoldMode::Leader)
        .map(|h| client.set_data(&h.node, REVOKE_MESSAGE, None))
        .collect();
    let mut asked = 0;
    for write in writes {
        match limited(session.request_limit(), write).await {
            Ok(_) => asked += 1,
            Err(zk::Error::NoNode) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(asked)
}
