//! Acquisition: put our key in the lock's queue, then wait for our turn.
//!
//! Round trips: an uncontended acquisition is one transaction (create the key if absent, and
//! read the first contender, as Go's Mutex does). A waiter reads its predecessor, watches it
//! from the current revision (a synced watcher, no 100 ms catch-up delay), and reads again
//! only when the predecessor goes; the hand-off is then one delete event plus one read.

use std::sync::Arc;

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnResponse,
};
use lockcore::cleanup::CancelCleanup;
use lockcore::{Error, Hold, LockKind, LockName, Result};
use tokio::sync::watch;

use crate::errors::{self, BACKEND};
use crate::hold;
use crate::inner::{malformed, range_at, revision_of, Inner};
use crate::keys::{parse_permits, KeyRole, DOWNGRADED};
use crate::own_key::KeyWatch;
use crate::session::Session;
use crate::watch::Note;

/// What an acquisition wants, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Exclusive,
    Read,
    Write,
    Permits { count: u32, limit: u32 },
}

impl Want {
    fn of(kind: LockKind) -> Result<Self> {
        Ok(match kind {
            LockKind::Exclusive => Want::Exclusive,
            LockKind::Read => Want::Read,
            LockKind::Write => Want::Write,
            LockKind::Permits { limit, count } => {
                if limit == 0 || count == 0 || count > limit {
                    return Err(Error::invalid(
                        "permits",
                        format!("{count} of {limit}: ask for 1 to {limit} permits of a semaphore with at least 1"),
                    ));
                }
                Want::Permits { count, limit }
            }
        })
    }

    fn role(self) -> KeyRole {
        match self {
            Want::Exclusive => KeyRole::Mutex,
            Want::Read => KeyRole::Read,
            Want::Write => KeyRole::Write,
            Want::Permits { .. } => KeyRole::Permits,
        }
    }

    fn value(self) -> String {
        match self {
            Want::Permits { count, limit } => crate::keys::permits_value(count, limit),
            _ => String::new(),
        }
    }
}

/// Acquires a hold as lockcore's `acquire` asks.
pub(crate) async fn acquire(
    inner: &Arc<Inner>,
    name: LockName,
    kind: LockKind,
    wait: bool,
) -> Result<Option<Hold>> {
    let want = Want::of(kind)?;
    loop {
        let session = inner.leases.live(inner.request_timeout).await?;
        match attempt(inner, &session, &name, kind, want, wait).await? {
            Outcome::Granted(hold) => return Ok(Some(hold)),
            Outcome::Busy => return Ok(None),
            Outcome::Requeue if wait => continue,
            Outcome::Requeue => {
                return Err(Error::connection(
                    BACKEND,
                    inner.addr.clone(),
                    "the backend's lease was lost during the attempt; try again",
                ))
            }
        }
    }
}

enum Outcome {
    Granted(Hold),
    Busy,
    /// Our queue entry is gone (lease lost, or deleted by someone): start over.
    Requeue,
}

/// One pass with one lease: enqueue, wait, and hand out the hold.
async fn attempt(
    inner: &Arc<Inner>,
    session: &Arc<Session>,
    name: &LockName,
    kind: LockKind,
    want: Want,
    wait: bool,
) -> Result<Outcome> {
    let lease = session.lease();
    let (key, reservation) = match want {
        Want::Exclusive => {
            let (key, reservation) = inner.reserve_mutex_key(name, lease);
            (key, Some(reservation))
        }
        _ => {
            let n = inner.next_number();
            (inner.layout.unique_key(name, want.role(), lease, n), None)
        }
    };
    // Follow the lock's changes before creating our key: then every change after the create is
    // seen, and neither the wait nor the hold's monitor usually needs an extra read.
    let mut own = KeyWatch::start(&inner.names, &inner.layout.lock_prefix(name), &key);
    let mut contender = Contender {
        inner,
        name,
        want,
        key,
        revision: 0,
    };
    // The create request runs in its own task: a cancelled acquisition cannot stop a request
    // already on its way, so its cleanup waits for the request's end before deleting the key
    // (deleting first would let a late create leave the key behind for good).
    let (finished, finished_rx) = watch::channel(false);
    let request = {
        let (inner, session) = (inner.clone(), session.clone());
        let txn = contender.enqueue_txn(session.lease());
        let what = format!("enqueue on {name}");
        tokio::spawn(async move {
            let outcome = if wait {
                inner.txn_while_alive(&what, txn, &session).await
            } else {
                inner.txn(&what, txn).await.map(Some)
            };
            finished.send_replace(true);
            outcome
        })
    };
    // From here on, a cancelled or failed acquisition must not leave the key behind.
    let cleanup = {
        let (inner, session, key, reservation) = (
            inner.clone(),
            session.clone(),
            contender.key.clone(),
            reservation.clone(),
        );
        let mut finished = finished_rx;
        CancelCleanup::new("delete etcd queue key", async move {
            let _ = finished.wait_for(|done| *done).await;
            inner.remove_key(&session, &key, 0).await;
            drop(reservation);
        })
    };
    let outcome = request
        .await
        .map_err(|e| Error::backend(BACKEND, format!("the enqueue request failed: {e}")))?;
    let response = match outcome {
        Ok(Some(response)) => response,
        Ok(None) => return Ok(Outcome::Requeue),
        Err(error) if errors::says_lease_gone(&error) => {
            session.kill(lockcore::LostReason::SessionExpired);
            return Ok(Outcome::Requeue);
        }
        Err(error) => return Err(error),
    };
    let granted = contender.enqueued(&response)?;
    let mut granted_at = revision_of(&response);
    if !granted {
        if !wait {
            contender.leave().await?;
            cleanup.disarm();
            drop(reservation);
            return Ok(Outcome::Busy);
        }
        match contender.wait_turn(session, &mut own).await? {
            Turn::Granted(at) => granted_at = at,
            Turn::Requeue => return Ok(Outcome::Requeue),
        }
    }
    if !session.is_alive() {
        return Ok(Outcome::Requeue);
    }
    tracing::debug!(key = %contender.key, revision = contender.revision, waited = !granted, "etcd lock granted");
    let hold = hold::grant(hold::Granted {
        inner: inner.clone(),
        session: session.clone(),
        name: name.clone(),
        kind,
        key: contender.key,
        revision: contender.revision,
        granted_at,
        own,
        reservation,
    });
    cleanup.disarm();
    Ok(Outcome::Granted(hold))
}

enum Turn {
    /// Granted as of this revision.
    Granted(i64),
    Requeue,
}

/// What stands between a contender and the lock.
#[derive(Clone, PartialEq, Eq)]
enum Blocker {
    /// The key just before ours that we must outlive.
    Key(Vec<u8>),
    /// A semaphore's contenders: any deletion may free enough permits.
    Range(String),
}

impl std::fmt::Debug for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocker::Key(key) => write!(f, "key {}", String::from_utf8_lossy(key)),
            Blocker::Range(prefix) => write!(f, "permits under {prefix}"),
        }
    }
}

impl Blocker {
    /// Whether the deletion of `key` may let us in.
    fn is_freed_by(&self, key: &[u8]) -> bool {
        match self {
            Blocker::Key(blocker) => key == blocker.as_slice(),
            Blocker::Range(prefix) => key.starts_with(prefix.as_bytes()),
        }
    }
}

enum Verdict {
    Granted,
    Blocked(Blocker),
    /// Our own key is gone.
    Gone,
}

/// Our key in a lock's queue.
struct Contender<'a> {
    inner: &'a Inner,
    name: &'a LockName,
    want: Want,
    key: String,
    /// The create revision of our key: our place in the queue and the fencing token.
    revision: i64,
}

impl<'a> Contender<'a> {
    /// The transaction that creates our key (or finds it, if an earlier try of this very
    /// request created it) and reads enough of the queue to tell whether we hold the lock at
    /// once.
    fn enqueue_txn(&self, lease: i64) -> Txn {
        let put = TxnOp::put(
            self.key.as_str(),
            self.want.value(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let query = self.first_query();
        Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([put, query.clone()])
            .or_else([TxnOp::get(self.key.as_str(), None), query])
    }

    /// Reads the enqueue transaction's answer: our create revision, and whether we hold.
    fn enqueued(&mut self, response: &TxnResponse) -> Result<bool> {
        self.revision = if response.succeeded() {
            revision_of(response)
        } else {
            range_at(response, 0)
                .first()
                .map(KeyValue::create_revision)
                .ok_or_else(|| malformed("the enqueue transaction"))?
        };
        let queue = range_at(response, 1);
        self.first_verdict(&queue)
    }

    /// The read of the enqueue transaction (our create revision is not known yet).
    fn first_query(&self) -> TxnOp {
        let layout = &self.inner.layout;
        let by_creation = |limit| {
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(limit)
        };
        match self.want {
            // The first contender: Go's Mutex takes the same one-round-trip path.
            Want::Exclusive | Want::Write => {
                TxnOp::get(layout.lock_prefix(self.name), Some(by_creation(1)))
            }
            // The first two writers (only the first can be a downgraded one).
            Want::Read => TxnOp::get(layout.writers_prefix(self.name), Some(by_creation(2))),
            Want::Permits { .. } => {
                TxnOp::get(layout.permits_prefix(self.name), Some(by_creation(0)))
            }
        }
    }

    fn first_verdict(&self, queue: &[KeyValue]) -> Result<bool> {
        match self.want {
            Want::Exclusive | Want::Write => Ok(queue
                .first()
                .is_none_or(|first| first.create_revision() == self.revision)),
            Want::Read => Ok(!queue
                .iter()
                .any(|w| w.create_revision() < self.revision && w.value() != DOWNGRADED)),
            Want::Permits { count, limit } => self.permits_fit(queue, count, limit),
        }
    }

    /// Whether `count` permits fit after every earlier contender in `queue`.
    fn permits_fit(&self, queue: &[KeyValue], count: u32, limit: u32) -> Result<bool> {
        let mut taken = u64::from(count);
        for earlier in queue
            .iter()
            .filter(|kv| kv.create_revision() < self.revision)
        {
            match parse_permits(earlier.value()) {
                Some((_, theirs)) if theirs != limit => {
                    return Err(Error::Conflict {
                        name: self.name.clone(),
                        problem: format!(
                            "the semaphore is in use with a limit of {theirs} permits, not {limit}; use one limit everywhere"
                        ),
                    })
                }
                Some((held, _)) => taken += u64::from(held),
                // A key this layout did not write: it can only block.
                None => taken += u64::from(limit),
            }
        }
        Ok(taken <= u64::from(limit))
    }

    /// Leaves the queue after a busy one-shot attempt.
    async fn leave(&self) -> Result<()> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                self.revision,
            )])
            .and_then([TxnOp::delete(self.key.as_str(), None)]);
        self.inner
            .txn(&format!("leaving the queue of {}", self.name), txn)
            .await
            .map(|_| ())
    }

    /// Waits until we hold the lock, or our key is gone.
    async fn wait_turn(&self, session: &Session, own: &mut KeyWatch) -> Result<Turn> {
        loop {
            let Some((verdict, checked_at)) = self.check(session).await? else {
                return Ok(Turn::Requeue);
            };
            let blocker = match verdict {
                Verdict::Granted => {
                    tracing::debug!(key = %self.key, checked_at, "no contender before ours");
                    return Ok(Turn::Granted(checked_at));
                }
                Verdict::Gone => return Ok(Turn::Requeue),
                Verdict::Blocked(blocker) => blocker,
            };
            tracing::debug!(key = %self.key, checked_at, ?blocker, "waiting");
            // Wait for a reason to look again. The watcher follows the lock since before our
            // read; if it was (re)created after the read, it may have missed a change between.
            loop {
                tokio::select! {
                    note = own.next() => match note {
                        None => return Err(Error::Closed { backend: BACKEND }),
                        Some(Note::Created { revision }) if revision > checked_at => break,
                        Some(Note::Deleted { key, revision }) if revision > checked_at => {
                            if own.is_own(&key) {
                                return Ok(Turn::Requeue);
                            }
                            if blocker.is_freed_by(&key) {
                                break;
                            }
                        }
                        Some(_) => {}
                    },
                    _ = session.invalid() => return Ok(Turn::Requeue),
                }
            }
        }
    }

    /// Reads our key and what may block it, in one transaction. `None` if the lease died while
    /// the store was unreachable.
    async fn check(&self, session: &Session) -> Result<Option<(Verdict, i64)>> {
        let txn = Txn::new().and_then([TxnOp::get(self.key.as_str(), None), self.blocker_query()]);
        let what = format!("queue check on {}", self.name);
        let Some(response) = self.inner.txn_while_alive(&what, txn, session).await? else {
            return Ok(None);
        };
        let at = revision_of(&response);
        let ours = range_at(&response, 0);
        if ours.first().map(KeyValue::create_revision) != Some(self.revision) {
            return Ok(Some((Verdict::Gone, at)));
        }
        let before = range_at(&response, 1);
        let layout = &self.inner.layout;
        let verdict = match self.want {
            Want::Exclusive | Want::Write => match before.first() {
                None => Verdict::Granted,
                Some(kv) => Verdict::Blocked(Blocker::Key(kv.key().to_vec())),
            },
            Want::Read => match before.iter().find(|w| w.value() != DOWNGRADED) {
                None => Verdict::Granted,
                Some(kv) => Verdict::Blocked(Blocker::Key(kv.key().to_vec())),
            },
            Want::Permits { count, limit } => {
                if self.permits_fit(&before, count, limit)? {
                    Verdict::Granted
                } else {
                    Verdict::Blocked(Blocker::Range(layout.permits_prefix(self.name)))
                }
            }
        };
        Ok(Some((verdict, at)))
    }

    /// The contenders before ours that matter: the last one (mutex, writer), the last two
    /// writers (reader), or all (semaphore).
    fn blocker_query(&self) -> TxnOp {
        let layout = &self.inner.layout;
        let before = |limit| {
            GetOptions::new()
                .with_prefix()
                .with_max_create_revision(self.revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(limit)
        };
        match self.want {
            Want::Exclusive | Want::Write => {
                TxnOp::get(layout.lock_prefix(self.name), Some(before(1)))
            }
            Want::Read => TxnOp::get(layout.writers_prefix(self.name), Some(before(2))),
            Want::Permits { .. } => TxnOp::get(layout.permits_prefix(self.name), Some(before(0))),
        }
    }
}
