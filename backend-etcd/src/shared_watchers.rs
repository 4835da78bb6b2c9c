//! Server watchers shared by every acquisition and hold of this backend instance that follows
//! the same keys, each kept a while after its last user leaves if its owner asks.
//!
//! Who watches what (see [`crate::acquire`] for why this keeps the events a release delivers
//! flat in the number of contenders):
//! - a contender follows the deletions of **its own keys** (`NAME/<lease hex>…`, or
//!   `NAME/#read/<lease hex>_…` and so on: this instance's keys of the lock in that folder)
//!   and of **revocation markers** (`NAME/#revoke/`); these two linger, so the next
//!   acquisition of the name by this instance finds them already synced and need not read the
//!   store again to cover the moment a watcher was being created;
//! - a waiter follows **what it waits for** (one other key, or for the first semaphore waiter
//!   the semaphore's folder); that watcher is retired as soon as its last user leaves, so no
//!   instance keeps hearing about keys it no longer waits for.
//!
//! Sharing a watcher (instead of one per acquisition) also saves two stream messages per
//! acquisition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep, Instant};

use crate::watch::{Note, Target, Watches};

/// How long a watcher of our own keys (or of revocation markers) stays after its last user
/// left.
pub(crate) const LINGER: Duration = Duration::from_secs(10);

type Table = Arc<StdMutex<HashMap<Target, Arc<Shared>>>>;

/// The shared watchers of one backend instance, by target.
#[derive(Clone)]
pub(crate) struct SharedWatches {
    watches: Watches,
    table: Table,
}

/// One subscriber's view of a shared watcher: every note, in order, from the moment it
/// subscribed. Dropping it unsubscribes.
pub(crate) struct Subscription {
    id: u64,
    notes: mpsc::UnboundedReceiver<Note>,
    shared: Arc<Shared>,
}

struct Shared {
    state: StdMutex<State>,
    idle: Notify,
    next_id: AtomicU64,
    /// How long the watcher stays once unused.
    linger: Duration,
}

struct State {
    subscribers: HashMap<u64, mpsc::UnboundedSender<Note>>,
    /// While the server watcher exists: the revision it was created at, or of the latest
    /// change it reported if later. A new subscriber is told this revision as the watcher's
    /// `Created`, since it does not see what was published before it came: it must look at the
    /// store itself for what happened before then.
    created: Option<i64>,
    idle_since: Option<Instant>,
}

impl SharedWatches {
    pub(crate) fn new(watches: Watches) -> Self {
        SharedWatches {
            watches,
            table: Arc::new(StdMutex::new(HashMap::new())),
        }
    }

    /// Subscribes to `target`'s notes. A watcher created for it stays `linger` after its last
    /// subscriber left (zero: it is cancelled at once); a later subscriber within that time
    /// shares it.
    pub(crate) fn subscribe(&self, target: Target, linger: Duration) -> Subscription {
        let mut table = lock(&self.table);
        let shared = match table.get(&target) {
            Some(shared) => shared.clone(),
            None => {
                let shared = Arc::new(Shared {
                    state: StdMutex::new(State {
                        subscribers: HashMap::new(),
                        created: None,
                        idle_since: None,
                    }),
                    idle: Notify::new(),
                    next_id: AtomicU64::new(1),
                    linger,
                });
                table.insert(target.clone(), shared.clone());
                tokio::spawn(pump(
                    self.watches.clone(),
                    self.table.clone(),
                    target,
                    shared.clone(),
                ));
                shared
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, notes) = mpsc::unbounded_channel();
        {
            let mut state = lock(&shared.state);
            // A subscriber of an existing watcher sees every change after the latest one it
            // published.
            if let Some(revision) = state.created {
                let _ = tx.send(Note::Created { revision });
            }
            state.subscribers.insert(id, tx);
            state.idle_since = None;
        }
        drop(table);
        Subscription { id, notes, shared }
    }
}

impl Subscription {
    /// The next note; `None` once the backend is gone.
    pub(crate) async fn next(&mut self) -> Option<Note> {
        self.notes.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.subscribers.remove(&self.id);
        if state.subscribers.is_empty() {
            state.idle_since = Some(Instant::now());
            drop(state);
            self.shared.idle.notify_one();
        }
    }
}

/// Feeds one server watcher's notes to its subscribers, re-registers it if the server cancels
/// it, and retires it once it has been unused for its linger time.
async fn pump(watches: Watches, table: Table, target: Target, shared: Arc<Shared>) {
    let mut registration = watches.register(target.clone());
    loop {
        let idle_until = lock(&shared.state)
            .idle_since
            .map(|since| since + shared.linger);
        tokio::select! {
            note = registration.next() => {
                let Some(note) = note else {
                    // The backend is gone: end every subscription.
                    lock(&table).remove(&target);
                    lock(&shared.state).subscribers.clear();
                    return;
                };
                match &note {
                    Note::Canceled(reason) => {
                        tracing::debug!(?target, %reason, "etcd cancelled a lock watcher; watching again");
                        shared.publish(Note::Reset, Some(None));
                        sleep(Duration::from_millis(100)).await;
                        registration = watches.register(target.clone());
                    }
                    Note::Created { revision } => shared.publish(note.clone(), Some(Some(*revision))),
                    Note::Reset => shared.publish(Note::Reset, Some(None)),
                    _ => shared.publish(note, None),
                }
            }
            _ = shared.idle.notified() => {}
            _ = sleep_until_some(idle_until) => {
                let mut table = lock(&table);
                let state = lock(&shared.state);
                let expired = state.subscribers.is_empty()
                    && state.idle_since.is_some_and(|since| since.elapsed() >= shared.linger);
                if expired {
                    table.remove(&target);
                    return;
                }
            }
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Shared {
    /// Sends `note` to every subscriber; with `created` given, records the watcher's creation
    /// revision (or its loss) in the same step, so a new subscriber never misses or doubles it.
    fn publish(&self, note: Note, created: Option<Option<i64>>) {
        let mut state = lock(&self.state);
        if let Some(created) = created {
            state.created = created;
        }
        if let (Some(shown), Some(revision)) = (state.created, note.change_revision()) {
            state.created = Some(shown.max(revision));
        }
        state
            .subscribers
            .retain(|_, subscriber| subscriber.send(note.clone()).is_ok());
    }
}

fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
