//! Queue-based acquisition (Curator's InterProcessMutex, InterProcessReadWriteLock and
//! LeaderLatch): create a protected ephemeral sequential node, then wait for the one node the
//! rules say to wait for.
//!
//! Uncontended: one round trip (the create and the listing are sent together). Hand-off: one
//! watch event and one listing.

use std::sync::Arc;

use tumbler_core::cleanup::CancelCleanup;
use tumbler_core::{Hold, LockName, Result};
use uuid::Uuid;
use zookeeper_client as zk;

use tokio::time::Instant;

use crate::error::{convert_for, session_gone};
use crate::hold::{grant, Env, HoldKind};
use crate::kinds::{
    ephemeral_folder, foreign_queue_node, other_queue_kind, semaphore_folders, Kind, Refusal,
};
use crate::layout::{join, node_prefix, standing, Role, Standing};
use crate::nodes::{create_sequential, delete_all, delete_by_uuid, read, Created};
use crate::session::Session;

/// How one attempt on one session ended.
pub(crate) enum Attempt<T> {
    /// Granted, or busy for a one-shot attempt.
    Done(T),
    /// The session was retired (or our node vanished) while we queued: try again on a new one.
    Again,
}

/// Why [`wait_turn`] stopped without the lock.
pub(crate) enum Turn {
    /// The node holds the lock.
    Holds,
    /// The lock is busy and the caller did not want to wait; the node was removed.
    Busy,
    /// The session was retired or the node vanished.
    Again,
    /// Another kind uses the name, or a foreign node is in the way; the node was removed.
    Refused(Refusal),
}

/// One attempt at a mutex, read, write or leader hold on `dir` through `session`; the node
/// holds `data` (a campaign's value, the LeaderLatch participant id; empty for locks).
pub(crate) async fn attempt(
    env: &Env,
    session: &Arc<Session>,
    name: &LockName,
    dir: &str,
    (role, data): (Role, &[u8]),
    wait: bool,
) -> Result<Attempt<Option<Hold>>> {
    let started = Instant::now();
    let what = || format!("acquire of {name}");
    let uuid = Uuid::new_v4();
    // Armed before the create is sent: if this future is dropped at any point, every node of
    // this acquisition is removed in the background.
    let cleanup = CancelCleanup::new(
        "remove the zookeeper node of a cancelled acquisition",
        delete_by_uuid(session.clone(), vec![dir.to_owned()], uuid),
    );
    let created = match create_sequential(
        session,
        dir,
        &node_prefix(&uuid, role.marker()),
        data,
        &uuid,
        env.acl,
    )
    .await
    {
        Ok(created) => created,
        Err(error) if session_gone(&error) => return Ok(Attempt::Again),
        Err(zk::Error::NoChildrenForEphemerals) => {
            cleanup.disarm();
            return Err(ephemeral_folder(dir).into_error(name));
        }
        Err(error) => return Err(convert_for(error, &env.addr, name, &what(), started)),
    };
    let czxid = created.czxid;
    let node = created.name.clone();
    match wait_turn(session, dir, created, role, Some(role.kind()), wait).await {
        Ok(Turn::Holds) => {
            cleanup.disarm();
            let kind = match role {
                Role::Write => HoldKind::Write {
                    dir: dir.to_owned(),
                },
                Role::Leader => HoldKind::Leader,
                Role::Mutex | Role::Read => HoldKind::Plain,
            };
            let hold = grant(
                env,
                session.clone(),
                name,
                vec![join(dir, &node)],
                czxid,
                kind,
            );
            Ok(Attempt::Done(Some(hold)))
        }
        Ok(Turn::Busy) => {
            cleanup.disarm();
            Ok(Attempt::Done(None))
        }
        Ok(Turn::Refused(refusal)) => {
            cleanup.disarm();
            Err(refusal.into_error(name))
        }
        Ok(Turn::Again) => Ok(Attempt::Again),
        Err(error) if session_gone(&error) => Ok(Attempt::Again),
        Err(error) => Err(convert_for(error, &env.addr, name, &what(), started)),
    }
}

/// Waits until `node` holds under `role`'s rules; with `wait` false makes one check and
/// removes the node when busy. With `kind`, first checks that no other kind of primitive uses
/// the folder (see [`crate::kinds`]); a refusal removes the node too.
pub(crate) async fn wait_turn(
    session: &Session,
    dir: &str,
    created: Created,
    role: Role,
    kind: Option<Kind>,
    wait: bool,
) -> std::result::Result<Turn, zk::Error> {
    let mut listed = created.children;
    let ours = join(dir, &created.name);
    let mut checked = kind.is_none();
    loop {
        let children = match listed.take() {
            Some(children) => children,
            None => {
                read(session, |client| async move {
                    match client.list_children(dir).await {
                        Err(zk::Error::NoNode) => Ok(Vec::new()),
                        other => other,
                    }
                })
                .await?
            }
        };
        if !checked {
            checked = true;
            if let Some(refusal) = other_kind(session, dir, &children, kind).await? {
                delete_all(session, &[&ours]).await?;
                return Ok(Turn::Refused(refusal));
            }
        }
        let (before, last) = match standing(&children, &created.name, role) {
            Standing::Holds => return Ok(Turn::Holds),
            Standing::Missing => {
                tracing::info!(node = %created.name, "our queue node is gone; queueing again");
                return Ok(Turn::Again);
            }
            Standing::WaitFor { node, last } => (join(dir, &node), last),
        };
        if !wait {
            // Busy, unless what is ahead is a foreign node that would never go away.
            let stat = read(session, |client| {
                let before = before.clone();
                async move { client.check_stat(&before).await }
            })
            .await?;
            delete_all(session, &[&ours]).await?;
            return Ok(
                match stat.and_then(|stat| foreign_queue_node(&before, &stat)) {
                    Some(refusal) => Turn::Refused(refusal),
                    None => Turn::Busy,
                },
            );
        }
        // getData rather than exists: no watch is left behind when the node is already gone.
        let watched = read(session, |client| {
            let before = before.clone();
            async move { client.get_and_watch_data(&before).await }
        })
        .await;
        let watcher = match watched {
            Ok((_, stat, watcher)) => match foreign_queue_node(&before, &stat) {
                Some(refusal) => {
                    delete_all(session, &[&ours]).await?;
                    return Ok(Turn::Refused(refusal));
                }
                None => watcher,
            },
            Err(zk::Error::NoNode) if last => return Ok(Turn::Holds),
            Err(zk::Error::NoNode) => continue,
            Err(error) => return Err(error),
        };
        let event = tokio::select! {
            event = watcher.changed() => event,
            _ = session.retired() => return Ok(Turn::Again),
        };
        // Hand-off in one event: nothing else was ahead of us, and nothing can be added.
        if last && event.event_type == zk::EventType::NodeDeleted {
            return Ok(Turn::Holds);
        }
    }
}

/// Another kind of primitive using the folder `dir` (whose children are `children`), if
/// `kind` is given: a queue node of the other lock kind, or a semaphore folder with nodes in it.
pub(crate) async fn other_kind(
    session: &Session,
    dir: &str,
    children: &[String],
    kind: Option<Kind>,
) -> std::result::Result<Option<Refusal>, zk::Error> {
    let Some(asked) = kind else {
        return Ok(None);
    };
    if let Some(refusal) = other_queue_kind(dir, children, asked) {
        return Ok(Some(refusal));
    }
    for folder in semaphore_folders(dir, children) {
        let inside = read(session, |client| {
            let folder = folder.clone();
            async move {
                match client.list_children(&folder).await {
                    Err(zk::Error::NoNode) => Ok(Vec::new()),
                    other => other,
                }
            }
        })
        .await?;
        if let Some(first) = inside.first() {
            return Ok(Some(Refusal::Kinds {
                asked,
                used: Kind::Semaphore,
                node: join(&folder, first),
            }));
        }
    }
    Ok(None)
}
