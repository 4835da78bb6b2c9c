//! Mutexes on the api.Lock protocol, so `consul lock` and Go's `api.Lock` exclude with us.
//!
//! One attempt reads the key `NAME/.lock` (refusing it if its flags are not api.Lock's, as
//! api.Lock does), and if no other session holds it, `PUT ?acquire=<session>&flags=…`, then
//! reads the key back: the ModifyIndex of that read is the fencing token. A waiter queues (see
//! [`crate::queue`]); the first in line blocks on the key until its `Session` is empty, then
//! tries again. An `?acquire=` refused while the key is free means a lock-delay is running: the
//! waiter waits out our own configured lock-delay with a blocking query on the key (which also
//! wakes on any change), then backs off from 100ms. Once held, a blocking query on the key
//! follows it (api.Lock's `monitorLock`) and fires `lost()` when the key is deleted or held by
//! another session. Release is `PUT ?release=<session>`, then (like `consul lock`'s cleanup)
//! a `DELETE ?cas=` of the key if nobody took it meanwhile.
//!
//! An election's campaign is the same protocol on another [`Claim`]: the key `NAME/leader`
//! with flags 0 and the candidate's value as the body (Consul's leader-election guide), its
//! candidates queued in `NAME/.candidates/`, and the term instead of the token (see
//! [`crate::election`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tumbler_core::keeper::HoldTicket;
use tumbler_core::{hold_signals, Error, HeldLock, Hold, LockName, LostReason, Result};

use crate::api::{Acquire, Api, Block, KvPair};
use crate::backend::Inner;
use crate::gates::{GatePass, Gates};
use crate::kinds::{self, Kind};
use crate::layout::{Folder, LOCK_FLAGS};
use crate::queue::{Line, Queue};
use crate::record::RevokeMarker;
use crate::session::Session;
use crate::watch::{
    backoff, monitor, next_index, register, sleep_next, watch_hold, Check, Target, Watcher,
};
use tumbler_core::cleanup::RestartableCleanup as Cleanup;

/// The gate pass of an acquisition: handed to the hold, or to the cleanup of a cancelled
/// attempt (which keeps the gate closed until it has released the key).
type PassSlot = Arc<StdMutex<Option<GatePass>>>;

/// What an acquisition on the api.Lock protocol takes: a mutex key, or an election's key.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    /// Which primitive (for one-name-one-kind, tokens and proclaims).
    kind: Kind,
    /// The key acquired.
    key: String,
    /// Its flags.
    flags: u64,
    /// The body of `?acquire=` (the leader's data; empty for a mutex).
    value: Vec<u8>,
    /// Where waiters queue.
    line: Line,
}

impl Claim {
    /// The mutex of `folder`: api.Lock's key, flags and empty value.
    pub(crate) fn mutex(folder: &Folder) -> Claim {
        Claim {
            kind: Kind::Mutex,
            key: folder.lock_key(),
            flags: LOCK_FLAGS,
            value: Vec::new(),
            line: Line::mutex(folder),
        }
    }

    /// The leadership of the election of `folder`, advertising `value`: the guide's key,
    /// no flags.
    pub(crate) fn election(folder: &Folder, value: Vec<u8>) -> Claim {
        Claim {
            kind: Kind::Election,
            key: folder.leader_key(),
            flags: 0,
            value,
            line: Line::election(folder),
        }
    }
}

/// Acquires the mutex `name`.
pub(crate) async fn acquire(
    inner: &Arc<Inner>,
    name: &LockName,
    wait: bool,
) -> Result<Option<Hold>> {
    let claim = Claim::mutex(&inner.layout.folder(name)?);
    acquire_claim(inner, name, claim, wait).await
}

/// Acquires `claim` on the name `name`, waiting or making one attempt.
pub(crate) async fn acquire_claim(
    inner: &Arc<Inner>,
    name: &LockName,
    claim: Claim,
    wait: bool,
) -> Result<Option<Hold>> {
    let key = claim.key.clone();
    let pass = if wait {
        inner.gates.enter(&key).await
    } else {
        match inner.gates.try_enter(&key) {
            Some(pass) => pass,
            None => {
                // Another task of this backend holds the key or is taking it. That is "busy"
                // only if the agent can be reached: one read asks it, so that an unreachable
                // agent is an error here as it is for every other attempt.
                inner.api.kv_get(&key, None).await?;
                return Ok(None);
            }
        }
    };
    let slot: PassSlot = Arc::new(StdMutex::new(Some(pass)));
    match attempt(inner, name, &claim, &slot).await? {
        Attempt::Taken(taken) => Ok(Some(grant(inner, name, &claim, taken, &slot))),
        Attempt::Held { .. } | Attempt::Delayed { .. } if !wait => Ok(None),
        Attempt::Held { index } => wait_then_take(inner, name, &claim, slot, index, false)
            .await
            .map(Some),
        Attempt::Delayed { index } => wait_then_take(inner, name, &claim, slot, index, true)
            .await
            .map(Some),
    }
}

/// What one attempt found.
enum Attempt {
    /// We hold the key.
    Taken(Taken),
    /// Another session holds it; `index` is the `X-Consul-Index` of the read.
    Held { index: u64 },
    /// Free, but `?acquire=` was refused: a lock-delay is running.
    Delayed { index: u64 },
}

struct Taken {
    session: Arc<Session>,
    token: u64,
    index: u64,
    revoke: Option<String>,
}

/// One api.Lock attempt: list the name's folder (refusing foreign data and other kinds), and
/// if no other session holds the key, `?acquire=`, then list again: the other kinds may have
/// put their keys meanwhile (see [`crate::kinds`]), and the key's ModifyIndex is the token
/// (an election's term: see [`crate::election::term`]).
async fn attempt(
    inner: &Arc<Inner>,
    name: &LockName,
    claim: &Claim,
    slot: &PassSlot,
) -> Result<Attempt> {
    let folder = inner.layout.folder(name)?;
    let key = claim.key.as_str();
    let flags = claim.flags;
    for _ in 0..3 {
        let listed = inner.api.kv_list(folder.base(), None).await?;
        kinds::check(claim.kind, name, &folder, &listed.value)?;
        let session = inner.sessions.main().await?;
        // What a new leadership's term must pass (none if the key is already our session's).
        let before = lock_pair(&listed.value, key)
            .filter(|p| !p.held_by(session.id()))
            .map(|p| (p.create_index, p.lock_index));
        if let Some(pair) = lock_pair(&listed.value, key) {
            if pair.flags == flags && pair.is_held() && !pair.held_by(session.id()) {
                return Ok(Attempt::Held {
                    index: listed.index,
                });
            }
        }
        // From the moment the acquire is sent, a cancelled acquisition must release the key.
        let (api, owned_key, held_by, pass) = (
            inner.api.clone(),
            key.to_string(),
            session.clone(),
            slot.clone(),
        );
        let cleanup = Cleanup::new(
            "release the key of a cancelled Consul lock acquisition",
            move || {
                undo_acquire(
                    api.clone(),
                    owned_key.clone(),
                    flags,
                    held_by.clone(),
                    pass.clone(),
                )
            },
        );
        match inner
            .api
            .kv_acquire(key, session.id(), flags, claim.value.clone())
            .await?
        {
            Acquire::InvalidSession => {
                cleanup.disarm();
                inner.sessions.forget(session.id()).await;
                continue;
            }
            Acquire::Busy => {
                cleanup.disarm();
                return Ok(Attempt::Delayed {
                    index: listed.index,
                });
            }
            Acquire::Acquired => {}
        }
        let back = inner.api.kv_list(folder.base(), None).await?;
        let refused = kinds::check(claim.kind, name, &folder, &back.value).and_then(|()| {
            match (claim.kind, lock_pair(&back.value, key)) {
                (Kind::Election, Some(pair)) if pair.held_by(session.id()) => {
                    crate::election::check_advanced(name, pair, before)
                }
                _ => Ok(()),
            }
        });
        if let Err(conflict) = refused {
            // Another kind came in meanwhile (or the key was rewritten): leave the name. If
            // the release fails, dropping the armed cleanup retries it in the background.
            if inner.api.kv_release(key, session.id(), flags).await.is_ok() {
                cleanup.disarm();
            }
            return Err(conflict);
        }
        cleanup.disarm();
        return Ok(match lock_pair(&back.value, key) {
            Some(pair) if pair.held_by(session.id()) && claim.kind == Kind::Election => {
                Attempt::Taken(Taken {
                    token: crate::election::term(pair),
                    revoke: None,
                    session,
                    index: back.index,
                })
            }
            Some(pair) if pair.held_by(session.id()) => {
                let marker = RevokeMarker::parse(&pair.value);
                Attempt::Taken(Taken {
                    token: marker.as_ref().map_or(pair.modify_index, |m| m.token),
                    revoke: marker.map(|m| m.nonce),
                    session,
                    index: back.index,
                })
            }
            // Lost again at once (our session was invalidated meanwhile).
            _ => Attempt::Held { index: back.index },
        });
    }
    Err(Error::backend(
        crate::api::BACKEND,
        format!("could not acquire {key}: the agent refused three fresh sessions"),
    ))
}

/// The mutex key's entry in a listing of its folder.
fn lock_pair<'a>(pairs: &'a [KvPair], key: &str) -> Option<&'a KvPair> {
    pairs.iter().find(|p| p.key == key)
}

/// Waits in the queue, then as its first waiter for the key, and takes it.
async fn wait_then_take(
    inner: &Arc<Inner>,
    name: &LockName,
    claim: &Claim,
    slot: PassSlot,
    index: u64,
    delayed: bool,
) -> Result<Hold> {
    let key = claim.key.as_str();
    let mut queue = Queue::join(inner, claim.line.clone()).await?;
    queue.wait_turn().await?;
    let mut last = if delayed {
        Attempt::Delayed { index }
    } else {
        Attempt::Held { index }
    };
    let mut delay_ends: Option<Instant> = None;
    let mut backoff = backoff();
    loop {
        let waited = match last {
            Attempt::Taken(taken) => return Ok(grant(inner, name, claim, taken, &slot)),
            Attempt::Held { index } => {
                delay_ends = None;
                wait_free(&inner.api, key, index, &queue).await
            }
            Attempt::Delayed { index } => {
                let now = Instant::now();
                let ends = *delay_ends.get_or_insert(now + inner.config.lock_delay);
                let pause = if ends > now {
                    ends - now
                } else {
                    // Longer than our own lock-delay: another client's session set it.
                    let pause = backoff.next_delay();
                    delay_ends = Some(now);
                    pause
                };
                wait_change(&inner.api, key, index, pause, &queue).await
            }
        };
        match waited {
            Ok(()) => {}
            Err(e) if e.is_transient() => sleep_next(&mut backoff).await,
            Err(e) => return Err(e),
        }
        if !queue.session().is_live() {
            queue.rejoin().await?;
            queue.wait_turn().await?;
        }
        last = attempt(inner, name, claim, &slot).await?;
    }
}

/// Blocks until the key is free (not held), or our waiter session is lost.
async fn wait_free(api: &Api, key: &str, index: u64, queue: &Queue) -> Result<()> {
    let mut index = index;
    loop {
        let block = Block {
            index,
            wait: api.query_wait(),
        };
        let read = tokio::select! {
            _ = queue.session().lost() => return Ok(()),
            read = api.kv_get(key, Some(block)) => read?,
        };
        match read.value {
            Some(pair) if pair.is_held() => index = next_index(index, read.index),
            _ => return Ok(()),
        }
    }
}

/// Blocks for at most `pause`, or until the key changes, or our waiter session is lost.
async fn wait_change(
    api: &Api,
    key: &str,
    index: u64,
    pause: Duration,
    queue: &Queue,
) -> Result<()> {
    let block = Block {
        index: index.max(1),
        wait: pause,
    };
    tokio::select! {
        _ = queue.session().lost() => Ok(()),
        read = api.kv_get(key, Some(block)) => read.map(|_| ()),
    }
}

/// Builds the hold and starts watching it.
fn grant(
    inner: &Arc<Inner>,
    name: &LockName,
    claim: &Claim,
    taken: Taken,
    slot: &PassSlot,
) -> Hold {
    let key = claim.key.clone();
    let (kind, token) = (claim.kind, taken.token);
    let (notifier, signals) = hold_signals();
    let ticket = register(&taken.session, notifier);
    if taken.revoke.is_some() {
        ticket.notifier().revoke_requested();
    }
    let sid = taken.session.id().to_string();
    let mut seen = taken.revoke;
    let check = move |pairs: &[KvPair]| match pairs.first() {
        // Still our leadership: the same session and the same term.
        Some(pair) if kind == Kind::Election => {
            if pair.held_by(&sid) && crate::election::term(pair) == token {
                Check::Held { revoke: false }
            } else {
                Check::Lost(LostReason::Deleted)
            }
        }
        Some(pair) if pair.held_by(&sid) => {
            let nonce = RevokeMarker::parse(&pair.value).map(|m| m.nonce);
            let revoke = nonce.is_some() && nonce != seen;
            if revoke {
                seen = nonce;
            }
            Check::Held { revoke }
        }
        _ => Check::Lost(LostReason::Deleted),
    };
    let store_side = monitor(
        inner.api.clone(),
        Target::Key(key.clone()),
        taken.index,
        ticket.clone(),
        check,
    );
    // Once the hold is lost, this backend may take the key again: our own release of a lost
    // hold first takes the gate back (see `MutexHold::release`).
    let relinquish = slot.clone();
    inner.held.insert(&key, taken.session.id(), claim.flags);
    let (held, lost_key) = (inner.held.clone(), key.clone());
    let watcher = watch_hold(
        name,
        ticket.clone(),
        taken.session.clone(),
        store_side,
        move || {
            held.remove(&lost_key);
            drop(relinquish.lock().unwrap_or_else(|p| p.into_inner()).take());
        },
    );
    Hold {
        token: taken.token,
        held: Box::new(MutexHold {
            api: inner.api.clone(),
            name: name.clone(),
            key,
            kind,
            flags: claim.flags,
            token,
            session: taken.session,
            ticket,
            watcher: Some(watcher),
            gates: inner.gates.clone(),
            held: inner.held.clone(),
            pass: slot.clone(),
            released: false,
        }),
        signals,
    }
}

/// A held mutex or leadership.
struct MutexHold {
    api: Arc<Api>,
    name: LockName,
    key: String,
    kind: Kind,
    flags: u64,
    /// The token (a leadership's term).
    token: u64,
    session: Arc<Session>,
    ticket: Arc<HoldTicket>,
    watcher: Option<Watcher>,
    gates: Arc<Gates>,
    held: Arc<HeldKeys>,
    /// This key's gate while the hold is live; emptied when the hold is lost.
    pass: PassSlot,
    released: bool,
}

/// The mutex keys this backend holds, and with which session: shutdown releases them with
/// `?release=` (no lock-delay) before it destroys the session (which would put them under
/// lock-delay).
#[derive(Debug, Default)]
pub(crate) struct HeldKeys(StdMutex<HashMap<String, (String, u64)>>);

impl HeldKeys {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, u64)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, key: &str, session: &str, flags: u64) {
        self.map()
            .insert(key.to_string(), (session.to_string(), flags));
    }

    fn remove(&self, key: &str) {
        self.map().remove(key);
    }

    /// Releases every held key (shutdown). Returns the first error, after trying them all.
    pub(crate) async fn release_all(&self, api: &Api) -> Result<()> {
        let held: Vec<(String, (String, u64))> = self.map().drain().collect();
        let mut first_error = None;
        for (key, (session, flags)) in held {
            if let Err(e) = api.kv_release(&key, &session, flags).await {
                tracing::warn!(%key, %e, "release at shutdown failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl HeldLock for MutexHold {
    async fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        // Stop watching first: the watcher would otherwise see our own release change the key
        // and report the hold lost. Nobody listens for a loss once release has been called.
        self.watcher = None;
        // Keep the key's gate across the release so that no other acquisition of this
        // backend takes the key with our session meanwhile. A lost hold gave the gate up: then
        // release only if nobody else of this backend uses the key.
        let taken = self.pass.lock().unwrap_or_else(|p| p.into_inner()).take();
        let pass = match taken.or_else(|| self.gates.try_enter(&self.key)) {
            Some(pass) => pass,
            None => {
                self.released = true;
                self.watcher = None;
                return Err(Error::NotOwner {
                    name: self.name.clone(),
                });
            }
        };
        let confirmed = match self
            .api
            .kv_release(&self.key, self.session.id(), self.flags)
            .await
        {
            Ok(confirmed) => confirmed,
            Err(e) => {
                // Still held as far as we know: keep the gate for the retry.
                *self.pass.lock().unwrap_or_else(|p| p.into_inner()) = Some(pass);
                return Err(e);
            }
        };
        self.released = true;
        self.watcher = None;
        self.held.remove(&self.key);
        drop(pass);
        if !confirmed {
            self.ticket.notifier().lost(LostReason::Deleted);
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        }
        tumbler_core::cleanup::spawn_detached(
            "delete a released Consul lock key",
            delete_if_free(self.api.clone(), self.key.clone(), self.flags),
        );
        Ok(())
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        if self.kind != Kind::Election || self.released {
            return Err(Error::invalid(
                "proclaim",
                "only a leadership that has not been resigned can proclaim a value",
            ));
        }
        let proclaimed = crate::election::proclaim(
            &self.api,
            &self.name,
            &self.key,
            &self.session,
            self.token,
            value,
        )
        .await;
        if matches!(proclaimed, Err(Error::NotOwner { .. })) {
            self.ticket.notifier().lost(LostReason::Deleted);
        }
        proclaimed
    }
}

/// `consul lock`'s cleanup: deletes the key unless someone holds (or changed) it meanwhile.
async fn delete_if_free(api: Arc<Api>, key: String, flags: u64) {
    if let Ok(read) = api.kv_get(&key, None).await {
        if let Some(pair) = read.value.filter(|p| !p.is_held() && p.flags == flags) {
            let _ = api.kv_delete_cas(&key, pair.modify_index).await;
        }
    }
}

/// Releases the key after a cancelled attempt, keeping the gate closed until done. An acquire
/// still in flight could land after the release, so the key is watched for one request
/// timeout and released again if our session shows up on it.
async fn undo_acquire(
    api: Arc<Api>,
    key: String,
    flags: u64,
    session: Arc<Session>,
    slot: PassSlot,
) {
    let _pass = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    let mut backoff = backoff();
    while session.is_live() {
        match api.kv_release(&key, session.id(), flags).await {
            Ok(_) => break,
            Err(_) => sleep_next(&mut backoff).await,
        }
    }
    let until = Instant::now() + api.request_timeout();
    let mut index = 1;
    while session.is_live() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        let block = Block {
            index,
            wait: until - now,
        };
        match api.kv_get(&key, Some(block)).await {
            Ok(read) => {
                if read.value.is_some_and(|p| p.held_by(session.id())) {
                    let _ = api.kv_release(&key, session.id(), flags).await;
                }
                index = next_index(index, read.index);
            }
            Err(_) => sleep_next(&mut backoff).await,
        }
    }
}
