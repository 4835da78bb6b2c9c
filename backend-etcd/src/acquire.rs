//! Acquisition: put our key in the lock's queue, then wait for our turn.
//!
//! **Waiting keys live on a short waiting lease.** A contender's key is attached to the
//! instance's waiting lease (TTL [`crate::lease::WAIT_TTL`], 2 s, kept alive by this
//! instance), not to its hold lease. When the contender is granted, the key is put again with
//! the hold lease: a put on an existing key keeps its create revision, so the queue order and
//! the fencing token stay. A waiter whose process is killed therefore stops blocking the
//! queue once the waiting lease expires: within about 2.5 s (its TTL plus etcd's 500 ms
//! expiry check), whatever the hold TTL. Only a key with nothing under the lock at all is
//! put on the hold lease at once (it is granted in the same transaction).
//!
//! Round trips: an uncontended acquisition is one transaction (create the key if absent, and
//! read the lock's keys, as Go's Mutex does). A waiter reads the queue, watches its blocker
//! from the current revision (a synced watcher, no 100 ms catch-up delay), reads the
//! blocker's key once to cover the moment before that watcher existed, reads the queue again
//! only when the blocker changes, and moves its key to the hold lease when granted.
//!
//! **Who hears of what (the wait set).** Each waiter watches one thing, chosen so that a
//! release is delivered to the waiters it may let in and to nobody else, whatever the number
//! of contenders (as Go's Mutex, which waits for the key with the highest create revision below
//! its own):
//! - a **mutex or writer** waits for the deletion of the key just before its own. It holds
//!   exactly when no key is before it, so only that key's going can change its verdict; when
//!   that key was a waiter that gave up, the next read names the one before it.
//! - a **reader** waits for the deletion of the last writer before it (readers between do not
//!   keep it out). Every reader behind that writer hears of its release, and each of them gets
//!   in by it, so the events stay one per acquisition.
//! - a **semaphore contender** holds when the permits of everyone before it plus its own fit
//!   the limit. If the contender just before it waits too, it cannot get in first (their sums
//!   only grow along the queue), so it waits for that one to be granted (its key is put again
//!   on the hold lease) or to go: one event. Only the first waiter, behind holders alone,
//!   watches the semaphore's folder, since any holder's release may free enough permits: one
//!   event per release. When it gets in, the one behind it hears of the grant and takes its
//!   place.
//!
//! Besides, each contender's own keys and the lock's revocation markers have a lingering
//! watcher per instance ([`crate::key_watch`]), so a release is delivered to its own instance
//! as well: about two events per acquisition of a mutex at any contention (three on a
//! semaphore), where one watcher per name and instance delivered every release to every
//! contender.
//!
//! Cancellation: dropping the future deletes our key in the background (after the create
//! request ended, so a late create cannot leave it behind); a timed-out or cancelled waiter
//! leaves nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnResponse};
use tokio::sync::watch;
use tokio::time::Instant;
use tumbler_core::cleanup::FinishOnDrop;
use tumbler_core::{ConnectionEvent, Error, Hold, LockKind, LockName, Result};

use crate::error_map::{self, BACKEND};
use crate::hold;
use crate::instance::{range_at, revision_of, Instance};
use crate::key_watch::{KeyWatch, Seen};
use crate::keys::prefix_end;
use crate::lease::Lease;
use crate::queue::{Blocker, Queue, Verdict, Want};
use crate::watch::Note;

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
            LockKind::Leader => Want::Leader,
        })
    }
}

/// Acquires a hold as lockcore's `acquire` asks.
///
/// A one-shot attempt (`wait` false) finishes within the request timeout: busy is `Ok(None)`,
/// an unreachable store `Connection` or `Timeout`. A waiting one fails with `Connection` or
/// `Timeout` when a request gets no answer within the request timeout, and with `Conflict`
/// for another kind of lock, another semaphore limit or foreign keys under the name.
///
/// A campaign ([`LockKind::Leader`]) is a mutex acquisition whose key carries `value` (the
/// proposal) from its create on: Go's `concurrency.Election` layout (see [`crate::election`]).
pub(crate) async fn acquire(
    inner: &Arc<Instance>,
    name: LockName,
    kind: LockKind,
    value: Vec<u8>,
    wait: bool,
) -> Result<Option<Hold>> {
    let want = Want::of(kind)?;
    let started = Instant::now();
    // A one-shot attempt has one deadline for all its requests.
    let deadline = (!wait).then(|| started + inner.request_timeout);
    loop {
        let within = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => inner.request_timeout,
        };
        let session = inner.leases.live(within).await?;
        let waiting = inner.waiting.live(within).await?;
        let pass = Pass {
            inner,
            session: &session,
            waiting: &waiting,
            name: &name,
            kind,
            want,
            value: &value,
            deadline,
        };
        match pass.attempt().await? {
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
    /// Our queue entry is gone (a lease lost, or deleted by someone): start over.
    Requeue,
}

/// One pass with one hold lease and one waiting lease.
struct Pass<'a> {
    inner: &'a Arc<Instance>,
    session: &'a Arc<Lease>,
    waiting: &'a Arc<Lease>,
    name: &'a LockName,
    kind: LockKind,
    want: Want,
    /// A campaign's proposal (empty for every other kind).
    value: &'a [u8],
    /// `Some` for a one-shot attempt.
    deadline: Option<Instant>,
}

impl Pass<'_> {
    /// The deadline of the next request.
    fn request_deadline(&self) -> Instant {
        self.deadline
            .unwrap_or_else(|| Instant::now() + self.inner.request_timeout)
    }

    /// The value our key carries (see [`Want::value`]).
    fn key_value(&self) -> Vec<u8> {
        self.want.value(self.value)
    }

    /// Runs one request of the wait; `None` when the hold lease died meanwhile, or the store
    /// says a lease we put a key on is gone (the keepers will have a new one: start over).
    async fn request(&self, what: &str, txn: Txn) -> Result<Option<TxnResponse>> {
        tokio::select! {
            answer = self.inner.txn_until(what, txn, self.request_deadline()) => match answer {
                Err(error) if error_map::says_lease_gone(&error) => Ok(None),
                answer => answer.map(Some),
            },
            _ = self.session.invalid() => Ok(None),
        }
    }

    /// Enqueues, waits, and hands out the hold.
    async fn attempt(&self) -> Result<Outcome> {
        let inner = self.inner;
        let lease = self.session.lease();
        let prefix = inner.layout.lock_prefix(self.name);
        let (key, reservation) = match self.want {
            Want::Exclusive | Want::Leader => {
                let (key, reservation) = inner.reserve_mutex_key(self.name, lease);
                (key, Some(reservation))
            }
            _ => {
                let n = inner.next_number();
                let key = inner
                    .layout
                    .unique_key(self.name, self.want.role(), lease, n);
                let reservation = inner.reserve_key(key.clone());
                (key, Some(reservation))
            }
        };
        // Follow our own keys before creating this one: then its deletion after the create is
        // seen, and (as the watcher usually lingers from an earlier acquisition) neither the
        // wait nor the hold's monitor needs an extra read.
        let mut own = KeyWatch::start(
            &inner.watches,
            &inner.layout.own_prefix(self.name, self.want.role(), lease),
            &inner.layout.revoke_prefix(self.name),
            &key,
        );
        // The create request runs to its end even if the acquisition is cancelled (then in
        // the background): a cancelled acquisition cannot stop a request already on its way,
        // so its cleanup waits for the request's end before deleting the key (deleting first
        // would let a late create leave the key behind). Awaited, it is polled in place.
        let (finished, finished_rx) = watch::channel(Enqueue::Running);
        let request = {
            let inner = inner.clone();
            let abandoned = inner.abandoned_keys(&prefix);
            let txn = enqueue_txn(
                &key,
                &prefix,
                self.key_value(),
                [lease, self.waiting.lease()],
                &abandoned,
            );
            let what = format!("enqueue on {}", self.name);
            let deadline = self.request_deadline();
            let runtime = Some(inner.runtime.clone());
            FinishOnDrop::new("etcd enqueue request", runtime, async move {
                let outcome = inner.txn_until(&what, txn, deadline).await;
                finished.send_replace(if outcome.is_err() {
                    Enqueue::AnswerLost
                } else {
                    Enqueue::Answered
                });
                outcome
            })
        };
        // From here on, a cancelled or failed acquisition must not leave the key behind.
        let cleanup = {
            let (session, key, reservation) =
                (self.session.clone(), key.clone(), reservation.clone());
            let mut finished = finished_rx.clone();
            let (name, waiting) = (self.name.clone(), self.waiting.lease());
            let prefix = prefix.clone();
            let owner = inner.clone();
            LeaveOnDrop::new(
                inner.clone(),
                finished_rx,
                (prefix.clone(), key.clone()),
                async move {
                    // A request dropped unfinished (its runtime gone) counts as answered.
                    let end = finished
                        .wait_for(|end| *end != Enqueue::Running)
                        .await
                        .map_or(Enqueue::Answered, |end| *end);
                    owner.remove_key(&session, &key, 0).await;
                    drop(reservation);
                    if end == Enqueue::AnswerLost && session.is_alive() {
                        let leases = [session.lease(), waiting];
                        if let Err(error) = owner.sweep_orphans(&name, leases).await {
                            tracing::debug!(%error, "could not look for a late create of ours");
                        }
                    }
                },
            )
        };
        let response = match request.await {
            Ok(response) => response,
            Err(error) if error_map::says_lease_gone(&error) => {
                // Which lease is gone is told by the keepers; start over with live ones.
                return Ok(Outcome::Requeue);
            }
            Err(error) => return Err(error),
        };
        // The read is the last operation of either branch.
        let ops = response.op_responses().len();
        let kvs = range_at(&response, ops.saturating_sub(1));
        let queue = Queue::read(self.name, &prefix, kvs);
        let contender = Contender {
            pass: self,
            revision: queue
                .as_ref()
                .ok()
                .and_then(|queue| queue.create_revision_of(key.as_bytes())),
            key: key.into_bytes(),
        };
        let first = contender.judge(queue).await?;
        let mut at = revision_of(&response);
        let entry = match first {
            Verdict::Granted(entry) => entry,
            Verdict::Gone => return Ok(Outcome::Requeue),
            Verdict::Blocked(_) if self.deadline.is_some() => {
                contender.leave().await?;
                cleanup.disarm();
                drop(reservation);
                return Ok(Outcome::Busy);
            }
            Verdict::Blocked(blocker) => match contender.wait_turn(blocker, at, &mut own).await? {
                Turn::Granted(entry, granted_at) => {
                    at = granted_at;
                    entry
                }
                Turn::Requeue => return Ok(Outcome::Requeue),
            },
        };
        if entry.lease != lease {
            match contender.promote(entry.create_revision).await? {
                Some(promoted_at) => at = promoted_at,
                None => return Ok(Outcome::Requeue),
            }
        }
        if !self.session.is_alive() {
            return Ok(Outcome::Requeue);
        }
        let key = String::from_utf8_lossy(&contender.key).into_owned();
        tracing::debug!(%key, revision = entry.create_revision, "etcd lock granted");
        let hold = hold::grant(hold::Granted {
            inner: inner.clone(),
            session: self.session.clone(),
            name: self.name.clone(),
            kind: self.kind,
            key,
            revision: entry.create_revision,
            granted_at: at,
            own,
            reservation,
        });
        cleanup.disarm();
        Ok(Outcome::Granted(hold))
    }
}

/// The transaction that creates our key (or finds it, if an earlier try of this very request
/// created it) and reads the lock's keys. With nothing under the lock, the key goes on the
/// hold lease (it is granted at once); else on the waiting lease. Our `abandoned` keys
/// (whose deletion is still retrying) go in the same step. The key's `value` is in both
/// branches, so the request carries it twice (see the election's value limit).
fn enqueue_txn(
    key: &str,
    prefix: &str,
    value: Vec<u8>,
    [hold, waiting]: [i64; 2],
    abandoned: &[String],
) -> Txn {
    let put = |lease| {
        TxnOp::put(
            key,
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )
    };
    let alone =
        Txn::new()
            .when([Compare::create_revision(prefix, CompareOp::Equal, 0)
                .with_range(prefix_end(prefix))])
            .and_then([put(hold)])
            .or_else([put(waiting)]);
    let read = TxnOp::get(prefix, Some(GetOptions::new().with_prefix()));
    let deletes = abandoned
        .iter()
        .filter(|old| old.as_str() != key)
        .map(|old| TxnOp::delete(old.as_str(), None));
    let create: Vec<TxnOp> = deletes
        .clone()
        .chain([TxnOp::txn(alone), read.clone()])
        .collect();
    let found: Vec<TxnOp> = deletes.chain([read]).collect();
    Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then(create)
        .or_else(found)
}

/// Where an acquisition's create request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enqueue {
    /// Still on its way.
    Running,
    /// The store answered.
    Answered,
    /// It failed without an answer saying it was not applied: it may still reach the store
    /// after the acquisition's cleanup (see [`Instance::orphans`]).
    AnswerLost,
}

/// Deletes our queue key when the acquisition ends without a hold (cancelled, timed out,
/// failed), like lockcore's `CancelCleanup`, but on the cleanup connection's own runtime (see
/// [`crate::cleaner`]): a caller that shuts its runtime down right after giving up still
/// leaves nothing behind. While the store answers, the drop also waits (at most
/// [`CLEANUP_WAIT`]) for the deletion, so the lock is free again by the time `lock_timeout`
/// has returned.
struct LeaveOnDrop {
    inner: Arc<Instance>,
    /// Whether the enqueue request ended (until then, the deletion must wait for it).
    enqueued: watch::Receiver<Enqueue>,
    /// The lock prefix and our key.
    key: (String, String),
    task: Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>>,
}

/// How long dropping an acquisition waits for its key's deletion.
const CLEANUP_WAIT: Duration = Duration::from_millis(250);

impl LeaveOnDrop {
    fn new(
        inner: Arc<Instance>,
        enqueued: watch::Receiver<Enqueue>,
        key: (String, String),
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        LeaveOnDrop {
            inner,
            enqueued,
            key,
            task: Some(Box::pin(task)),
        }
    }

    /// The key stays (it is held, or already deleted).
    fn disarm(mut self) {
        self.task = None;
    }
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        tracing::debug!("etcd acquisition ended without a hold; deleting its key");
        // The key counts as abandoned from now, not from when the deletion task starts: a new
        // attempt of this instance on the lock deletes it in its own enqueue, so an enqueue
        // request still on its way (the store was unreachable) cannot make the lock look busy
        // to the next attempt in between.
        let ticket = self.inner.cleanup_ticket(&self.key.0, &self.key.1);
        let task = async move {
            task.await;
            drop(ticket);
        };
        let answering = matches!(
            self.inner.leases.monitor().current(),
            ConnectionEvent::Connected | ConnectionEvent::Reconnected
        );
        // Waiting here cannot deadlock: the deletion runs on another thread with its own
        // connection, and only once our enqueue request (which may need this thread) ended.
        let ended = *self.enqueued.borrow() != Enqueue::Running;
        if answering && ended && self.inner.has_cleaner() {
            let (done, deleted) = std::sync::mpsc::channel();
            self.inner
                .spawn_cleanup("delete etcd queue key", async move {
                    task.await;
                    let _ = done.send(());
                });
            let _ = deleted.recv_timeout(CLEANUP_WAIT);
        } else {
            self.inner.spawn_cleanup("delete etcd queue key", task);
        }
    }
}

/// Why a waiter looks at the store again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Read the whole queue.
    Queue,
    /// The blocker's watcher was created after the last read: read the blocker's key.
    Blocker,
}

enum Turn {
    /// Granted as of this revision.
    Granted(crate::queue::Entry, i64),
    Requeue,
}

/// Our key in a lock's queue.
struct Contender<'a> {
    pass: &'a Pass<'a>,
    key: Vec<u8>,
    /// Our key's create revision, as the enqueue's read showed it.
    revision: Option<i64>,
}

impl Contender<'_> {
    /// Applies the kind rule to a fresh read of the queue and says where we stand; on a
    /// conflict, takes our key away first.
    async fn judge(&self, queue: Result<Queue>) -> Result<Verdict> {
        let queue = match queue {
            Ok(queue) => Ok(self.without_orphans(queue).await?),
            Err(error) => Err(error),
        };
        let judged = queue.and_then(|queue| {
            queue.check_kind(self.pass.want.role().kind(), Some(&self.key))?;
            queue.verdict(self.pass.want, &self.key)
        });
        match judged {
            Err(error @ Error::Conflict { .. }) => {
                if let Err(cleanup) = self.leave().await {
                    tracing::debug!(error = %cleanup, "could not take our etcd key away after a conflict");
                }
                Err(error)
            }
            other => other,
        }
    }

    /// Deletes our keys in `queue` that no acquisition or hold of this instance knows (see
    /// [`Instance::orphans`]) and judges without them: a lost create that landed late never
    /// makes this instance wait for itself.
    async fn without_orphans(&self, queue: Queue) -> Result<Queue> {
        let leases = [self.pass.session.lease(), self.pass.waiting.lease()];
        let orphans = self.pass.inner.orphans(&queue, leases);
        if orphans.is_empty() {
            return Ok(queue);
        }
        self.pass
            .inner
            .delete_orphans(self.pass.name, &orphans, self.pass.request_deadline())
            .await?;
        Ok(queue.without(&orphans))
    }

    fn key_text(&self) -> &str {
        std::str::from_utf8(&self.key).unwrap_or_default()
    }

    /// Leaves the queue (a busy one-shot attempt, or a conflict). Our key's name is ours alone
    /// (it carries our lease id and is reserved in this instance), so it is deleted as is.
    async fn leave(&self) -> Result<()> {
        let txn = Txn::new().and_then([TxnOp::delete(self.key.clone(), None)]);
        let what = format!("leaving the queue of {}", self.pass.name);
        self.pass
            .inner
            .txn_until(&what, txn, self.pass.request_deadline())
            .await
            .map(|_| ())
    }

    /// Moves our granted key from the waiting lease to the hold lease, keeping its create
    /// revision. `None` if the key is gone.
    async fn promote(&self, revision: i64) -> Result<Option<i64>> {
        let put = TxnOp::put(
            self.key.clone(),
            self.pass.key_value(),
            Some(PutOptions::new().with_lease(self.pass.session.lease())),
        );
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([put]);
        let what = format!("moving our key for {} to the hold lease", self.pass.name);
        match self.pass.request(&what, txn).await? {
            Some(response) if response.succeeded() => Ok(Some(revision_of(&response))),
            _ => Ok(None),
        }
    }

    /// Waits until we hold the lock, or our key is gone.
    ///
    /// Between reads of the queue, we listen to our own keys' watcher and to one watcher of
    /// what the last read said we wait for (see [`Blocker`]). That watcher is created after
    /// the read, at the then current revision (so it is synced on the server and hears of a
    /// change at once); when it was created later than the read, one read of the blocker's key
    /// tells whether it missed the change it is there for.
    async fn wait_turn(
        &self,
        mut blocker: Blocker,
        checked_at: i64,
        own: &mut KeyWatch,
    ) -> Result<Turn> {
        let (session, waiting) = (self.pass.session, self.pass.waiting);
        let watches = &self.pass.inner.watches;
        let mut checked_at = checked_at;
        let mut watch = watches.subscribe(blocker.target(), Duration::ZERO);
        loop {
            tracing::debug!(key = %self.key_text(), checked_at, ?blocker, "waiting");
            // Wait for a reason to look again. Our own watcher follows our keys since before
            // our read; if it was (re)created after the read, it may have missed a change
            // between.
            let look = loop {
                tokio::select! {
                    seen = own.next() => match seen {
                        None => return Err(Error::Closed { backend: BACKEND }),
                        Some(Seen::Own(Note::Created { revision })) if revision > checked_at => {
                            break Look::Queue;
                        }
                        Some(Seen::Own(Note::Deleted { key, revision }))
                            if revision > checked_at && own.is_own(&key) =>
                        {
                            return Ok(Turn::Requeue);
                        }
                        Some(_) => {}
                    },
                    note = watch.next() => match note {
                        None => return Err(Error::Closed { backend: BACKEND }),
                        Some(Note::Created { revision }) if revision > checked_at => {
                            break Look::Blocker;
                        }
                        Some(note) if note.change_revision().is_some_and(|r| r > checked_at)
                            && blocker.is_moved_by(&note) =>
                        {
                            break Look::Queue;
                        }
                        Some(_) => {}
                    },
                    _ = session.invalid() => return Ok(Turn::Requeue),
                    _ = waiting.invalid() => return Ok(Turn::Requeue),
                }
            };
            if look == Look::Blocker {
                match self.blocker_unchanged(&blocker).await? {
                    None => return Ok(Turn::Requeue),
                    Some(true) => continue,
                    Some(false) => {}
                }
            }
            let Some((verdict, at)) = self.check().await? else {
                return Ok(Turn::Requeue);
            };
            checked_at = at;
            match verdict {
                Verdict::Granted(entry) => {
                    tracing::debug!(key = %self.key_text(), checked_at, "no contender before ours");
                    return Ok(Turn::Granted(entry, checked_at));
                }
                Verdict::Gone => return Ok(Turn::Requeue),
                Verdict::Blocked(next) => {
                    if next.target() != blocker.target() {
                        watch = watches.subscribe(next.target(), Duration::ZERO);
                    }
                    blocker = next;
                }
            }
        }
    }

    /// Reads the blocker's key (if it has one): `Some(true)` when it is as the last read of the
    /// queue showed it, so its watcher, created since, missed nothing. `None` if the hold
    /// lease died meanwhile.
    async fn blocker_unchanged(&self, blocker: &Blocker) -> Result<Option<bool>> {
        let Some(key) = blocker.key() else {
            return Ok(Some(false));
        };
        let what = format!("look at the contender before ours on {}", self.pass.name);
        let read = Txn::new().and_then([TxnOp::get(key, None)]);
        let Some(response) = self.pass.request(&what, read).await? else {
            return Ok(None);
        };
        Ok(Some(blocker.unchanged(range_at(&response, 0).first())))
    }

    /// Reads the lock's keys. `None` if the hold lease died meanwhile.
    ///
    /// A mutex or writer asks in the same transaction to be moved to the hold lease if no key
    /// under the lock is older than its own (then it holds): a hand-off costs the waiter one
    /// request, as the release costs the holder one. (A nested lock's older key makes that
    /// test fail; the read then decides, and the move is a request of its own.)
    async fn check(&self) -> Result<Option<(Verdict, i64)>> {
        let prefix = self.pass.inner.layout.lock_prefix(self.pass.name);
        let read = TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix()));
        let txn = match (self.pass.want, self.revision) {
            (Want::Exclusive | Want::Write | Want::Leader, Some(revision)) => {
                let promote = TxnOp::put(
                    self.key.clone(),
                    self.pass.key_value(),
                    Some(PutOptions::new().with_lease(self.pass.session.lease())),
                );
                Txn::new()
                    .when([
                        Compare::create_revision(self.key.clone(), CompareOp::Equal, revision),
                        Compare::create_revision(prefix.as_str(), CompareOp::Greater, revision - 1)
                            .with_range(prefix_end(&prefix)),
                    ])
                    .and_then([promote, read.clone()])
                    .or_else([read])
            }
            _ => Txn::new().and_then([read]),
        };
        let what = format!("queue check on {}", self.pass.name);
        let Some(response) = self.pass.request(&what, txn).await? else {
            return Ok(None);
        };
        // The read is the last operation of either branch.
        let ops = response.op_responses().len();
        let kvs = range_at(&response, ops.saturating_sub(1));
        let queue = Queue::read(self.pass.name, &prefix, kvs);
        let verdict = self.judge(queue).await?;
        Ok(Some((verdict, revision_of(&response))))
    }
}
