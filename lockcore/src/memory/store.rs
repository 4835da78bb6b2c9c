//! The memory store's state: sessions, holders, FIFO queues and fencing counters.
//!
//! Pure synchronous logic under one mutex; the async parts live in `client.rs`.
//!
//! One name is one lock of one primitive: while a name is held or waited on as a mutex, a
//! read-write lock or a semaphore, asking for it as another primitive is a
//! [`Error::Conflict`] naming both, and a semaphore's limit is recorded with it. Nested names
//! (`a`, `a/b`) are unrelated locks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::ForeignData;
use crate::backend::{HoldMode, HolderInfo, LockKind, LockState};
use crate::error::{Error, Result};
use crate::name::LockName;
use crate::signals::{hold_signals, HoldNotifier, HoldSignals, LostReason};

pub(crate) type SessionId = u64;
pub(crate) type HoldId = u64;
pub(crate) type WaiterId = u64;

/// The share of the session TTL, counted from the last renewal, for which a client vouches for
/// its holds: well before the store expires the session at 100%.
pub(crate) const VALIDITY_SHARE: f64 = 0.8;

/// The primitive a name is in use by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Primitive {
    Mutex,
    RwLock,
    Semaphore,
    Election,
}

impl Primitive {
    pub(crate) fn of(kind: LockKind) -> Primitive {
        match kind {
            LockKind::Exclusive => Primitive::Mutex,
            LockKind::Read | LockKind::Write => Primitive::RwLock,
            LockKind::Permits { .. } => Primitive::Semaphore,
            LockKind::Leader => Primitive::Election,
        }
    }
}

impl fmt::Display for Primitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Primitive::Mutex => "mutex",
            Primitive::RwLock => "rwlock",
            Primitive::Semaphore => "semaphore",
            Primitive::Election => "election",
        })
    }
}

/// A hold granted by the store.
pub(crate) struct Grant {
    pub(crate) hold_id: HoldId,
    pub(crate) token: u64,
    pub(crate) signals: HoldSignals,
}

/// What a queued waiter is eventually told: granted, or why not.
pub(crate) type Reply = Result<Grant>;

/// What an acquisition attempt did.
pub(crate) enum Attempt {
    Granted(Grant),
    Busy,
    Queued(WaiterId, oneshot::Receiver<Reply>),
}

struct HoldRecord {
    id: HoldId,
    session: SessionId,
    kind: LockKind,
    token: u64,
    notifier: Arc<HoldNotifier>,
    /// What a leadership advertises (empty for locks).
    value: Vec<u8>,
}

struct Waiter {
    id: WaiterId,
    session: SessionId,
    kind: LockKind,
    value: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

struct Entry {
    primitive: Primitive,
    holders: Vec<HoldRecord>,
    waiters: VecDeque<Waiter>,
    limit: Option<u32>,
}

impl Entry {
    fn new(primitive: Primitive) -> Self {
        Entry {
            primitive,
            holders: Vec::new(),
            waiters: VecDeque::new(),
            limit: None,
        }
    }

    fn admits(&self, kind: LockKind) -> bool {
        match kind {
            LockKind::Exclusive | LockKind::Write | LockKind::Leader => self.holders.is_empty(),
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
    /// Until when the session's holds are vouched for (from the last renewal).
    valid_until: Option<Instant>,
}

impl Session {
    fn renewed(&mut self, now: Instant) {
        self.expires_at = self.ttl.map(|ttl| now + ttl);
        self.valid_until = self.ttl.map(|ttl| now + ttl.mul_f64(VALIDITY_SHARE));
    }
}

/// A lock's fencing counter as the store holds it.
#[derive(Debug, Clone)]
enum Counter {
    Value(u64),
    /// Not a number (written by someone else).
    Garbage(String),
}

/// Everything the store knows.
#[derive(Default)]
pub(crate) struct StoreState {
    entries: HashMap<LockName, Entry>,
    sessions: HashMap<SessionId, Session>,
    counters: HashMap<LockName, Counter>,
    /// Names whose lock record holds data tumbler did not write (test hook).
    foreign: HashSet<LockName>,
    next_id: u64,
    /// Bumped whenever holders change, for those who follow an election.
    changes: Changes,
}

/// A counter of holder changes that followers wait on.
pub(crate) struct Changes(tokio::sync::watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Changes(tokio::sync::watch::channel(0).0)
    }
}

impl StoreState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn open_session(&mut self, ttl: Option<Duration>, now: Instant) -> SessionId {
        let id = self.next_id();
        let mut session = Session {
            ttl,
            expires_at: None,
            valid_until: None,
        };
        session.renewed(now);
        self.sessions.insert(id, session);
        id
    }

    pub(crate) fn session_alive(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Extends the session's life (and its holds' validity); false if the store no longer
    /// knows it. `sent` is when the renewal was sent.
    pub(crate) fn renew(&mut self, session: SessionId, sent: Instant) -> bool {
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        s.renewed(sent);
        let valid_until = s.valid_until;
        for notifier in self.notifiers_of(session) {
            notifier.set_valid_until(valid_until);
        }
        true
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
    /// waiters are told why.
    pub(crate) fn end_session(&mut self, session: SessionId, reason: LostReason) {
        self.sessions.remove(&session);
        let names: Vec<LockName> = self.entries.keys().cloned().collect();
        for name in names {
            if let Some(entry) = self.entries.get_mut(&name) {
                let before = entry.holders.len();
                entry.holders.retain(|h| {
                    if h.session == session {
                        h.notifier.lost(reason.clone());
                        false
                    } else {
                        true
                    }
                });
                if entry.holders.len() != before {
                    self.changes.0.send_modify(|n| *n = n.wrapping_add(1));
                }
                let (gone, kept): (VecDeque<Waiter>, VecDeque<Waiter>) =
                    entry.waiters.drain(..).partition(|w| w.session == session);
                entry.waiters = kept;
                for waiter in gone {
                    let why = match reason {
                        LostReason::Abandoned => Error::Closed { backend: "memory" },
                        _ => Error::SessionExpired { name: name.clone() },
                    };
                    let _ = waiter.reply.send(Err(why));
                }
            }
            self.grant_waiters(&name);
        }
    }

    /// Drops every waiter of `session` at once, as a server does when the connection of a
    /// killed process closes. Its holds stay until the session expires.
    pub(crate) fn drop_waiters_of(&mut self, session: SessionId) {
        let names: Vec<LockName> = self.entries.keys().cloned().collect();
        for name in names {
            if let Some(entry) = self.entries.get_mut(&name) {
                entry.waiters.retain(|w| w.session != session);
            }
            self.grant_waiters(&name);
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

    /// Puts data tumbler did not write where `name` keeps its records (test hook).
    pub(crate) fn write_foreign(&mut self, name: &LockName, what: ForeignData) {
        match what {
            ForeignData::Record => {
                self.foreign.insert(name.clone());
            }
            ForeignData::GarbageCounter => {
                self.counters
                    .insert(name.clone(), Counter::Garbage("not-a-number".into()));
            }
            ForeignData::OverflowingCounter => {
                self.counters.insert(name.clone(), Counter::Value(u64::MAX));
            }
        }
    }

    /// The next fencing token of `name`, without taking it; a `Conflict` if the counter is
    /// damaged (not a number, or at its largest value).
    fn next_token(&self, name: &LockName) -> Result<u64> {
        let damaged = |problem: String| Error::Conflict {
            name: name.clone(),
            problem,
        };
        match self.counters.get(name) {
            None => Ok(1),
            Some(Counter::Value(n)) => n.checked_add(1).ok_or_else(|| {
                damaged(format!(
                    "its fencing counter is at {n} and cannot grow, so no larger token can be \
                     issued; an operator must move the lock to a new name"
                ))
            }),
            Some(Counter::Garbage(text)) => Err(damaged(format!(
                "its fencing counter holds {text:?}, which tumbler did not write; remove it \
                 only if no holder relies on its tokens"
            ))),
        }
    }

    /// Refuses names whose records are foreign or in use by another primitive or limit.
    fn check_use(&self, name: &LockName, kind: LockKind) -> Result<()> {
        if self.foreign.contains(name) {
            return Err(Error::Conflict {
                name: name.clone(),
                problem: "its lock record holds data tumbler did not write; use another name or \
                          remove the record"
                    .into(),
            });
        }
        self.next_token(name)?;
        let Some(entry) = self.entries.get(name) else {
            return Ok(());
        };
        let asked = Primitive::of(kind);
        if entry.primitive != asked {
            return Err(Error::Conflict {
                name: name.clone(),
                problem: format!(
                    "it is in use as a {}, so it cannot be used as a {asked}; use one primitive \
                     per name",
                    entry.primitive
                ),
            });
        }
        if let (LockKind::Permits { limit, .. }, Some(existing)) = (kind, entry.limit) {
            if existing != limit {
                return Err(Error::Conflict {
                    name: name.clone(),
                    problem: format!(
                        "the semaphore is in use with limit {existing}, not {limit}; use the \
                         same limit in every client"
                    ),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn attempt(
        &mut self,
        session: SessionId,
        name: &LockName,
        kind: LockKind,
        value: Vec<u8>,
        enqueue: bool,
    ) -> Result<Attempt> {
        self.check_use(name, kind)?;
        let entry = self
            .entries
            .entry(name.clone())
            .or_insert_with(|| Entry::new(Primitive::of(kind)));
        if let LockKind::Permits { limit, .. } = kind {
            entry.limit = Some(limit);
        }
        if entry.waiters.is_empty() && entry.admits(kind) {
            return Ok(Attempt::Granted(self.grant(name, session, kind, value)?));
        }
        if !enqueue {
            self.drop_if_empty(name);
            return Ok(Attempt::Busy);
        }
        let id = self.next_id();
        let (reply, receiver) = oneshot::channel();
        if let Some(entry) = self.entries.get_mut(name) {
            entry.waiters.push_back(Waiter {
                id,
                session,
                kind,
                value,
                reply,
            });
        }
        Ok(Attempt::Queued(id, receiver))
    }

    fn grant(
        &mut self,
        name: &LockName,
        session: SessionId,
        kind: LockKind,
        value: Vec<u8>,
    ) -> Result<Grant> {
        let token = self.next_token(name)?;
        self.counters.insert(name.clone(), Counter::Value(token));
        let id = self.next_id();
        let (notifier, signals) = hold_signals();
        // The hold is vouched for as long as the session is, from the grant on.
        notifier.set_valid_until(self.sessions.get(&session).and_then(|s| s.valid_until));
        if let Some(entry) = self.entries.get_mut(name) {
            entry.holders.push(HoldRecord {
                id,
                session,
                kind,
                token,
                notifier: Arc::new(notifier),
                value,
            });
        }
        self.changed();
        Ok(Grant {
            hold_id: id,
            token,
            signals,
        })
    }

    /// Grants queued waiters in arrival order while the head is admissible.
    fn grant_waiters(&mut self, name: &LockName) {
        loop {
            let Some(entry) = self.entries.get_mut(name) else {
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
            match self.grant(name, waiter.session, waiter.kind, waiter.value) {
                Ok(grant) => {
                    let hold_id = grant.hold_id;
                    if waiter.reply.send(Ok(grant)).is_err() {
                        self.remove_hold(name, hold_id);
                    }
                }
                Err(error) => {
                    let _ = waiter.reply.send(Err(error));
                }
            }
        }
        self.drop_if_empty(name);
    }

    fn remove_hold(&mut self, name: &LockName, hold_id: HoldId) -> bool {
        let Some(entry) = self.entries.get_mut(name) else {
            return false;
        };
        let before = entry.holders.len();
        entry.holders.retain(|h| h.id != hold_id);
        let removed = before != entry.holders.len();
        self.changed();
        removed
    }

    fn changed(&self) {
        self.changes.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later change of holders.
    pub(crate) fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.0.subscribe()
    }

    /// The leader of election `name`: its value, term and identity.
    pub(crate) fn leader(&self, name: &LockName) -> Result<Option<crate::LeaderInfo>> {
        if self.foreign.contains(name) {
            return Err(Error::Conflict {
                name: name.clone(),
                problem: "its lock record holds data tumbler did not write; use another name \
                          or remove the record"
                    .into(),
            });
        }
        let Some(entry) = self.entries.get(name) else {
            return Ok(None);
        };
        if entry.primitive != Primitive::Election {
            return Err(Error::Conflict {
                name: name.clone(),
                problem: format!(
                    "it is in use as a {}, not as an election; use one primitive per name",
                    entry.primitive
                ),
            });
        }
        Ok(entry.holders.first().map(|h| crate::LeaderInfo {
            value: h.value.clone(),
            term: h.token,
            id: format!("session-{}/hold-{}", h.session, h.id),
        }))
    }

    /// Replaces what the leadership `hold_id` advertises.
    pub(crate) fn proclaim(
        &mut self,
        name: &LockName,
        hold_id: HoldId,
        value: &[u8],
    ) -> Result<()> {
        let record = self
            .entries
            .get_mut(name)
            .and_then(|entry| entry.holders.iter_mut().find(|h| h.id == hold_id))
            .ok_or_else(|| Error::NotOwner { name: name.clone() })?;
        record.value = value.to_vec();
        self.changed();
        Ok(())
    }

    fn drop_if_empty(&mut self, name: &LockName) {
        if self.entries.get(name).is_some_and(Entry::is_empty) {
            self.entries.remove(name);
        }
    }

    /// Removes a waiter that gave up. True if it was still queued.
    pub(crate) fn cancel_waiter(&mut self, name: &LockName, id: WaiterId) -> bool {
        let Some(entry) = self.entries.get_mut(name) else {
            return false;
        };
        let before = entry.waiters.len();
        entry.waiters.retain(|w| w.id != id);
        let removed = before != entry.waiters.len();
        self.grant_waiters(name);
        removed
    }

    /// Owner-checked release: only the hold with this id, only if it is still there.
    pub(crate) fn release(&mut self, name: &LockName, hold_id: HoldId) -> Result<()> {
        if !self.remove_hold(name, hold_id) {
            return Err(Error::NotOwner { name: name.clone() });
        }
        self.grant_waiters(name);
        Ok(())
    }

    /// Removes every holder of `name` regardless of owner (an administrator's "break lock").
    pub(crate) fn force_release(&mut self, name: &LockName) -> usize {
        let mut removed = 0;
        if let Some(entry) = self.entries.get_mut(name) {
            removed += entry.holders.len();
            for holder in entry.holders.drain(..) {
                holder.notifier.lost(LostReason::Deleted);
            }
            self.changed();
        }
        self.grant_waiters(name);
        removed
    }

    /// Turns a write hold into a read hold in place and admits readers queued behind it.
    pub(crate) fn downgrade(&mut self, name: &LockName, hold_id: HoldId) -> Result<Grant> {
        let record = self
            .entries
            .get_mut(name)
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
        self.grant_waiters(name);
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
    pub(crate) fn next_holder_expiry(&self, name: &LockName) -> Option<Instant> {
        let entry = self.entries.get(name)?;
        entry
            .holders
            .iter()
            .filter_map(|h| self.sessions.get(&h.session).and_then(|s| s.expires_at))
            .min()
    }

    pub(crate) fn state(&self, name: &LockName) -> LockState {
        let mut state = LockState::free(name.clone());
        if let Some(entry) = self.entries.get(name) {
            state.waiters = Some(
                entry
                    .waiters
                    .iter()
                    .filter(|w| !w.reply.is_closed())
                    .count(),
            );
            state.holders = entry
                .holders
                .iter()
                .map(|h| HolderInfo {
                    id: format!("session-{}/hold-{}", h.session, h.id),
                    mode: match h.kind {
                        LockKind::Exclusive => HoldMode::Exclusive,
                        LockKind::Read => HoldMode::Read,
                        LockKind::Write => HoldMode::Write,
                        LockKind::Permits { count, .. } => HoldMode::Permits(count),
                        LockKind::Leader => HoldMode::Leader,
                    },
                    token: Some(h.token),
                })
                .collect();
        }
        state
    }

    pub(crate) fn revoke(&self, name: &LockName) -> usize {
        let mut notified = 0;
        if let Some(entry) = self.entries.get(name) {
            for holder in &entry.holders {
                holder.notifier.revoke_requested();
                notified += 1;
            }
        }
        notified
    }
}
