//! A contender's view of its own keys: it tells a waiter that its queue entry vanished, and a
//! holder that its key was deleted (lost) or that someone asked it to let go (a revocation
//! marker was deleted).
//!
//! Two shared, lingering watchers (see [`crate::shared_watchers`]): the deletions of this
//! instance's keys in the lock's folder for our role (so every acquisition of the name by this
//! instance reuses them, whatever suffix its key has), and the deletions of the lock's
//! revocation markers. Neither sees another contender's release, so a release is delivered to
//! its own instance and to whoever waits for it, never to every contender.

use crate::shared_watchers::{SharedWatches, Subscription, LINGER};
use crate::watch::{Note, Target};

/// Which of a contender's watchers a note came from.
#[derive(Debug)]
pub(crate) enum Seen {
    /// Our own keys' watcher.
    Own(Note),
    /// The revocation markers' watcher.
    Revoke(Note),
}

/// The subscriptions that follow our key and the lock's revocation markers; the wait loop and
/// then the hold's monitor read them in turn.
pub(crate) struct KeyWatch {
    key: Vec<u8>,
    own: Subscription,
    revoke: Subscription,
    /// The revision our keys' watcher was created at, once it exists (and until the stream
    /// resets): every deletion of our key after it is seen.
    pub(crate) created: Option<i64>,
}

impl KeyWatch {
    /// Starts following `key`, whose keys of the same role and instance all start with
    /// `own_prefix`, and the revocation markers under `revoke_prefix`.
    pub(crate) fn start(
        watches: &SharedWatches,
        own_prefix: &str,
        revoke_prefix: &str,
        key: &str,
    ) -> Self {
        KeyWatch {
            key: key.as_bytes().to_vec(),
            own: watches.subscribe(Target::deletions_under(own_prefix), LINGER),
            revoke: watches.subscribe(Target::deletions_under(revoke_prefix), LINGER),
            created: None,
        }
    }

    /// Whether `key` is ours.
    pub(crate) fn is_own(&self, key: &[u8]) -> bool {
        key == self.key.as_slice()
    }

    /// The next note of either watcher, recorded; `None` once the backend is gone.
    pub(crate) async fn next(&mut self) -> Option<Seen> {
        let seen = tokio::select! {
            note = self.own.next() => Seen::Own(note?),
            note = self.revoke.next() => Seen::Revoke(note?),
        };
        if let Seen::Own(note) = &seen {
            match note {
                Note::Created { revision } => self.created = Some(*revision),
                Note::Reset | Note::Canceled(_) => self.created = None,
                Note::Deleted { .. } | Note::Put { .. } => {}
            }
        }
        Some(seen)
    }
}
