//! Undoing a cancelled single-server acquisition: removing its queue entry, or the hold it
//! was granted without knowing.
//!
//! A waiter that gives up (a `lock_timeout` that ran out, a dropped future) must not leave its
//! queue entry behind: the next `try_lock` on the free lock would fail and the next waiter
//! would wait for the entry to expire. A cleanup spawned on the caller's runtime does not run
//! when that runtime ends right after (a CLI exiting after `--timeout`), so when no request of
//! the acquisition is in flight, the entry is removed before the drop returns: on a connection
//! of this crate's own cleanup runtime, waiting at most [`BLOCKING_LIMIT`]. Otherwise (a request
//! in flight, whose effect must be undone after it, on the same connection; or the quick path
//! did not finish in time) the cleanup runs in the background
//! ([`tumbler_core::cleanup::spawn_detached`]), and `shutdown()` waits for it. If even that cannot
//! run, the entry expires on its own within [`crate::MAX_WAITER_TTL`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::hold::Pending;
use crate::keys::{Family, Keys};
use crate::node::Node;
use crate::scripts;

/// The longest a dropped acquisition waits for its queue entry to be removed.
const BLOCKING_LIMIT: Duration = Duration::from_millis(250);

/// What an acquisition in progress has done so far, for its undo.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// A request of the acquisition is on its way (its effect is not known yet).
    in_flight: AtomicBool,
    /// The acquisition asked to be queued at least once.
    queued: AtomicBool,
}

impl Progress {
    /// Marks a request sent (`queue`: it asks to be queued if busy) or answered.
    pub(crate) fn set_in_flight(&self, yes: bool, queue: bool) {
        if queue {
            self.queued.store(true, Ordering::SeqCst);
        }
        self.in_flight.store(yes, Ordering::SeqCst);
    }
}

/// Undoes acquisition `id` when dropped, unless disarmed.
pub(crate) struct Undo {
    node: Arc<Node>,
    keys: Arc<Keys>,
    family: Family,
    id: String,
    progress: Arc<Progress>,
    pending: Option<Pending>,
}

impl Undo {
    /// Arms the undo of acquisition `id`; `pending` counts it for `shutdown()`.
    pub(crate) fn new(
        node: Arc<Node>,
        keys: Arc<Keys>,
        family: Family,
        id: String,
        pending: Pending,
    ) -> Undo {
        Undo {
            node,
            keys,
            family,
            id,
            progress: Arc::default(),
            pending: Some(pending),
        }
    }

    /// The progress the acquisition reports to this undo.
    pub(crate) fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The acquisition finished (granted or busy): nothing to undo.
    pub(crate) fn disarm(mut self) {
        self.pending = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let in_flight = self.progress.in_flight.load(Ordering::SeqCst);
        if !in_flight && !self.progress.queued.load(Ordering::SeqCst) {
            // Every request was answered "busy" without queueing: nothing is stored.
            return;
        }
        let undo = || {
            cancel(
                self.node.clone(),
                self.keys.clone(),
                self.family,
                self.id.clone(),
                false,
            )
        };
        if !in_flight {
            let (node, keys, family, id) = (
                self.node.clone(),
                self.keys.clone(),
                self.family,
                self.id.clone(),
            );
            let quick = async move { cancel_on_side(node, keys, family, id).await };
            if run_and_wait(BLOCKING_LIMIT, quick) {
                return;
            }
        }
        let task = undo();
        tumbler_core::cleanup::spawn_detached("redis: undo a cancelled acquisition", async move {
            task.await;
            drop(pending);
        });
    }
}

/// Runs `task` on the cleanup runtime and waits up to `limit` for it to report success. False
/// if it did not (or could not run, or this is the cleanup runtime's own thread).
fn run_and_wait(limit: Duration, task: impl Future<Output = bool> + Send + 'static) -> bool {
    if tumbler_core::cleanup::on_background_runtime() {
        return false;
    }
    let Some(handle) = tumbler_core::cleanup::background_runtime() else {
        return false;
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(task.await);
    });
    rx.recv_timeout(limit).unwrap_or(false)
}

/// The script, keys and arguments that remove acquisition `id` of `family`.
fn cancel_call(
    keys: &Keys,
    family: Family,
    id: &str,
    announce_free: bool,
) -> (&'static redis::Script, Vec<String>, Vec<String>) {
    let free = if announce_free { "1" } else { "0" }.to_owned();
    let args = vec![
        id.to_owned(),
        keys.inbox_prefix.clone(),
        keys.events.clone(),
        free,
    ];
    match family {
        Family::Lock => (
            &scripts::CANCEL_LOCK,
            vec![
                keys.lock.clone(),
                keys.readers.clone(),
                keys.queue.clone(),
                keys.queue_exp.clone(),
                keys.fence.clone(),
                keys.leader.clone(),
                keys.candidates.clone(),
            ],
            args,
        ),
        Family::Semaphore => (
            &scripts::CANCEL_SEM,
            vec![
                keys.sem.clone(),
                keys.sem_queue.clone(),
                keys.sem_queue_exp.clone(),
            ],
            args,
        ),
    }
}

/// Removes whatever a cancelled or failed acquisition `id` left: its queue entry, or the hold
/// it was granted without knowing. Runs on the node's connection, after any request of the
/// acquisition still in flight there.
pub(crate) async fn cancel(
    node: Arc<Node>,
    keys: Arc<Keys>,
    family: Family,
    id: String,
    announce_free: bool,
) {
    let (script, keys, args) = cancel_call(&keys, family, &id, announce_free);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let what = "cleaning up a cancelled acquisition";
    // One retry: the first request may meet a connection whose runtime has just ended.
    let backoff =
        tumbler_core::retry::Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
    let outcome = tumbler_core::retry::retry_for(backoff, node.settings.request_timeout, || {
        node.eval(what, script, &keys, &args)
    })
    .await;
    if let Err(error) = outcome {
        tracing::debug!(%error, "cleanup of a cancelled acquisition failed; its entries expire within 3 s");
    }
}

/// Like [`cancel`], on the node's cleanup connection (see [`crate::undo`]); true once done.
pub(crate) async fn cancel_on_side(
    node: Arc<Node>,
    keys: Arc<Keys>,
    family: Family,
    id: String,
) -> bool {
    let (script, keys, args) = cancel_call(&keys, family, &id, false);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match node.eval_side(script, &keys, &args).await {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, "quick cleanup of a cancelled acquisition failed");
            false
        }
    }
}
