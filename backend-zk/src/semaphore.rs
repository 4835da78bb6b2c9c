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

use lockcore::cleanup::CancelCleanup;
use lockcore::{Error, Hold, LockName, Result};
use uuid::Uuid;
use zookeeper_client as zk;

use crate::config::MAX_PERMITS_PER_ACQUIRE;
use crate::error::{convert, limited, outcome_unknown, session_gone};
use crate::hold::{grant, Env};
use crate::layout::{
    join, node_prefix, protection, sorted, Marker, Role, SEMAPHORE_LEASES, SEMAPHORE_LOCKS,
};
use crate::nodes::{
    create_sequential, delete_all, delete_by_uuid, delete_in_background, ensure_dir, read,
};
use crate::queue::{wait_turn, Attempt, Turn};
use crate::session::Session;

/// Checks a permit request before anything is sent.
pub(crate) fn check_permits(name: &LockName, limit: u32, count: u32) -> Result<()> {
    if count == 0 || count > limit {
        return Err(Error::invalid(
            "permits",
            format!("asked for {count} permits of semaphore {name} whose limit is {limit}; ask for 1..={limit}"),
        ));
    }
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
    let what = || format!("acquire of {count} permits of {name}");
    let fail = |error: zk::Error| -> Result<Attempt<Option<Hold>>> {
        if session_gone(&error) {
            Ok(Attempt::Again)
        } else {
            Err(convert(error, &env.addr, &what()))
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
        &uuid,
        env.acl,
    )
    .await
    {
        Ok(created) => created,
        Err(error) => return fail(error),
    };
    let mutex_path = join(&locks, &mutex.name);
    match wait_turn(session, &locks, mutex, Role::Mutex, wait).await {
        Ok(Turn::Holds) => {}
        Ok(Turn::Busy) => {
            cleanup.disarm();
            return Ok(Attempt::Done(None));
        }
        Ok(Turn::Again) => return Ok(Attempt::Again),
        Err(error) => return fail(error),
    }

    // 2. All our lease nodes at once, then wait until they fit within the limit.
    let ours = match create_leases(env, session, &leases, &uuid, count).await {
        Ok(ours) => ours,
        Err(error) => return fail(error),
    };
    let granted = match wait_for_room(session, &leases, &ours.names, limit, wait).await {
        Ok(Some(granted)) => granted,
        Ok(None) => {
            // Busy: remove the leases and the mutex node, confirmed, before answering.
            return match remove(session, &ours.paths(&leases), &mutex_path).await {
                Ok(()) => {
                    cleanup.disarm();
                    Ok(Attempt::Done(None))
                }
                Err(error) => fail(error),
            };
        }
        Err(error) => return fail(error),
    };
    if !granted {
        return Ok(Attempt::Again);
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
        None,
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

/// Waits until all lease nodes fit within `limit`: `Some(true)` granted, `Some(false)` the
/// session was retired or our nodes vanished, `None` busy with `wait` false.
async fn wait_for_room(
    session: &Session,
    leases: &str,
    ours: &[String],
    limit: u32,
    wait: bool,
) -> std::result::Result<Option<bool>, zk::Error> {
    loop {
        let (children, watcher) = read(session, |client| async move {
            client.list_and_watch_children(leases).await
        })
        .await?;
        let present = sorted(&children, &[Marker::Lease]);
        if !ours.iter().all(|n| present.iter().any(|p| &p.name == n)) {
            return Ok(Some(false));
        }
        if present.len() <= limit as usize {
            return Ok(Some(true));
        }
        if !wait {
            return Ok(None);
        }
        tokio::select! {
            _ = watcher.changed() => {}
            _ = session.retired() => return Ok(Some(false)),
        }
    }
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
