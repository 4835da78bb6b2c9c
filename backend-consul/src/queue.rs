//! The waiter queue of a mutex, so that a release wakes one waiter instead of all of them.
//!
//! api.Lock's waiters all block on the lock key, so every release wakes every waiter and they
//! all race with `?acquire=` (a herd). tumbler's waiters instead each put a key
//! `NAME/.queue/<waiter session>` (acquired with a session of their own, `Behavior=delete`, so
//! it vanishes when the waiter gives up or dies) and order themselves by its CreateIndex. Only
//! the first waiter blocks on the lock key; each other waiter blocks on the key of the waiter
//! just before it. Go clients know nothing of the queue and compete on the lock key directly,
//! which stays the only thing that decides who holds the lock, so exclusion with them is
//! unchanged (the queue only orders tumbler's own waiters).
//!
//! An election's candidates queue the same way in `NAME/.candidates/<candidate session>`,
//! ahead of the election key `NAME/leader` (see [`Line`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tumbler_core::{Error, Result};

use crate::api::{Acquire, Block, KvPair};
use crate::backend::Inner;
use crate::layout::{Folder, QUEUE_FLAGS};
use crate::session::Session;
use crate::watch::{backoff, next_index, sleep_next};

/// How long the mutex must stay free before a waiter stops waiting for the waiter ahead of
/// it: a waiter that was killed keeps its queue key until the agent invalidates its session
/// (2 × TTL), and must not cost the waiters behind it more than this after each release. A live
/// waiter ahead takes a free lock within one round trip.
pub const DEAD_WAITER_GRACE: Duration = Duration::from_secs(1);

/// Where one queue lives: the folder of its waiter keys, and the key its waiters wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// The folder of the waiter keys (`NAME/.queue/` or `NAME/.candidates/`).
    prefix: String,
    /// The key the first waiter waits for (`NAME/.lock` or `NAME/leader`).
    target: String,
}

impl Line {
    /// The queue of the mutex of `folder`.
    pub(crate) fn mutex(folder: &Folder) -> Line {
        Line {
            prefix: folder.queue_prefix(),
            target: folder.lock_key(),
        }
    }

    /// The queue of the candidates of the election of `folder`.
    pub(crate) fn election(folder: &Folder) -> Line {
        Line {
            prefix: folder.candidates_prefix(),
            target: folder.leader_key(),
        }
    }

    /// The waiter key of session `id`.
    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// The queue's live entries in a listing, in arrival order.
    pub(crate) fn live_waiters(&self, pairs: &[KvPair]) -> Vec<KvPair> {
        let mut waiters: Vec<KvPair> = pairs
            .iter()
            .filter(|p| {
                p.key
                    .strip_prefix(self.prefix.as_str())
                    .is_some_and(|id| !id.is_empty() && !id.contains('/'))
                    && p.is_held()
            })
            .cloned()
            .collect();
        waiters.sort_by_key(|p| p.create_index);
        waiters
    }
}

/// This acquisition's place in the queue of one mutex or election. Dropping it destroys the
/// waiter session, which deletes the queue key.
pub(crate) struct Queue {
    inner: Arc<Inner>,
    line: Line,
    session: Arc<Session>,
}

impl Queue {
    /// Creates a waiter session and its queue key.
    pub(crate) async fn join(inner: &Arc<Inner>, line: Line) -> Result<Queue> {
        let session = enqueue(inner, &line).await?;
        Ok(Queue {
            inner: inner.clone(),
            line,
            session,
        })
    }

    /// The waiter session (its loss means our place in the queue is gone).
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Takes a new place at the end of the queue (after our waiter session was lost).
    pub(crate) async fn rejoin(&mut self) -> Result<()> {
        tracing::debug!("waiter session lost; queueing again");
        self.session = enqueue(&self.inner, &self.line).await?;
        Ok(())
    }

    /// Returns once no live waiter is ahead of us.
    pub(crate) async fn wait_turn(&mut self) -> Result<()> {
        let mut backoff = backoff();
        loop {
            if !self.session.is_live() {
                self.rejoin().await?;
            }
            let listed = self.inner.api.kv_list(&self.line.prefix, None).await;
            let listed = match listed {
                Ok(listed) => listed,
                Err(e) if e.is_transient() => {
                    sleep_next(&mut backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            backoff.reset();
            let mine = self.session.id().to_string();
            let waiters = self.line.live_waiters(&listed.value);
            let Some(position) = waiters.iter().position(|w| w.held_by(&mine)) else {
                // Our key is gone although the session looked live: queue again.
                self.rejoin().await?;
                continue;
            };
            let Some(ahead) = position.checked_sub(1).map(|i| waiters[i].clone()) else {
                return Ok(());
            };
            let session = self.session.clone();
            let lock_key = self.line.target.clone();
            // The first waiter may be dead (its key lives until the agent invalidates its
            // session): the second one watches the lock key too, and once it has stayed free
            // for the grace, goes ahead anyway. (Only the second: every other waiter watching
            // the key would make each release wake them all.)
            let watch_lock = async {
                if position == 1 {
                    stays_free(&self.inner, &lock_key, DEAD_WAITER_GRACE).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                _ = session.lost() => {}
                gone = wait_gone(&self.inner, &ahead, listed.index) => gone?,
                free = watch_lock => {
                    free?;
                    tracing::debug!("the waiter ahead did not take the free lock; going ahead");
                    return Ok(());
                }
            }
        }
    }
}

/// Blocks until the mutex key has been free (absent or not held) for `grace` without
/// interruption.
async fn stays_free(inner: &Inner, key: &str, grace: Duration) -> Result<()> {
    let mut index = 1;
    let mut free_since: Option<Instant> = None;
    let mut backoff = backoff();
    loop {
        let wait = match free_since {
            Some(since) => {
                let left = (since + grace).saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                left
            }
            None => inner.api.query_wait(),
        };
        let read = inner.api.kv_get(key, Some(Block { index, wait })).await;
        match read {
            Ok(q) => {
                backoff.reset();
                let free = !q.value.is_some_and(|p| p.is_held());
                free_since = if free {
                    free_since.or_else(|| Some(Instant::now()))
                } else {
                    None
                };
                index = next_index(index, q.index);
            }
            Err(e) if e.is_transient() => sleep_next(&mut backoff).await,
            Err(e) => return Err(e),
        }
    }
}

/// Creates a waiter session and acquires its queue key with it.
async fn enqueue(inner: &Arc<Inner>, line: &Line) -> Result<Arc<Session>> {
    for _ in 0..3 {
        let session = inner.sessions.temporary().await?;
        let key = line.key(session.id());
        match inner
            .api
            .kv_acquire(&key, session.id(), QUEUE_FLAGS, Vec::new())
            .await?
        {
            Acquire::Acquired => return Ok(session),
            Acquire::InvalidSession | Acquire::Busy => continue,
        }
    }
    Err(Error::backend(
        crate::api::BACKEND,
        "could not create a waiter key: the agent refused three fresh sessions",
    ))
}

/// Blocks until the waiter `ahead` has left the queue (its key deleted or no longer held).
async fn wait_gone(inner: &Inner, ahead: &KvPair, index: u64) -> Result<()> {
    let holder = ahead.session.clone().unwrap_or_default();
    let mut index = index;
    let mut backoff = backoff();
    loop {
        let block = Block {
            index,
            wait: inner.api.query_wait(),
        };
        match inner.api.kv_get(&ahead.key, Some(block)).await {
            Ok(q) => match q.value {
                Some(pair) if pair.held_by(&holder) => index = next_index(index, q.index),
                _ => return Ok(()),
            },
            Err(e) if e.is_transient() => sleep_next(&mut backoff).await,
            Err(e) => return Err(e),
        }
    }
}
