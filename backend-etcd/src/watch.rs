//! One watch stream per backend instance, shared by every wait and every hold.
//!
//! Each [`Registration`] is one watcher on the stream (a key or a key range), created *at the
//! current revision*: such a watcher is "synced" on the server and gets events as they happen.
//! (A watcher created at a past revision is "unsynced" and is only served by the server's
//! 100 ms catch-up loop: that is where Go's `concurrency.Mutex` loses ~100 ms per hand-off.)
//! Because a watcher starts at the current revision, its owner re-checks the store once the
//! watcher exists, unless the created response proves nothing can have been missed: the
//! watcher sees every change after [`Note::Created::revision`].
//!
//! When the stream breaks, every registration gets [`Note::Reset`] and, once the stream is
//! back, a new [`Note::Created`]; its owner re-checks then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{WatchClient, WatchFilterType, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

/// The watcher that keeps the stream open when nothing else is watched; it never fires.
const ANCHOR_ID: i64 = 1;
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What to watch: one key or a key range, deletions only or puts as well.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    key: Vec<u8>,
    range_end: Option<Vec<u8>>,
    puts: bool,
}

impl Target {
    /// Deletions of every key starting with `prefix`.
    pub(crate) fn deletions_under(prefix: &str) -> Self {
        Target {
            key: prefix.as_bytes().to_vec(),
            range_end: Some(crate::keys::prefix_end(prefix)),
            puts: false,
        }
    }

    /// Puts and deletions of every key starting with `prefix`.
    pub(crate) fn changes_under(prefix: &str) -> Self {
        Target {
            puts: true,
            ..Target::deletions_under(prefix)
        }
    }

    /// Deletions of `key` alone.
    pub(crate) fn deletion_of(key: &[u8]) -> Self {
        Target {
            key: key.to_vec(),
            range_end: None,
            puts: false,
        }
    }

    /// Puts and deletions of `key` alone.
    pub(crate) fn changes_of(key: &[u8]) -> Self {
        Target {
            key: key.to_vec(),
            range_end: None,
            puts: true,
        }
    }

    fn options(&self, id: i64) -> WatchOptions {
        let mut options = WatchOptions::new().with_watch_id(id);
        if let Some(end) = &self.range_end {
            options = options.with_range(end.clone());
        }
        if self.puts {
            options
        } else {
            options.with_filters([WatchFilterType::NoPut])
        }
    }
}

/// What a registration learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// The watcher exists; it sees every change with a revision above `revision`.
    Created {
        /// The store's revision when the watcher was created.
        revision: i64,
    },
    /// A watched key was put at `revision` (only for targets that ask for puts).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The revision of the put.
        revision: i64,
    },
    /// A watched key was deleted at `revision`.
    Deleted {
        /// The key.
        key: Vec<u8>,
        /// The revision of the deletion.
        revision: i64,
    },
    /// The stream broke; a new `Created` follows once it is back.
    Reset,
    /// The server cancelled the watcher (it will not come back); register again.
    Canceled(String),
}

impl Note {
    /// The revision of a put or deletion.
    pub(crate) fn change_revision(&self) -> Option<i64> {
        match self {
            Note::Put { revision, .. } | Note::Deleted { revision, .. } => Some(*revision),
            _ => None,
        }
    }
}

enum Command {
    Add {
        id: i64,
        target: Target,
        notes: mpsc::UnboundedSender<Note>,
    },
    Remove(i64),
}

/// The handle on the shared stream.
#[derive(Clone)]
pub(crate) struct Watches {
    commands: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicI64>,
}

/// One watcher. Dropping it cancels the watcher.
pub(crate) struct Registration {
    id: i64,
    notes: mpsc::UnboundedReceiver<Note>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Registration {
    /// The next note; `None` once the backend is gone.
    pub(crate) async fn next(&mut self) -> Option<Note> {
        self.notes.recv().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Remove(self.id));
    }
}

impl Watches {
    /// Starts the stream's task. It connects when the first watcher is registered, and ends
    /// when this handle and every registration are dropped.
    pub(crate) fn start(
        client: WatchClient,
        anchor_key: String,
        request_timeout: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let mux = Mux {
            client,
            anchor_key,
            request_timeout,
            commands: rx,
            watchers: HashMap::new(),
        };
        let task = tokio::spawn(mux.run());
        let watches = Watches {
            commands,
            next_id: Arc::new(AtomicI64::new(ANCHOR_ID + 1)),
        };
        (watches, task)
    }

    /// Registers a watcher on `target`, starting at the current revision.
    pub(crate) fn register(&self, target: Target) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (notes, rx) = mpsc::unbounded_channel();
        if self
            .commands
            .send(Command::Add { id, target, notes })
            .is_err()
        {
            tracing::debug!("etcd watch task is gone; the watcher will never fire");
        }
        Registration {
            id,
            notes: rx,
            commands: self.commands.clone(),
        }
    }
}

struct Watcher {
    target: Target,
    notes: mpsc::UnboundedSender<Note>,
}

struct Mux {
    client: WatchClient,
    anchor_key: String,
    request_timeout: Duration,
    commands: mpsc::UnboundedReceiver<Command>,
    watchers: HashMap<i64, Watcher>,
}

enum Flow {
    Exit,
    Reconnect,
}

impl Mux {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            while self.watchers.is_empty() {
                match self.commands.recv().await {
                    Some(command) => self.apply_offline(command),
                    None => return,
                }
            }
            let anchor = WatchOptions::new()
                .with_watch_id(ANCHOR_ID)
                .with_filters([WatchFilterType::NoPut, WatchFilterType::NoDelete]);
            let opened = timeout(
                self.request_timeout,
                self.client.watch(self.anchor_key.clone(), Some(anchor)),
            )
            .await;
            match opened {
                Ok(Ok(stream)) => {
                    backoff = Duration::from_millis(50);
                    match self.serve(stream).await {
                        Flow::Exit => return,
                        Flow::Reconnect => {}
                    }
                }
                Ok(Err(error)) => tracing::debug!(%error, "etcd watch stream failed to open"),
                Err(_) => tracing::debug!("etcd watch stream did not open in time"),
            }
            // Keep taking commands while waiting to reconnect.
            let pause = sleep(backoff);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    command = self.commands.recv() => match command {
                        Some(command) => self.apply_offline(command),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn apply_offline(&mut self, command: Command) {
        match command {
            Command::Add { id, target, notes } => {
                self.watchers.insert(id, Watcher { target, notes });
            }
            Command::Remove(id) => {
                self.watchers.remove(&id);
            }
        }
    }

    async fn serve(&mut self, stream: WatchStream) -> Flow {
        let (mut sender, mut responses) = stream.split();
        for (id, watcher) in &self.watchers {
            let target = &watcher.target;
            if sender
                .watch(target.key.clone(), Some(target.options(*id)))
                .await
                .is_err()
            {
                self.reset_all();
                return Flow::Reconnect;
            }
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return Flow::Exit,
                    Some(Command::Add { id, target, notes }) => {
                        let sent = sender.watch(target.key.clone(), Some(target.options(id))).await;
                        self.watchers.insert(id, Watcher { target, notes });
                        if sent.is_err() {
                            self.reset_all();
                            return Flow::Reconnect;
                        }
                    }
                    Some(Command::Remove(id)) => {
                        if self.watchers.remove(&id).is_some() && sender.cancel(id).await.is_err() {
                            self.reset_all();
                            return Flow::Reconnect;
                        }
                    }
                },
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        if !self.dispatch(response) {
                            self.reset_all();
                            return Flow::Reconnect;
                        }
                    }
                    Ok(None) => {
                        tracing::debug!("etcd closed the watch stream; reconnecting");
                        self.reset_all();
                        return Flow::Reconnect;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "etcd watch stream broke; reconnecting");
                        self.reset_all();
                        return Flow::Reconnect;
                    }
                },
            }
        }
    }

    fn reset_all(&mut self) {
        self.watchers
            .retain(|_, watcher| watcher.notes.send(Note::Reset).is_ok());
    }

    /// Hands a response to its watcher. Returns false when the stream must be re-opened.
    fn dispatch(&mut self, response: WatchResponse) -> bool {
        let id = response.watch_id();
        if id == ANCHOR_ID {
            // The anchor never fires; if the server cancelled it, start over.
            return !response.canceled() || response.created();
        }
        let Some(watcher) = self.watchers.get(&id) else {
            return true;
        };
        let mut alive = true;
        if response.canceled() {
            let reason = match response.cancel_reason() {
                "" => "the server cancelled the watch".to_owned(),
                reason => reason.to_owned(),
            };
            let _ = watcher.notes.send(Note::Canceled(reason));
            alive = false;
        } else if response.created() {
            let revision = response.header().map_or(0, |h| h.revision());
            alive = watcher.notes.send(Note::Created { revision }).is_ok();
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            // A deletion carries the key with version 0, a put version 1 or more. Puts are
            // filtered out on the server unless the target asks for them, and skipped should
            // one come anyway.
            let (key, revision) = (kv.key().to_vec(), kv.mod_revision());
            let note = if kv.version() == 0 {
                Note::Deleted { key, revision }
            } else if watcher.target.puts {
                Note::Put { key, revision }
            } else {
                continue;
            };
            alive = alive && watcher.notes.send(note).is_ok();
        }
        if !alive {
            self.watchers.remove(&id);
        }
        true
    }
}
