//! One watcher per lock name, shared by every acquisition and hold of that name in this
//! backend instance, and kept a while after its last user leaves.
//!
//! Every key of a lock lives under `NAME/`, so one watcher of the deletions under that prefix
//! tells a waiter that its predecessor went, and a holder that its own key was deleted or that
//! a revocation marker came and went. (Puts are filtered out on the server: nobody needs them.) Sharing it
//! (instead of a watcher per acquisition) saves two stream messages per acquisition, and since a
//! lingering watcher already exists when the next acquisition starts, nobody has to read the
//! store again to cover the moment the watcher was being created.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep, Instant};

use crate::watch::{Note, Target, Watches};

/// How long a name's watcher stays after its last user left.
const LINGER: Duration = Duration::from_secs(10);

/// The shared watchers of one backend instance, by lock prefix.
#[derive(Clone)]
pub(crate) struct NameWatches {
    watches: Watches,
    table: Arc<StdMutex<HashMap<String, Arc<Shared>>>>,
}

/// One subscriber's view of a name's watcher: every note, in order, from the moment it
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
}

struct State {
    subscribers: HashMap<u64, mpsc::UnboundedSender<Note>>,
    /// The revision the server watcher was created at, while it exists.
    created: Option<i64>,
    idle_since: Option<Instant>,
}

impl NameWatches {
    pub(crate) fn new(watches: Watches) -> Self {
        NameWatches {
            watches,
            table: Arc::new(StdMutex::new(HashMap::new())),
        }
    }

    /// Subscribes to the deletions under `prefix` (a lock's `NAME/`).
    pub(crate) fn subscribe(&self, prefix: &str) -> Subscription {
        let mut table = lock(&self.table);
        let shared = match table.get(prefix) {
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
                });
                table.insert(prefix.to_owned(), shared.clone());
                tokio::spawn(pump(
                    self.watches.clone(),
                    self.table.clone(),
                    prefix.to_owned(),
                    shared.clone(),
                ));
                shared
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, notes) = mpsc::unbounded_channel();
        {
            let mut state = lock(&shared.state);
            // A subscriber of an existing watcher sees everything after its creation.
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

/// Feeds one server watcher's notes to the subscribers of its name, re-registers it if the
/// server cancels it, and retires it once it has been unused for [`LINGER`].
async fn pump(
    watches: Watches,
    table: Arc<StdMutex<HashMap<String, Arc<Shared>>>>,
    prefix: String,
    shared: Arc<Shared>,
) {
    let mut registration = watches.register(Target::deletions_under(&prefix));
    loop {
        let idle_until = lock(&shared.state).idle_since.map(|since| since + LINGER);
        tokio::select! {
            note = registration.next() => {
                let Some(note) = note else {
                    // The backend is gone: end every subscription.
                    lock(&table).remove(&prefix);
                    lock(&shared.state).subscribers.clear();
                    return;
                };
                match &note {
                    Note::Canceled(reason) => {
                        tracing::debug!(%prefix, %reason, "etcd cancelled a lock watcher; watching again");
                        shared.publish(Note::Reset, Some(None));
                        sleep(Duration::from_millis(100)).await;
                        registration = watches.register(Target::deletions_under(&prefix));
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
                    && state.idle_since.is_some_and(|since| since.elapsed() >= LINGER);
                if expired {
                    table.remove(&prefix);
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
        state
            .subscribers
            .retain(|_, subscriber| subscriber.send(note.clone()).is_ok());
    }
}

fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
