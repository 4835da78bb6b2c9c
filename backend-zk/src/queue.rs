//! Queue-based acquisition (Curator's InterProcessMutex and InterProcessReadWriteLock): create a
//! protected ephemeral sequential node, then wait for the one node the rules say to wait for.
//!
//! Uncontended: one round trip (the create and the listing are sent together). Hand-off: one
//! watch event and one listing.

use std::sync::Arc;

use lockcore::cleanup::CancelCleanup;
use lockcore::{Hold, LockName, Result};
use uuid::Uuid;
use zookeeper_client as zk;

use crate::error::{convert, session_gone};
use crate::hold::{grant, Env};
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
}

/// One attempt at a mutex, read or write hold on `dir` through `session`.
pub(crate) async fn attempt(
    env: &Env,
    session: &Arc<Session>,
    name: &LockName,
    dir: &str,
    role: Role,
    wait: bool,
) -> Result<Attempt<Option<Hold>>> {
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
        &uuid,
        env.acl,
    )
    .await
    {
        Ok(created) => created,
        Err(error) if session_gone(&error) => return Ok(Attempt::Again),
        Err(error) => return Err(convert(error, &env.addr, &what())),
    };
    let czxid = created.czxid;
    let node = created.name.clone();
    match wait_turn(session, dir, created, role, wait).await {
        Ok(Turn::Holds) => {
            cleanup.disarm();
            let write_dir = (role == Role::Write).then(|| dir.to_owned());
            let hold = grant(
                env,
                session.clone(),
                name,
                vec![join(dir, &node)],
                czxid,
                write_dir,
            );
            Ok(Attempt::Done(Some(hold)))
        }
        Ok(Turn::Busy) => {
            cleanup.disarm();
            Ok(Attempt::Done(None))
        }
        Ok(Turn::Again) => Ok(Attempt::Again),
        Err(error) if session_gone(&error) => Ok(Attempt::Again),
        Err(error) => Err(convert(error, &env.addr, &what())),
    }
}

/// Waits until `node` holds under `role`'s rules; with `wait` false makes one check and
/// removes the node when busy.
pub(crate) async fn wait_turn(
    session: &Session,
    dir: &str,
    created: Created,
    role: Role,
    wait: bool,
) -> std::result::Result<Turn, zk::Error> {
    let mut listed = created.children;
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
        let (before, last) = match standing(&children, &created.name, role) {
            Standing::Holds => return Ok(Turn::Holds),
            Standing::Missing => {
                tracing::info!(node = %created.name, "our queue node is gone; queueing again");
                return Ok(Turn::Again);
            }
            Standing::WaitFor { node, last } => (join(dir, &node), last),
        };
        if !wait {
            delete_all(session, &[&join(dir, &created.name)]).await?;
            return Ok(Turn::Busy);
        }
        // getData rather than exists: no watch is left behind when the node is already gone.
        let watched = read(session, |client| {
            let before = before.clone();
            async move { client.get_and_watch_data(&before).await }
        })
        .await;
        let watcher = match watched {
            Ok((_, _, watcher)) => watcher,
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
