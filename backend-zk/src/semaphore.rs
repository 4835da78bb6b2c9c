//! Semaphores on Curator's InterProcessSemaphoreV2 layout: `<dir>/locks` is a mutex that
//! serialises acquisitions, `<dir>/leases` holds one ephemeral sequential node per permit.
//!
//! The mutex holder creates all its lease nodes in one transaction (so `acquire(n)` is all or
//! nothing), then waits on the leases folder until the count is within the limit, then releases
//! the mutex. Every node of one acquisition shares one protection uuid (the mutex node too), so
//! `state()` can tell the one acquisition that is still waiting for permits.
//!
//! Acquisitions are served in order: a one-shot attempt (`try_acquire`) while another
//! acquisition holds the mutex reports busy, as Curator's does, even if enough permits are free
//! for it; waiting acquisitions queue on the mutex.

use std::sync::Arc;

use tumbler_core::cleanup::CancelCleanup;
use tumbler_core::{Error, Hold, LockName, Result};
use uuid::Uuid;
use zookeeper_client as zk;

use crate::config::MAX_PERMITS_PER_ACQUIRE;
use tokio::time::Instant;

use crate::error::{convert_for, limited, outcome_unknown, session_gone};
use crate::hold::{grant, Env, HoldKind};
use crate::kinds::{
    ephemeral_folder, foreign_queue_node, limit_record, other_queue_kind, recorded_limit, Kind,
    Refusal,
};
use crate::layout::{
    join, node_prefix, protection, sorted, Marker, Role, SEMAPHORE_LEASES, SEMAPHORE_LOCKS,
};
use crate::nodes::{
    create_sequential, delete_all, delete_by_uuid, delete_in_background, ensure_dir, read, stats,
};
use crate::queue::{wait_turn, Attempt, Turn};
use crate::session::Session;

/// Checks what only this backend limits before anything is sent (lockcore validates permits
/// and limits in general): the permits of one acquisition, one znode each.
pub(crate) fn check_permits(count: u32) -> Result<()> {
    if count > MAX_PERMITS_PER_ACQUIRE {
        return Err(Error::invalid(
            "permits",
            format!("{count} permits at once is more than the ZooKeeper backend allows ({MAX_PERMITS_PER_ACQUIRE}): each permit is one znode, as in Curator's InterProcessSemaphoreV2"),
        ));
    }
    Ok(())
}

/// One attempt at `count` of `limit` permits of the semaphore in `dir`.
pub(crate) async fn attempt(
    env: &Env,
    session: &Arc<Session>,
    name: &LockName,
    dir: &str,
    (limit, count): (u32, u32),
    wait: bool,
) -> Result<Attempt<Option<Hold>>> {
    let started = Instant::now();
    let what = || format!("acquire of {count} permits of {name}");
    let fail = |error: zk::Error| -> Result<Attempt<Option<Hold>>> {
        if session_gone(&error) {
            Ok(Attempt::Again)
        } else if error == zk::Error::NoChildrenForEphemerals {
            Err(ephemeral_folder(dir).into_error(name))
        } else {
            Err(convert_for(error, &env.addr, name, &what(), started))
        }
    };
    let locks = join(dir, SEMAPHORE_LOCKS);
    let leases = join(dir, SEMAPHORE_LEASES);
    let uuid = Uuid::new_v4();
    let cleanup = CancelCleanup::new(
        "remove the zookeeper nodes of a cancelled semaphore acquisition",
        delete_by_uuid(session.clone(), vec![locks.clone(), leases.clone()], uuid),
    );

    // 1. The mutex that serialises acquisitions.
    let mutex = match create_sequential(
        session,
        &locks,
        &node_prefix(&uuid, Marker::Lock),
        &[],
        &uuid,
        env.acl,
    )
    .await
    {
        Ok(created) => created,
        Err(error) => return fail(error),
    };
    let mutex_path = join(&locks, &mutex.name);
    // One name, one kind: after our node exists, no mutex or read-write lock node may be in
    // the lock's folder (they look for ours in the same way; see `crate::kinds`).
    let refusal = match other_kind_in(session, dir).await {
        Ok(refusal) => refusal,
        Err(error) => return fail(error),
    };
    if let Some(refusal) = refusal {
        return match refuse(session, &[&mutex_path], refusal, name, cleanup).await {
            Ok(conflict) => Err(conflict),
            Err(error) => fail(error),
        };
    }
    match wait_turn(session, &locks, mutex, Role::Mutex, None, wait).await {
        Ok(Turn::Holds) => {}
        Ok(Turn::Busy) => {
            cleanup.disarm();
            return Ok(Attempt::Done(None));
        }
        Ok(Turn::Refused(refusal)) => {
            cleanup.disarm();
            return Err(refusal.into_error(name));
        }
        Ok(Turn::Again) => return Ok(Attempt::Again),
        Err(error) => return fail(error),
    }

    // While we hold the mutex no other acquisition of this semaphore runs: check the limit
    // recorded on the store, or record ours.
    match agree_on_limit(env, session, &leases, limit).await {
        Ok(None) => {}
        Ok(Some(refusal)) => {
            return match refuse(session, &[&mutex_path], refusal, name, cleanup).await {
                Ok(conflict) => Err(conflict),
                Err(error) => fail(error),
            }
        }
        Err(error) => return fail(error),
    }

    // 2. All our lease nodes at once, then wait until they fit within the limit.
    let ours = match create_leases(env, session, &leases, &uuid, count).await {
        Ok(ours) => ours,
        Err(error) => return fail(error),
    };
    match wait_for_room(session, &leases, &ours.names, limit, wait).await {
        Ok(Room::Granted) => {}
        Ok(Room::Again) => return Ok(Attempt::Again),
        Ok(Room::Busy) => {
            // Busy: remove the leases and the mutex node, confirmed, before answering.
            return match remove(session, &ours.paths(&leases), &mutex_path).await {
                Ok(()) => {
                    cleanup.disarm();
                    Ok(Attempt::Done(None))
                }
                Err(error) => fail(error),
            };
        }
        Ok(Room::Refused(refusal)) => {
            let ours = ours.paths(&leases);
            let mut paths: Vec<&str> = ours.iter().map(String::as_str).collect();
            paths.push(&mutex_path);
            return match refuse(session, &paths, refusal, name, cleanup).await {
                Ok(conflict) => Err(conflict),
                Err(error) => fail(error),
            };
        }
        Err(error) => return fail(error),
    }

    // 3. Let the next acquisition in. The cleanup stays armed until the hold is handed over:
    // if this future is dropped before, the leases go too.
    release_mutex(session, &mutex_path).await;
    let token = match ours.czxid {
        Some(czxid) => czxid,
        None => match first_czxid(session, &leases, &ours.names).await {
            Ok(czxid) => czxid,
            Err(error) => return fail(error),
        },
    };
    cleanup.disarm();
    Ok(Attempt::Done(Some(grant(
        env,
        session.clone(),
        name,
        ours.paths(&leases),
        token,
        HoldKind::Plain,
    ))))
}

/// The lease nodes of one acquisition.
struct Leases {
    names: Vec<String>,
    /// The creation zxid, when the server reported it.
    czxid: Option<i64>,
}

impl Leases {
    fn paths(&self, dir: &str) -> Vec<String> {
        self.names.iter().map(|n| join(dir, n)).collect()
    }
}

/// Creates `count` lease nodes in one transaction; after a lost reply, adopts them if the
/// transaction happened (it is atomic: all or none).
async fn create_leases(
    env: &Env,
    session: &Session,
    leases: &str,
    uuid: &Uuid,
    count: u32,
) -> std::result::Result<Leases, zk::Error> {
    let limit = session.request_limit();
    let prefix = join(leases, &node_prefix(uuid, Marker::Lease));
    let options = env.acl.options(zk::CreateMode::EphemeralSequential);
    for _ in 0..4 {
        let client = session.client()?;
        let mut multi = client.new_multi_writer();
        for _ in 0..count {
            multi.add_create(&prefix, &[], &options)?;
        }
        let committed = limited(limit, async {
            multi.commit().await.map_err(zk::Error::from)
        })
        .await;
        match committed {
            Ok(results) => {
                let mut names = Vec::with_capacity(results.len());
                let mut czxid = None;
                for result in results {
                    if let zk::MultiWriteResult::Create { path, stat } = result {
                        if czxid.is_none() && !stat.is_invalid() {
                            czxid = Some(stat.czxid);
                        }
                        names.push(path.rsplit('/').next().unwrap_or(&path).to_owned());
                    }
                }
                return Ok(Leases { names, czxid });
            }
            Err(zk::Error::NoNode) => ensure_dir(&client, leases, env.acl, limit).await?,
            Err(error) if outcome_unknown(&error) => {
                let ours = protection(uuid);
                let children = read(session, |client| async move {
                    client.sync(leases).await?;
                    client.list_children(leases).await
                })
                .await?;
                let names: Vec<String> = children
                    .into_iter()
                    .filter(|c| c.starts_with(&ours))
                    .collect();
                if !names.is_empty() {
                    return Ok(Leases { names, czxid: None });
                }
            }
            Err(error) => return Err(error),
        }
    }
    Err(zk::Error::ConnectionLoss)
}

/// How waiting for room among the leases ended.
enum Room {
    /// All our lease nodes fit within the limit.
    Granted,
    /// The session was retired or our nodes vanished.
    Again,
    /// No room, and the caller did not want to wait.
    Busy,
    /// A lease node no lock client wrote takes up room for ever.
    Refused(Refusal),
}

/// Waits until all lease nodes fit within `limit` (with `wait` false: looks once).
async fn wait_for_room(
    session: &Session,
    leases: &str,
    ours: &[String],
    limit: u32,
    wait: bool,
) -> std::result::Result<Room, zk::Error> {
    loop {
        let (children, watcher) = read(session, |client| async move {
            client.list_and_watch_children(leases).await
        })
        .await?;
        let present = sorted(&children, &[Marker::Lease]);
        if !ours.iter().all(|n| present.iter().any(|p| &p.name == n)) {
            return Ok(Room::Again);
        }
        if present.len() <= limit as usize {
            return Ok(Room::Granted);
        }
        // No room: unless what takes it is foreign (persistent), which would never go away.
        let others: Vec<String> = present
            .iter()
            .filter(|p| !ours.contains(&p.name))
            .map(|p| join(leases, &p.name))
            .collect();
        if let Some(refusal) = foreign_lease(session, &others).await? {
            return Ok(Room::Refused(refusal));
        }
        if !wait {
            return Ok(Room::Busy);
        }
        tokio::select! {
            _ = watcher.changed() => {}
            _ = session.retired() => return Ok(Room::Again),
        }
    }
}

/// The first of the lease nodes `paths` that is persistent, as a refusal (requests pipelined).
async fn foreign_lease(
    session: &Session,
    paths: &[String],
) -> std::result::Result<Option<Refusal>, zk::Error> {
    let stats = stats(session, paths).await?;
    Ok(paths
        .iter()
        .zip(stats)
        .find_map(|(path, stat)| stat.and_then(|stat| foreign_queue_node(path, &stat))))
}

/// Deletes the leases and the mutex node of a busy one-shot attempt, confirmed.
async fn remove(
    session: &Session,
    leases: &[String],
    mutex: &str,
) -> std::result::Result<(), zk::Error> {
    let paths: Vec<&str> = leases
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(mutex))
        .collect();
    delete_all(session, &paths).await
}

/// Deletes the mutex node; if that cannot be confirmed, keeps trying in the background.
async fn release_mutex(session: &Arc<Session>, mutex: &str) {
    if let Err(error) = delete_all(session, &[mutex]).await {
        tracing::warn!(%error, node = mutex, "could not release the semaphore's mutex node; retrying in the background");
        delete_in_background(session.clone(), vec![mutex.to_owned()]);
    }
}

async fn first_czxid(
    session: &Session,
    leases: &str,
    ours: &[String],
) -> std::result::Result<i64, zk::Error> {
    let first = join(leases, ours.first().ok_or(zk::Error::NoNode)?);
    let stat = read(session, |client| {
        let first = first.clone();
        async move { client.check_stat(&first).await }
    })
    .await?;
    stat.map(|stat| stat.czxid).ok_or(zk::Error::NoNode)
}

/// A mutex or read-write lock node in the lock folder `dir`, if any.
async fn other_kind_in(
    session: &Session,
    dir: &str,
) -> std::result::Result<Option<Refusal>, zk::Error> {
    let children = read(session, |client| async move {
        match client.list_children(dir).await {
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            other => other,
        }
    })
    .await?;
    Ok(other_queue_kind(dir, &children, Kind::Semaphore))
}

/// Removes our nodes `paths`, confirmed, and turns the refusal into the error to answer with.
async fn refuse(
    session: &Session,
    paths: &[&str],
    refusal: Refusal,
    name: &LockName,
    cleanup: CancelCleanup,
) -> std::result::Result<Error, zk::Error> {
    delete_all(session, paths).await?;
    cleanup.disarm();
    Ok(refusal.into_error(name))
}

/// Checks the limit recorded in the data of the `leases` folder against `limit`, recording
/// ours if none is (or if no permit is held under the recorded one). Call while holding the
/// semaphore's mutex. `Some` refusal for a different limit or foreign data.
async fn agree_on_limit(
    env: &Env,
    session: &Session,
    leases: &str,
    limit: u32,
) -> std::result::Result<Option<Refusal>, zk::Error> {
    for _ in 0..4 {
        let fetched = read(
            session,
            |client| async move { client.get_data(leases).await },
        )
        .await;
        let (data, stat) = match fetched {
            Ok(found) => found,
            Err(zk::Error::NoNode) => {
                let client = session.client()?;
                ensure_dir(&client, leases, env.acl, session.request_limit()).await?;
                continue;
            }
            Err(error) => return Err(error),
        };
        let recorded = match recorded_limit(leases, &data) {
            Ok(recorded) => recorded,
            Err(refusal) => return Ok(Some(refusal)),
        };
        match recorded {
            Some(recorded) if recorded == limit => return Ok(None),
            Some(recorded) if stat.num_children > 0 => {
                return Ok(Some(Refusal::Limit {
                    recorded,
                    asked: limit,
                    node: leases.to_owned(),
                }))
            }
            // Nothing recorded, or nobody holds permits under the old limit: record ours.
            _ => {}
        }
        let record = limit_record(limit);
        let written = read(session, |client| {
            let record = record.clone();
            async move {
                client
                    .set_data(leases, &record, Some(stat.version))
                    .await
                    .map(|_| ())
            }
        })
        .await;
        match written {
            Ok(()) => return Ok(None),
            // Written meanwhile (by a client that does not take the mutex): look again.
            Err(zk::Error::BadVersion) | Err(zk::Error::NoNode) => continue,
            Err(error) => return Err(error),
        }
    }
    Err(zk::Error::ConnectionLoss)
}
