//! An acquisition's view of its lock's watcher: it tells a waiter that its predecessor went or
//! its own queue entry vanished, and a holder that its key was deleted (lost) or that someone
//! asked it to let go (a revocation marker was deleted).

use crate::names::{NameWatches, Subscription};
use crate::watch::Note;

/// A subscription to the lock's deletions that knows our own key; the wait loop and then the
/// hold's monitor read it in turn.
pub(crate) struct KeyWatch {
    key: Vec<u8>,
    subscription: Subscription,
    /// The revision the watcher was created at, once it exists (and until the stream resets):
    /// every deletion after it is seen.
    pub(crate) created: Option<i64>,
}

impl KeyWatch {
    /// Starts following `key`'s lock (whose keys all start with `lock_prefix`).
    pub(crate) fn start(names: &NameWatches, lock_prefix: &str, key: &str) -> Self {
        KeyWatch {
            key: key.as_bytes().to_vec(),
            subscription: names.subscribe(lock_prefix),
            created: None,
        }
    }

    /// Whether `key` is ours.
    pub(crate) fn is_own(&self, key: &[u8]) -> bool {
        key == self.key.as_slice()
    }

    /// The next change of the lock, recorded; `None` once the backend is gone.
    pub(crate) async fn next(&mut self) -> Option<Note> {
        let note = self.subscription.next().await?;
        match &note {
            Note::Created { revision } => self.created = Some(*revision),
            Note::Reset | Note::Canceled(_) => self.created = None,
            Note::Deleted { .. } => {}
        }
        Some(note)
    }
}
