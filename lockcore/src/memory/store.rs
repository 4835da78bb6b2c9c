//! The memory store's state: sessions, holders, FIFO queues and fencing counters.
//!
//! Pure synchronous logic under one mutex; the async parts live in `client.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::backend::{HoldMode, HolderInfo, LockKind, LockState};
use crate::error::{Error, Result};
use crate::name::LockName;
use crate::signals::{hold_signals, HoldNotifier, HoldSignals, LostReason};

pub(crate) type SessionId = u64;
pub(crate) type HoldId = u64;
pub(crate) type WaiterId = u64;

/// Mutexes and read-write locks share one lock per name (a mutex is a writer); semaphores of
/// the same name are separate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    Lock,
    Semaphore,
}

impl Family {
    pub(crate) fn of(kind: LockKind) -> Family {
        match kind {
            LockKind::Permits { .. } => Family::Semaphore,
            LockKind::Exclusive | LockKind::Read | LockKind::Write => Family::Lock,
        }
    }
}

type Key = (Family, LockName);

/// A hold granted by the store.
pub(crate) struct Grant {
    pub(crate) hold_id: HoldId,
    pub(crate) token: u64,
    pub(crate) signals: HoldSignals,
}

/// What an acquisition attempt did.
pub(crate) enum Attempt {
    Granted(Grant),
    Busy,
    Queued(WaiterId, oneshot::Receiver<Grant>),
}

struct HoldRecord {
    id: HoldId,
    session: SessionId,
    kind: LockKind,
    token: u64,
    notifier: Arc<HoldNotifier>,
}

struct Waiter {
    id: WaiterId,
    session: SessionId,
    kind: LockKind,
    reply: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct Entry {
    holders: Vec<HoldRecord>,
    waiters: VecDeque<Waiter>,
    limit: Option<u32>,
}

impl Entry {
    fn admits(&self, kind: LockKind) -> bool {
        match kind {
            LockKind::Exclusive | LockKind::Write => self.holders.is_empty(),
            LockKind::Read => self.holders.iter().all(|h| h.kind == LockKind::Read),
            LockKind::Permits { limit, count } => {
                let used: u64 = self
                    .holders
                    .iter()
                    .map(|h| match h.kind {
                        LockKind::Permits { count, .. } => u64::from(count),
                        _ => 0,
                    })
                    .sum();
                used + u64::from(count) <= u64::from(limit)
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }
}

struct Session {
    ttl: Option<Duration>,
    expires_at: Option<Instant>,
}

/// Everything the store knows.
#[derive(Default)]
pub(crate) struct StoreState {
    entries: HashMap<Key, Entry>,
    sessions: HashMap<SessionId, Session>,
    counters: HashMap<LockName, u64>,
    next_id: u64,
}

impl StoreState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn open_session(&mut self, ttl: Option<Duration>, now: Instant) -> SessionId {
        let id = self.next_id();
        self.sessions.insert(
            id,
            Session {
                ttl,
                expires_at: ttl.map(|ttl| now + ttl),
            },
        );
        id
    }

    pub(crate) fn session_alive(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Extends the session's life; false if the store no longer knows it.
    pub(crate) fn renew(&mut self, session: SessionId, now: Instant) -> bool {
        match self.sessions.get_mut(&session) {
            Some(s) => {
                s.expires_at = s.ttl.map(|ttl| now + ttl);
                true
            }
            None => false,
        }
    }

    /// Expires every session whose TTL ran out.
    pub(crate) fn expire_due(&mut self, now: Instant) {
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.end_session(id, LostReason::SessionExpired);
        }
    }

    /// Ends a session: its holds are lost (signalled before anyone else is granted) and its
    /// waiters are dropped.
    pub(crate) fn end_session(&mut self, session: SessionId, reason: LostReason) {
        self.sessions.remove(&session);
        let keys: Vec<Key> = self.entries.keys().cloned().collect();
        for key in keys {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.holders.retain(|h| {
                    if h.session == session {
                        h.notifier.lost(reason.clone());
                        false
                    } else {
                        true
                    }
                });
                entry.waiters.retain(|w| w.session != session);
            }
            self.grant_waiters(&key);
        }
    }

    /// Forgets every session and hold, as a restarted server without persistence would.
    /// Fencing counters survive, as they do on stores that derive them from a clock or a log.
    pub(crate) fn reset(&mut self) {
        let sessions: Vec<SessionId> = self.sessions.keys().copied().collect();
        for session in sessions {
            self.end_session(session, LostReason::ServerRestarted);
        }
        self.entries.clear();
    }

    pub(crate) fn attempt(
        &mut self,
        session: SessionId,
        name: &LockName,
        kind: LockKind,
        enqueue: bool,
    ) -> Result<Attempt> {
        let key = (Family::of(kind), name.clone());
        let entry = self.entries.entry(key.clone()).or_default();
        if let LockKind::Permits { limit, .. } = kind {
            match entry.limit {
                Some(existing) if existing != limit => {
                    return Err(Error::Conflict {
                        name: name.clone(),
                        problem: format!(
                            "the semaphore is in use with limit {existing}, not {limit}; use the \
                             same limit in every client"
                        ),
                    });
                }
                _ => entry.limit = Some(limit),
            }
        }
        if entry.waiters.is_empty() && entry.admits(kind) {
            return Ok(Attempt::Granted(self.grant(&key, session, kind)));
        }
        if !enqueue {
            self.drop_if_empty(&key);
            return Ok(Attempt::Busy);
        }
        let id = self.next_id();
        let (reply, receiver) = oneshot::channel();
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.waiters.push_back(Waiter {
                id,
                session,
                kind,
                reply,
            });
        }
        Ok(Attempt::Queued(id, receiver))
    }

    fn grant(&mut self, key: &Key, session: SessionId, kind: LockKind) -> Grant {
        let id = self.next_id();
        let counter = self.counters.entry(key.1.clone()).or_insert(0);
        *counter += 1;
        let token = *counter;
        let (notifier, signals) = hold_signals();
        if let Some(entry) = self.entries.get_mut(key) {
            entry.holders.push(HoldRecord {
                id,
                session,
                kind,
                token,
                notifier: Arc::new(notifier),
            });
        }
        Grant {
            hold_id: id,
            token,
            signals,
        }
    }

    /// Grants queued waiters in arrival order while the head is admissible.
    fn grant_waiters(&mut self, key: &Key) {
        loop {
            let Some(entry) = self.entries.get_mut(key) else {
                return;
            };
            let Some(head) = entry.waiters.front() else {
                break;
            };
            if head.reply.is_closed() {
                entry.waiters.pop_front();
                continue;
            }
            if !entry.admits(head.kind) {
                break;
            }
            let Some(waiter) = entry.waiters.pop_front() else {
                break;
            };
            let grant = self.grant(key, waiter.session, waiter.kind);
            let hold_id = grant.hold_id;
            if waiter.reply.send(grant).is_err() {
                self.remove_hold(key, hold_id);
            }
        }
        self.drop_if_empty(key);
    }

    fn remove_hold(&mut self, key: &Key, hold_id: HoldId) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        let before = entry.holders.len();
        entry.holders.retain(|h| h.id != hold_id);
        before != entry.holders.len()
    }

    fn drop_if_empty(&mut self, key: &Key) {
        if self.entries.get(key).is_some_and(Entry::is_empty) {
            self.entries.remove(key);
        }
    }

    /// Removes a waiter that gave up. True if it was still queued.
    pub(crate) fn cancel_waiter(&mut self, family: Family, name: &LockName, id: WaiterId) -> bool {
        let key = (family, name.clone());
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        let before = entry.waiters.len();
        entry.waiters.retain(|w| w.id != id);
        let removed = before != entry.waiters.len();
        self.grant_waiters(&key);
        removed
    }

    /// Owner-checked release: only the hold with this id, only if it is still there.
    pub(crate) fn release(
        &mut self,
        family: Family,
        name: &LockName,
        hold_id: HoldId,
    ) -> Result<()> {
        let key = (family, name.clone());
        if !self.remove_hold(&key, hold_id) {
            return Err(Error::NotOwner { name: name.clone() });
        }
        self.grant_waiters(&key);
        Ok(())
    }

    /// Removes every holder of `name` regardless of owner (an administrator's "break lock").
    pub(crate) fn force_release(&mut self, name: &LockName) -> usize {
        let mut removed = 0;
        for family in [Family::Lock, Family::Semaphore] {
            let key = (family, name.clone());
            if let Some(entry) = self.entries.get_mut(&key) {
                removed += entry.holders.len();
                for holder in entry.holders.drain(..) {
                    holder.notifier.lost(LostReason::Deleted);
                }
            }
            self.grant_waiters(&key);
        }
        removed
    }

    /// Turns a write hold into a read hold in place and admits readers queued behind it.
    pub(crate) fn downgrade(&mut self, name: &LockName, hold_id: HoldId) -> Result<Grant> {
        let key = (Family::Lock, name.clone());
        let record = self
            .entries
            .get_mut(&key)
            .and_then(|entry| entry.holders.iter_mut().find(|h| h.id == hold_id))
            .ok_or_else(|| Error::NotOwner { name: name.clone() })?;
        if record.kind != LockKind::Write {
            return Err(Error::invalid(
                "downgrade",
                "only a write hold can be downgraded",
            ));
        }
        record.kind = LockKind::Read;
        let grant = Grant {
            hold_id,
            token: record.token,
            signals: record.notifier.subscribe(),
        };
        self.grant_waiters(&key);
        Ok(grant)
    }

    /// The notifiers of every hold of `session`.
    pub(crate) fn notifiers_of(&self, session: SessionId) -> Vec<Arc<HoldNotifier>> {
        self.entries
            .values()
            .flat_map(|e| e.holders.iter())
            .filter(|h| h.session == session)
            .map(|h| h.notifier.clone())
            .collect()
    }

    /// When the earliest-expiring holder of this lock will expire, if ever.
    pub(crate) fn next_holder_expiry(&self, family: Family, name: &LockName) -> Option<Instant> {
        let entry = self.entries.get(&(family, name.clone()))?;
        entry
            .holders
            .iter()
            .filter_map(|h| self.sessions.get(&h.session).and_then(|s| s.expires_at))
            .min()
    }

    pub(crate) fn state(&self, name: &LockName) -> LockState {
        let mut state = LockState::free(name.clone());
        let mut waiters = 0;
        for family in [Family::Lock, Family::Semaphore] {
            if let Some(entry) = self.entries.get(&(family, name.clone())) {
                waiters += entry
                    .waiters
                    .iter()
                    .filter(|w| !w.reply.is_closed())
                    .count();
                state
                    .holders
                    .extend(entry.holders.iter().map(|h| HolderInfo {
                        id: format!("session-{}/hold-{}", h.session, h.id),
                        mode: match h.kind {
                            LockKind::Exclusive => HoldMode::Exclusive,
                            LockKind::Read => HoldMode::Read,
                            LockKind::Write => HoldMode::Write,
                            LockKind::Permits { count, .. } => HoldMode::Permits(count),
                        },
                        token: Some(h.token),
                    }));
            }
        }
        state.waiters = Some(waiters);
        state
    }

    pub(crate) fn revoke(&self, name: &LockName) -> usize {
        let mut notified = 0;
        for family in [Family::Lock, Family::Semaphore] {
            if let Some(entry) = self.entries.get(&(family, name.clone())) {
                for holder in &entry.holders {
                    holder.notifier.revoke_requested();
                    notified += 1;
                }
            }
        }
        notified
    }
}
