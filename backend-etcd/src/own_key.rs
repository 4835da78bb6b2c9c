//! The watcher on an acquisition's own key: it tells a waiter that its queue entry vanished,
//! and a holder that its key was deleted (lost) or rewritten by someone else (revocation).

use crate::watch::{Note, Registration, Target, Watches};

/// A watcher on our own key that remembers what it has seen, so whoever reads it next (the
/// wait loop, then the hold's monitor) misses nothing.
pub(crate) struct KeyWatch {
    key: String,
    registration: Registration,
    /// The revision at which the watcher was created, once it is (and until the stream resets).
    pub(crate) created: Option<i64>,
    /// The highest mod revision of a put seen on the key.
    pub(crate) last_put: i64,
}

impl KeyWatch {
    /// Starts watching every change of `key`.
    pub(crate) fn start(watches: &Watches, key: &str) -> Self {
        KeyWatch {
            key: key.to_owned(),
            registration: watches.register(Target::changes_of(key)),
            created: None,
            last_put: 0,
        }
    }

    /// The next note, recorded; `None` once the backend is gone.
    pub(crate) async fn next(&mut self) -> Option<Note> {
        let note = self.registration.next().await?;
        match &note {
            Note::Created { revision } => self.created = Some(*revision),
            Note::Put { mod_revision, .. } => self.last_put = self.last_put.max(*mod_revision),
            Note::Reset | Note::Canceled(_) => self.created = None,
            Note::Deleted { .. } => {}
        }
        Some(note)
    }

    /// Registers a fresh watcher (after the server cancelled ours).
    pub(crate) fn renew(&mut self, watches: &Watches) {
        self.registration = watches.register(Target::changes_of(&self.key));
        self.created = None;
    }
}
