//! Creating and removing protected lock nodes: ACLs, parent folders, adoption of our own node
//! after a lost create reply, and cleanup by uuid after a cancelled acquisition.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use uuid::Uuid;
use zookeeper_client as zk;

use tumbler_core::retry::{retry, Backoff};

use crate::error::{limited, outcome_unknown, session_gone, BACKEND};
use crate::layout::{join, protection};
use crate::session::Session;

/// Every permission for the creator's credentials, READ for everyone else.
static SECURE_ACL: [zk::Acl; 2] = [
    zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
    zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
];

/// How many times a create is retried after a missing parent or a lost reply.
const CREATE_ROUNDS: usize = 6;

/// The ACL policy of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AclPolicy {
    /// No credentials: everyone may do everything (ZooKeeper's OPEN_ACL_UNSAFE).
    Open,
    /// Digest credentials: the creator's identity gets every permission, the world only READ.
    Secure,
}

impl AclPolicy {
    pub(crate) fn options(self, mode: zk::CreateMode) -> zk::CreateOptions<'static> {
        match self {
            AclPolicy::Open => mode.with_acls(zk::Acls::anyone_all()),
            AclPolicy::Secure => mode.with_acls(zk::Acls::new(&SECURE_ACL)),
        }
    }
}

/// A node we created (or adopted).
#[derive(Debug, Clone)]
pub(crate) struct Created {
    /// Its name (without the folder).
    pub(crate) name: String,
    /// Its creation zxid: the fencing token.
    pub(crate) czxid: i64,
    /// The folder's children listed right after the create, if that succeeded.
    pub(crate) children: Option<Vec<String>>,
}

/// Creates the lock folder `dir` and its missing parents as container nodes (as Curator's
/// `creatingParentContainersIfNeeded` does; the servers remove them once empty).
///
/// Only `dir` itself gets `acl`; missing parents (the base path, the leading segments of the
/// lock name) are open to everyone, so a client with credentials does not lock other users out
/// of sibling names.
pub(crate) async fn ensure_dir(
    client: &zk::Client,
    dir: &str,
    acl: AclPolicy,
    limit: Duration,
) -> Result<(), zk::Error> {
    let own = acl.options(zk::CreateMode::Container);
    let open = AclPolicy::Open.options(zk::CreateMode::Container);
    limited(limit, async {
        match client.create(dir, &[], &own).await {
            Ok(_) | Err(zk::Error::NodeExists) => return Ok(()),
            Err(zk::Error::NoNode) => {}
            Err(error) => return Err(error),
        }
        if let Some((parent, _)) = dir.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
            client.mkdir(parent, &open).await?;
        }
        match client.create(dir, &[], &own).await {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(error) => Err(error),
        }
    })
    .await
}

/// Runs the idempotent request `request` (a read, or deletes that accept a missing node) on a
/// client of `session`, again after a connection blip while the session lives, within the
/// request time limit in all.
pub(crate) async fn read<T, F, Fut>(session: &Session, request: F) -> Result<T, zk::Error>
where
    F: Fn(zk::Client) -> Fut,
    Fut: Future<Output = Result<T, zk::Error>>,
{
    read_until(session, Instant::now() + session.request_limit(), request).await
}

/// [`read`] with a deadline of the caller's: every retry ends by `deadline`.
pub(crate) async fn read_until<T, F, Fut>(
    session: &Session,
    deadline: Instant,
    request: F,
) -> Result<T, zk::Error>
where
    F: Fn(zk::Client) -> Fut,
    Fut: Future<Output = Result<T, zk::Error>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
    loop {
        let client = session.client()?;
        let sent = Instant::now();
        let left = deadline.saturating_duration_since(sent);
        let outcome = limited(left, request(client)).await;
        match &outcome {
            Err(error) if outcome_unknown(error) => session.doubt(),
            // Any answer of the servers, an error too, says they still vouch for the session.
            _ => session.heard(sent),
        }
        match outcome {
            Err(error) if outcome_unknown(&error) && session.retired_reason().is_none() => {
                let pause = backoff.next_delay();
                if Instant::now() + pause >= deadline {
                    return Err(error);
                }
                tracing::debug!(%error, "read failed on a broken connection; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = session.retired() => return Err(error),
                }
            }
            other => return other,
        }
    }
}

/// The stats of `paths` (`None` for a node that does not exist), requests pipelined, retried
/// like [`read`].
pub(crate) async fn stats(
    session: &Session,
    paths: &[String],
) -> Result<Vec<Option<zk::Stat>>, zk::Error> {
    read(session, |client| async move {
        let requests: Vec<_> = paths.iter().map(|p| client.check_stat(p)).collect();
        let mut stats = Vec::with_capacity(requests.len());
        for request in requests {
            stats.push(request.await?);
        }
        Ok(stats)
    })
    .await
}

/// Deletes `paths` (a node already gone counts as deleted), sending the deletes again after a
/// connection blip while the session lives, within the request time limit in all.
pub(crate) async fn delete_all(session: &Session, paths: &[&str]) -> Result<(), zk::Error> {
    read(session, |client| async move {
        // Every delete is sent before any reply is awaited.
        let requests: Vec<_> = paths.iter().map(|p| client.delete(p, None)).collect();
        for request in requests {
            request.await.or_else(ignore_no_node)?;
        }
        Ok(())
    })
    .await
}

/// Creates the ephemeral sequential node `<dir>/<prefix><seq>` holding `data` and lists `dir`
/// in the same round trip. Creates missing folders; after a lost reply, adopts the node if the create did
/// happen (found by the uuid in its name) and creates it again if it did not.
pub(crate) async fn create_sequential(
    session: &Session,
    dir: &str,
    prefix: &str,
    data: &[u8],
    uuid: &Uuid,
    acl: AclPolicy,
) -> Result<Created, zk::Error> {
    // Every retry below ends by this deadline: one request timeout in all.
    let deadline = Instant::now() + session.request_limit();
    let path = join(dir, prefix);
    let options = acl.options(zk::CreateMode::EphemeralSequential);
    let mut last = zk::Error::ConnectionLoss;
    // Whether an earlier create may have happened although its reply was lost.
    let mut maybe_created = false;
    for _ in 0..CREATE_ROUNDS {
        if Instant::now() >= deadline {
            break;
        }
        if maybe_created {
            match find_own(session, dir, uuid, deadline).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => maybe_created = false,
                Err(error) if outcome_unknown(&error) => {
                    last = error;
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
        let client = session.client()?;
        // Both requests are sent now, in this order; the listing sees our node.
        let sent = Instant::now();
        let create = client.create(&path, data, &options);
        let list = client.list_children(dir);
        let outcome = tokio::time::timeout_at(deadline, async { (create.await, list.await) }).await;
        let (created, listed) =
            outcome.unwrap_or((Err(zk::Error::Timeout), Err(zk::Error::Timeout)));
        match &created {
            Err(error) if outcome_unknown(error) => session.doubt(),
            _ => session.heard(sent),
        }
        match created {
            Ok((stat, seq)) => {
                return Ok(Created {
                    name: format!("{prefix}{seq}"),
                    czxid: stat.czxid,
                    children: listed.ok(),
                })
            }
            Err(zk::Error::NoNode) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match ensure_dir(&client, dir, acl, left).await {
                    Ok(()) => {}
                    Err(error) if outcome_unknown(&error) => last = error,
                    Err(error) => return Err(error),
                }
            }
            Err(error) if outcome_unknown(&error) => {
                tracing::info!(%error, dir, "create reply lost; looking for our node");
                maybe_created = true;
                last = error;
            }
            Err(error) => return Err(error),
        }
    }
    // If a create may still have happened, the caller's cleanup removes it by uuid.
    Err(last)
}

/// Finds the node of `uuid` in `dir` after a lost reply (after a `sync`, so a create that
/// reached the leader before the connection broke is visible).
pub(crate) async fn find_own(
    session: &Session,
    dir: &str,
    uuid: &Uuid,
    deadline: Instant,
) -> Result<Option<Created>, zk::Error> {
    let ours = protection(uuid);
    let children = read_until(session, deadline, |client| async move {
        client.sync(dir).await.or_else(ignore_no_node)?;
        match client.list_children(dir).await {
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            other => other,
        }
    })
    .await?;
    let Some(name) = children.iter().find(|c| c.starts_with(&ours)).cloned() else {
        return Ok(None);
    };
    let path = join(dir, &name);
    let stat = read_until(session, deadline, |client| {
        let path = path.clone();
        async move { client.check_stat(&path).await }
    })
    .await?;
    Ok(stat.map(|stat| Created {
        name,
        czxid: stat.czxid,
        children: Some(children),
    }))
}

/// Deletes every node of the acquisition `uuid` in `dirs`, retrying until done or until the
/// session ends (which deletes them anyway). Requests on one session run in order, so this also
/// removes a node whose create was still in flight when the acquisition was cancelled.
pub(crate) async fn delete_by_uuid(session: Arc<Session>, dirs: Vec<String>, uuid: Uuid) {
    let ours = protection(&uuid);
    let done = in_background(|| async {
        let client = session.client().map_err(background)?;
        for dir in &dirs {
            delete_matching(&client, dir, &ours)
                .await
                .map_err(background)?;
        }
        Ok(())
    })
    .await;
    if let Err(error) = done {
        tracing::debug!(%error, "cleanup of a cancelled acquisition ended with its session");
    }
}

/// Retries `op` in the background until it succeeds or its session is gone (whose end deletes
/// every ephemeral node anyway).
async fn in_background<F, Fut>(op: F) -> tumbler_core::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = tumbler_core::Result<()>>,
{
    retry(
        Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
        None,
        op,
    )
    .await
}

/// A background request's error for [`retry`]: a session that is gone ends the retries, any
/// other failure is retried.
fn background(error: zk::Error) -> tumbler_core::Error {
    if session_gone(&error) {
        tumbler_core::Error::Closed { backend: BACKEND }
    } else {
        tumbler_core::Error::connection(BACKEND, "", error)
    }
}

async fn delete_matching(client: &zk::Client, dir: &str, prefix: &str) -> Result<(), zk::Error> {
    client.sync(dir).await.or_else(ignore_no_node)?;
    let children = match client.list_children(dir).await {
        Err(zk::Error::NoNode) => return Ok(()),
        other => other?,
    };
    for child in children.iter().filter(|c| c.starts_with(prefix)) {
        client
            .delete(&join(dir, child), None)
            .await
            .or_else(ignore_no_node)?;
        tracing::debug!(node = %join(dir, child), "removed the node of a cancelled acquisition");
    }
    Ok(())
}

fn ignore_no_node(error: zk::Error) -> Result<(), zk::Error> {
    match error {
        zk::Error::NoNode => Ok(()),
        other => Err(other),
    }
}

/// Deletes `paths` (each may already be gone), retrying in the background until confirmed or
/// until the session ends: for holds whose release could not be confirmed.
///
/// Safe to call from any thread, with or without a runtime (drop paths call it): the task runs
/// on the session's runtime.
pub(crate) fn delete_in_background(session: Arc<Session>, paths: Vec<String>) {
    let runs_on = session.clone();
    runs_on.spawn_detached(
        "delete the nodes of an unconfirmed zookeeper release",
        async move {
            let done = in_background(|| async {
                let client = session.client().map_err(background)?;
                for path in &paths {
                    client
                        .delete(path, None)
                        .await
                        .or_else(ignore_no_node)
                        .map_err(background)?;
                }
                Ok(())
            })
            .await;
            if let Err(error) = done {
                tracing::debug!(%error, "background delete ended with its session");
            }
        },
    );
}
