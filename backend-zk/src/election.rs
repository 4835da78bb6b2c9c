//! Who leads an election, on Curator's LeaderLatch layout: every candidate is an ephemeral
//! sequential `_c_<uuid>-latch-<seq>` node whose data is its participant id (our campaign
//! value), and the lowest `latch-` node leads. Campaigns go through [`crate::queue`] with
//! [`Role::Leader`]; this module reads the leader and waits for it to change with watches.

use tokio::time::Instant;
use tumbler_core::LeaderInfo;
use zookeeper_client as zk;

use crate::kinds::{foreign_election_child, foreign_queue_node, Kind, Refusal};
use crate::layout::{join, sorted, Marker, QueueNode, SEMAPHORE_LEASES, SEMAPHORE_LOCKS};
use crate::nodes::{read, read_until, stats};
use crate::queue::{other_kind, Attempt};
use crate::session::Session;

/// What one look at an election's folder found.
pub(crate) type Found = Result<Option<LeaderInfo>, Refusal>;

/// One look at the folder, with the watches that fire when what was seen changes.
struct Look {
    found: Found,
    /// Fires when the folder's children change (or, if it did not exist, when it is created).
    children: Option<zk::OneshotWatcher>,
    /// Fires when the leader's node changes: a proclaimed value, or its deletion.
    leader: Option<zk::OneshotWatcher>,
}

/// The leader of the election in `dir`: `Ok(None)` when nobody campaigns, a refusal when the
/// folder is used by a lock or holds nodes no LeaderLatch client wrote.
pub(crate) async fn leader(session: &Session, dir: &str) -> Result<Found, zk::Error> {
    Ok(look(session, dir, false).await?.found)
}

/// Waits until the leader of the election in `dir` differs from `seen`, re-reading after each
/// watch event. A session that is retired meanwhile gives [`Attempt::Again`]; servers that
/// answer nothing (not even the session's heartbeat) for the request limit give an error.
pub(crate) async fn changed(
    session: &Session,
    dir: &str,
    seen: Option<&LeaderInfo>,
) -> Result<Attempt<Found>, zk::Error> {
    loop {
        let look = look(session, dir, true).await?;
        match &look.found {
            Ok(leader) if leader.as_ref() == seen => {}
            _ => return Ok(Attempt::Done(look.found)),
        }
        tokio::select! {
            _ = fired(look.children) => {}
            _ = fired(look.leader) => {}
            _ = session.retired() => return Ok(Attempt::Again),
            error = unreachable(session, dir) => return Err(error),
        }
    }
}

/// Resolves when `watcher` fires; never without one.
async fn fired(watcher: Option<zk::OneshotWatcher>) {
    match watcher {
        Some(watcher) => {
            watcher.changed().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves with an error once the servers have answered nothing through `session` for its
/// request limit. The session's heartbeat keeps it quiet while they answer; only when that
/// falls silent for half the limit does this send a request of its own.
async fn unreachable(session: &Session, dir: &str) -> zk::Error {
    let limit = session.request_limit();
    loop {
        let quiet_at = session.last_heard() + limit / 2;
        if Instant::now() < quiet_at {
            tokio::time::sleep_until(quiet_at).await;
            continue;
        }
        let deadline = (session.last_heard() + limit).max(Instant::now());
        let probe = read_until(session, deadline, |client| async move {
            client.check_stat(dir).await
        })
        .await;
        if let Err(error) = probe {
            return error;
        }
    }
}

async fn look(session: &Session, dir: &str, watch: bool) -> Result<Look, zk::Error> {
    let (children, children_watch) = list(session, dir, watch).await?;
    if let Some(refusal) = other_kind(session, dir, &children, Some(Kind::Election)).await? {
        return Ok(refused(refusal, children_watch));
    }
    if let Some(refusal) = foreign_child(session, dir, &children).await? {
        return Ok(refused(refusal, children_watch));
    }
    // In order: a candidate that left between the listing and the read is skipped (the next
    // one leads now; sequence numbers only grow), as Curator's `getLeader` does.
    for candidate in sorted(&children, &[Marker::Latch]) {
        let path = join(dir, &candidate.name);
        let fetched = read(session, |client| {
            let path = path.clone();
            async move {
                if watch {
                    let (data, stat, watcher) = client.get_and_watch_data(&path).await?;
                    Ok((data, stat, Some(watcher)))
                } else {
                    let (data, stat) = client.get_data(&path).await?;
                    Ok((data, stat, None))
                }
            }
        })
        .await;
        let (data, stat, leader_watch) = match fetched {
            Ok(fetched) => fetched,
            Err(zk::Error::NoNode) => continue,
            Err(error) => return Err(error),
        };
        if let Some(refusal) = foreign_queue_node(&path, &stat) {
            return Ok(refused(refusal, children_watch));
        }
        return Ok(Look {
            found: Ok(Some(LeaderInfo {
                value: data,
                term: u64::try_from(stat.czxid).unwrap_or(0),
                id: format!("{} (session {:#x})", candidate.name, stat.ephemeral_owner),
            })),
            children: children_watch,
            leader: leader_watch,
        });
    }
    Ok(Look {
        found: Ok(None),
        children: children_watch,
        leader: None,
    })
}

fn refused(refusal: Refusal, children: Option<zk::OneshotWatcher>) -> Look {
    Look {
        found: Err(refusal),
        children,
        leader: None,
    }
}

/// The children of `dir` (none if it does not exist), with a watch on them (or on the folder's
/// creation) when `watch` is set.
async fn list(
    session: &Session,
    dir: &str,
    watch: bool,
) -> Result<(Vec<String>, Option<zk::OneshotWatcher>), zk::Error> {
    read(session, |client| async move {
        if !watch {
            return match client.list_children(dir).await {
                Ok(children) => Ok((children, None)),
                Err(zk::Error::NoNode) => Ok((Vec::new(), None)),
                Err(error) => Err(error),
            };
        }
        loop {
            match client.list_and_watch_children(dir).await {
                Ok((children, watcher)) => return Ok((children, Some(watcher))),
                Err(zk::Error::NoNode) => {}
                Err(error) => return Err(error),
            }
            // No folder yet: watch for its creation; if it appeared meanwhile, list again.
            if let (None, watcher) = client.check_and_watch_stat(dir).await? {
                return Ok((Vec::new(), Some(watcher)));
            }
        }
    })
    .await
}

/// An ephemeral child of `dir` that is no queue node of any kind: nobody would remove it, and
/// it cannot be a nested name's folder. Children that are neither (nested names, the
/// semaphore's folders) are left alone, as under every lock.
async fn foreign_child(
    session: &Session,
    dir: &str,
    children: &[String],
) -> Result<Option<Refusal>, zk::Error> {
    let unknown: Vec<String> = children
        .iter()
        .filter(|c| QueueNode::parse(c).is_none())
        .filter(|c| *c != SEMAPHORE_LOCKS && *c != SEMAPHORE_LEASES)
        .map(|c| join(dir, c))
        .collect();
    if unknown.is_empty() {
        return Ok(None);
    }
    let stats = stats(session, &unknown).await?;
    Ok(unknown
        .iter()
        .zip(stats)
        .find_map(|(path, stat)| stat.and_then(|stat| foreign_election_child(path, &stat))))
}
