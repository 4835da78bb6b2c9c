//! One client of a memory store: its session, keep-alive, fault hooks and the `LockBackend`
//! implementation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdMutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::store::{
    Attempt, Grant, HoldId, Reply, SessionId, StoreState, WaiterId, VALIDITY_SHARE,
};
use super::{MemoryOptions, MemoryStore, REQUEST_TIMEOUT};
use crate::backend::{
    AcquireRequest, HeldLock, Hold, LeaderInfo, LockBackend, LockKind, LockState,
};
use crate::capabilities::{Capabilities, Fencing};
use crate::error::{Error, Result};
use crate::events::{ConnectionEvent, ConnectionEvents, ConnectionMonitor};
use crate::name::LockName;
use crate::signals::LostReason;

/// A client of a [`MemoryStore`] with its own session, like one process connected to a server.
///
/// The session is renewed in the background every TTL/10. Every hold carries a validity deadline
/// from its grant on: 80% of the TTL after the session's last renewal was sent, moved on by each
/// renewal. If renewal stops (paused, disconnected, store stalled), the holds' `lost()` fires at
/// that deadline (even in a holder whose runtime was blocked), and the store expires the session
/// at 100%. A crashed client's waiters leave the queue at once, as a server drops the waits of a
/// closed connection; its holds stay until the session expires.
///
/// The `pause`, `set_reachable`, `expire_session` and `crash` methods simulate faults for tests.
pub struct MemoryBackend {
    inner: Arc<ClientInner>,
    keeper: JoinHandle<()>,
}

pub(crate) struct ClientInner {
    store: MemoryStore,
    options: MemoryOptions,
    id: u64,
    session: StdMutex<SessionId>,
    flags: StdMutex<Flags>,
    monitor: ConnectionMonitor,
}

#[derive(Debug, Clone, Copy)]
struct Flags {
    reachable: bool,
    paused: bool,
    crashed: bool,
    last_renewed: Instant,
}

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

impl MemoryBackend {
    pub(crate) fn start(store: MemoryStore, options: MemoryOptions) -> Self {
        let now = Instant::now();
        let session = store.state().open_session(options.session_ttl, now);
        let inner = Arc::new(ClientInner {
            store,
            options,
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            session: StdMutex::new(session),
            flags: StdMutex::new(Flags {
                reachable: true,
                paused: false,
                crashed: false,
                last_renewed: now,
            }),
            monitor: ConnectionMonitor::new(),
        });
        let keeper = tokio::spawn(keep_alive(Arc::downgrade(&inner)));
        MemoryBackend { inner, keeper }
    }

    /// The store this client is connected to.
    pub fn store(&self) -> &MemoryStore {
        &self.inner.store
    }

    /// The current session id.
    pub fn session_id(&self) -> u64 {
        self.inner.session()
    }

    /// Test hook: the store expires this client's session now (its holds are lost at once).
    /// The client opens a new session on its next operation.
    pub fn expire_session(&self) {
        let session = self.inner.session();
        self.inner
            .store
            .state()
            .end_session(session, LostReason::SessionExpired);
    }

    /// Test hook: cut (`false`) or restore (`true`) this client's connection. While cut, every
    /// operation fails with [`Error::Connection`] and the session is not renewed.
    pub fn set_reachable(&self, reachable: bool) {
        if reachable {
            self.inner.flags().reachable = true;
            self.inner.reconnected();
        } else {
            // Under the flags lock: a renewal that read the flags before the cut cannot report
            // Reconnected after this Suspended (see `emit_reconnected`).
            let mut flags = self.inner.flags();
            flags.reachable = false;
            self.inner.monitor.emit(ConnectionEvent::Suspended);
        }
    }

    /// Test hook: stop renewing the session, as a stopped (SIGSTOP) process would.
    pub fn pause(&self) {
        self.inner.flags().paused = true;
    }

    /// Test hook: undo [`MemoryBackend::pause`].
    pub fn resume(&self) {
        self.inner.flags().paused = false;
    }

    /// Test hook: behave like a killed process: never renew, never release, never signal.
    /// Its waiters leave the queue at once (its connection closed); its holds stay until the
    /// store expires the session.
    pub fn crash(&self) {
        self.inner.flags().crashed = true;
        self.keeper.abort();
        let session = self.inner.session();
        self.inner.store.state().drop_waiters_of(session);
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl ClientInner {
    fn flags(&self) -> StdMutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session(&self) -> SessionId {
        *self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn address(&self) -> String {
        format!("memory://{}#client-{}", self.store.name(), self.id)
    }

    /// Fails unless this client can talk to the store now.
    fn check_usable(&self) -> Result<()> {
        let flags = *self.flags();
        if flags.crashed {
            return Err(Error::Closed { backend: "memory" });
        }
        if !flags.reachable {
            return Err(Error::connection(
                "memory",
                self.address(),
                "the connection is cut (test fault)",
            ));
        }
        Ok(())
    }

    /// The live session, opening a new one if the store expired ours.
    fn live_session(&self, state: &mut StoreState) -> SessionId {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if !state.session_alive(*session) {
            *session = state.open_session(self.options.session_ttl, Instant::now());
            self.flags().last_renewed = Instant::now();
            self.monitor.emit(ConnectionEvent::Lost);
            self.emit_reconnected();
        }
        *session
    }

    fn reconnected(&self) {
        let mut state = self.store.state();
        let old = self.session();
        let session = self.live_session(&mut state);
        if session == old && state.renew(session, Instant::now()) {
            self.flags().last_renewed = Instant::now();
            self.emit_reconnected();
        }
    }

    /// Reports `Reconnected`, unless the connection was cut since the caller looked: checked
    /// and emitted under the flags lock, which a cut holds while it reports `Suspended`.
    fn emit_reconnected(&self) {
        let flags = self.flags();
        if flags.reachable && !flags.crashed {
            self.monitor.emit(ConnectionEvent::Reconnected);
        }
    }

    /// Waits while the store is stalled, up to [`REQUEST_TIMEOUT`]; then fails with
    /// [`Error::Timeout`] stating the time waited, and reports the connection suspended.
    async fn reach_store(&self, operation: &str) -> Result<()> {
        self.check_usable()?;
        let started = Instant::now();
        let mut stalled = self.store.stalled();
        let answered =
            tokio::time::timeout(REQUEST_TIMEOUT, stalled.wait_for(|stalled| !*stalled)).await;
        match answered {
            Ok(_) => {
                self.check_usable()?;
                if self.monitor.current() == ConnectionEvent::Suspended {
                    self.reconnected();
                }
                Ok(())
            }
            Err(_) => {
                self.monitor.emit(ConnectionEvent::Suspended);
                Err(Error::Timeout {
                    operation: operation.to_owned(),
                    addr: self.address(),
                    after: started.elapsed(),
                })
            }
        }
    }

    /// One keep-alive step: renew if possible; declare holds lost once validity ran out.
    fn tick(&self, now: Instant) {
        let flags = *self.flags();
        if flags.crashed {
            return;
        }
        if self.store.is_stalled() {
            // The store answers nobody: no renewal, no expiry; the holds' deadlines run out.
            return;
        }
        let mut state = self.store.state();
        state.expire_due(now);
        let session = self.session();
        if flags.reachable && !flags.paused {
            if state.renew(session, now) {
                self.flags().last_renewed = now;
                if self.monitor.current() == ConnectionEvent::Suspended {
                    // The store answers again (after a stall) and the session is kept.
                    self.emit_reconnected();
                }
            } else {
                self.live_session(&mut state);
            }
            return;
        }
        if let Some(ttl) = self.options.session_ttl {
            if now.duration_since(flags.last_renewed) >= ttl.mul_f64(VALIDITY_SHARE) {
                let reason = if flags.reachable {
                    LostReason::RenewalFailed
                } else {
                    LostReason::Disconnected
                };
                for notifier in state.notifiers_of(session) {
                    if notifier.lost(reason.clone()) {
                        tracing::warn!(client = self.id, %reason, "memory hold lost");
                    }
                }
            }
        }
    }
}

async fn keep_alive(client: Weak<ClientInner>) {
    let period = match client.upgrade().and_then(|c| c.options.session_ttl) {
        Some(ttl) => ttl / 10,
        None => return,
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(client) = client.upgrade() else {
            return;
        };
        client.tick(Instant::now());
    }
}

#[async_trait]
impl LockBackend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("memory")
            .with_fifo(true)
            .with_fencing(Fencing::StrictlyIncreasing)
            .with_rwlock(true)
            .with_semaphore(true)
            .with_revocation(true)
            .with_lists_waiters(true)
            .with_crash_release_bound(self.inner.options.session_ttl)
            // A crashed client's waits leave the queue at once.
            .with_waiter_release_bound(Some(Duration::ZERO))
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_election(true)
    }

    fn address(&self) -> String {
        self.inner.address()
    }

    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        self.inner
            .reach_store(&format!("acquire of {}", request.name))
            .await?;
        let attempt = {
            let mut state = self.inner.store.state();
            state.expire_due(Instant::now());
            let session = self.inner.live_session(&mut state);
            state.attempt(
                session,
                &request.name,
                request.kind,
                request.value,
                request.wait,
            )?
        };
        let grant = match attempt {
            Attempt::Granted(grant) => grant,
            Attempt::Busy => return Ok(None),
            Attempt::Queued(id, receiver) => {
                let waiting = Waiting {
                    store: self.inner.store.clone(),
                    name: request.name.clone(),
                    id,
                    receiver,
                    done: false,
                };
                waiting.granted().await?
            }
        };
        Ok(Some(self.inner.hold(request.name, request.kind, grant)))
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        self.inner.reach_store(&format!("state of {name}")).await?;
        let mut state = self.inner.store.state();
        state.expire_due(Instant::now());
        Ok(state.state(name))
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        self.inner
            .reach_store(&format!("revocation of {name}"))
            .await?;
        Ok(self.inner.store.state().revoke(name))
    }

    fn connection_events(&self) -> ConnectionEvents {
        self.inner.monitor.subscribe()
    }

    async fn leader(&self, name: &LockName) -> Result<Option<LeaderInfo>> {
        self.inner.reach_store(&format!("leader of {name}")).await?;
        let mut state = self.inner.store.state();
        state.expire_due(Instant::now());
        state.leader(name)
    }

    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&LeaderInfo>,
    ) -> Result<Option<LeaderInfo>> {
        loop {
            self.inner.reach_store(&format!("leader of {name}")).await?;
            let (mut changes, leader, next_expiry) = {
                let mut state = self.inner.store.state();
                state.expire_due(Instant::now());
                let changes = state.subscribe_changes();
                (changes, state.leader(name)?, state.next_holder_expiry(name))
            };
            if leader.as_ref() != seen {
                return Ok(leader);
            }
            // A leader whose session runs out is replaced without anyone releasing: wake then
            // too. A connection cut while waiting is noticed within a second.
            let wake = next_expiry
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1))
                .min(tokio::time::Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn shutdown(&self) -> Result<()> {
        self.inner.reach_store("shutdown").await?;
        let session = self.inner.session();
        self.inner
            .store
            .state()
            .end_session(session, LostReason::Abandoned);
        self.keeper.abort();
        Ok(())
    }
}

impl ClientInner {
    fn hold(self: &Arc<Self>, name: LockName, kind: LockKind, grant: Grant) -> Hold {
        Hold {
            token: grant.token,
            signals: grant.signals,
            held: Box::new(MemoryHeld {
                client: self.clone(),
                name,
                kind,
                hold_id: grant.hold_id,
                released: false,
            }),
        }
    }
}

/// A queued acquisition. Dropping it (the acquire future was cancelled) removes the queue
/// entry, or releases the hold if it was granted in the meantime.
struct Waiting {
    store: MemoryStore,
    name: LockName,
    id: WaiterId,
    receiver: oneshot::Receiver<Reply>,
    done: bool,
}

impl Waiting {
    async fn granted(mut self) -> Result<Grant> {
        loop {
            let next_expiry = self.store.state().next_holder_expiry(&self.name);
            let wake = match next_expiry {
                Some(at) => tokio::time::Instant::from_std(at),
                None => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                granted = &mut self.receiver => {
                    self.done = true;
                    return granted
                        .map_err(|_| Error::SessionExpired { name: self.name.clone() })?;
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.store.state().expire_due(Instant::now());
                }
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.store.state();
        match self.receiver.try_recv() {
            Ok(Ok(grant)) => {
                // Granted just as the caller gave up: hand it back.
                let _ = state.release(&self.name, grant.hold_id);
            }
            Ok(Err(_)) => {}
            Err(oneshot::error::TryRecvError::Empty) => {
                state.cancel_waiter(&self.name, self.id);
            }
            Err(oneshot::error::TryRecvError::Closed) => {}
        }
    }
}

/// The memory backend's handle on one hold.
struct MemoryHeld {
    client: Arc<ClientInner>,
    name: LockName,
    kind: LockKind,
    hold_id: HoldId,
    released: bool,
}

#[async_trait]
impl HeldLock for MemoryHeld {
    async fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.client
            .reach_store(&format!("release of {}", self.name))
            .await?;
        let outcome = self.client.store.state().release(&self.name, self.hold_id);
        self.released = true;
        outcome
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        if self.kind != LockKind::Write {
            return Err(Error::invalid(
                "downgrade",
                "only the write side of a read-write lock can be downgraded",
            ));
        }
        self.client
            .reach_store(&format!("downgrade of {}", self.name))
            .await?;
        let grant = self
            .client
            .store
            .state()
            .downgrade(&self.name, self.hold_id)?;
        self.released = true;
        Ok(self.client.hold(self.name.clone(), LockKind::Read, grant))
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        if self.kind != LockKind::Leader {
            return Err(Error::invalid(
                "proclaim",
                "only a leadership (from Election::campaign) can proclaim a value",
            ));
        }
        if self.released {
            return Err(Error::NotOwner {
                name: self.name.clone(),
            });
        }
        self.client
            .reach_store(&format!("proclaim in {}", self.name))
            .await?;
        self.client
            .store
            .state()
            .proclaim(&self.name, self.hold_id, value)
    }
}
