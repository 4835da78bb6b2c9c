//! Elections, in the layout of Go's `concurrency.Election` (so `etcdctl elect` and Go services
//! see our leader and we see theirs):
//!
//! - a candidate puts `NAME/<lease hex>` with its proposal as value, under its lease, if the key
//!   is absent; that is a mutex acquisition ([`crate::acquire`]) whose key carries the value
//!   from its create on, so the queue, the waiting lease, cancellation, `lost()` and the hold's
//!   monitor are the mutex's;
//! - the candidate with the lowest create revision under `NAME/` leads; each other one waits for
//!   the deletion of the key just before its own, so succession is first come, first served;
//! - the term is the leader key's create revision (the mutex's fencing token);
//! - `proclaim` puts a new value on the leader's key if it still has the leader's create
//!   revision (Go's `Proclaim`), see [`crate::hold`];
//! - [`leader`] reads the prefix sorted by create revision, limit 1 (Go's `Leader`);
//!   [`leader_changed`] follows the leader's key with a watch (Go's `Observe` follows the same
//!   key) and reads again on each change.
//!
//! An election and a mutex of one name share their keys in Go's recipes; here the value tells
//! them apart (a mutex key is empty, a proposal never is), and one name has one kind: a campaign
//! on a name held as a mutex, or a mutex on a name with a candidate, gives `Conflict`.

use std::time::Duration;

use etcd_client::{GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use tokio::time::Instant;
use tumbler_core::{Error, LeaderInfo, LockName, Result};

use crate::error_map::BACKEND;
use crate::instance::{range_at, revision_of, Instance};
use crate::queue::Queue;
use crate::watch::{Note, Target};

/// The leader of election `name` and the revision it was read at.
///
/// One read of the oldest key under `NAME/` (Go's `Leader`); only when that key is not a
/// contender of the name (a nested lock's, a revocation marker) are all keys read, to find the
/// oldest contender. `Conflict` for a foreign key or another kind of lock in the oldest place.
pub(crate) async fn read(
    inner: &Instance,
    name: &LockName,
    deadline: Instant,
) -> Result<(Option<LeaderInfo>, i64)> {
    let prefix = inner.layout.lock_prefix(name);
    let oldest = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1);
    let what = format!("leader read of election {name}");
    let txn = Txn::new().and_then([TxnOp::get(prefix.as_str(), Some(oldest))]);
    let response = inner.txn_until(&what, txn, deadline).await?;
    let queue = Queue::read(name, &prefix, range_at(&response, 0))?;
    if !queue.is_empty() || range_at(&response, 0).is_empty() {
        return Ok((queue.leader()?, revision_of(&response)));
    }
    let all = GetOptions::new().with_prefix();
    let txn = Txn::new().and_then([TxnOp::get(prefix.as_str(), Some(all))]);
    let response = inner.txn_until(&what, txn, deadline).await?;
    let queue = Queue::read(name, &prefix, range_at(&response, 0))?;
    Ok((queue.leader()?, revision_of(&response)))
}

/// Waits until the leader of `name` differs from `seen`, and returns it.
///
/// Reads the leader, then follows what can change it with a watcher (shared with the
/// instance's other watchers of that target): the leader's key (a proclaim is a put, a
/// resignation or an expiry a deletion), or with nobody leading, the puts under `NAME/`. A key
/// created later never has a lower create revision, so nothing else can change the leader.
/// Each change, and each new watcher created after the last read, leads to another read.
///
/// A watch says nothing while the store is silent, so a read also runs when nothing has been
/// heard for half the request timeout, each with half the request timeout: an unreachable
/// store gives `Connection` or `Timeout` within the request timeout of going silent. Cancel
/// safe: the watcher is all there is to drop.
pub(crate) async fn leader_changed(
    inner: &Instance,
    name: &LockName,
    seen: Option<&LeaderInfo>,
) -> Result<Option<LeaderInfo>> {
    let half = (inner.request_timeout / 2).max(Duration::from_millis(250));
    let prefix = inner.layout.lock_prefix(name);
    let mut watch: Option<(Target, crate::shared_watchers::Subscription)> = None;
    loop {
        let (leader, read_at) = read(inner, name, Instant::now() + half).await?;
        if leader.as_ref() != seen {
            return Ok(leader);
        }
        let target = match &leader {
            Some(leader) => Target::changes_of(leader.id.as_bytes()),
            None => Target::changes_under(&prefix),
        };
        let kept = match watch.take() {
            Some((followed, subscription)) if followed == target => (followed, subscription),
            _ => {
                let subscription = inner.watches.subscribe(target.clone(), Duration::ZERO);
                (target, subscription)
            }
        };
        let subscription = &mut watch.insert(kept).1;
        // Wait for a reason to read again.
        let mut quiet_until = Instant::now() + half;
        loop {
            let note = tokio::select! {
                note = subscription.next() => note,
                _ = tokio::time::sleep_until(quiet_until) => break,
            };
            match note {
                None => return Err(Error::Closed { backend: BACKEND }),
                // The watcher misses nothing after `revision`: if that is after our read,
                // something may have changed in between.
                Some(Note::Created { revision }) if revision > read_at => break,
                Some(Note::Put { revision, .. } | Note::Deleted { revision, .. })
                    if revision > read_at =>
                {
                    break
                }
                // The stream broke: the read says whether the store is still there.
                Some(Note::Reset | Note::Canceled(_)) => break,
                Some(_) => quiet_until = Instant::now() + half,
            }
        }
    }
}
