//! Consul sessions, renewed by lockcore's [`Keeper`].
//!
//! Each [`Session`] is renewed every TTL/2 by a [`Keeper`] with Consul's validity formula,
//! [`Validity::consul`] (0.9 × TTL after the last successful renewal was *sent*). The holds a
//! session vouches for register in its [`HoldSet`]: each gets the session's deadline the moment
//! it is granted, and the loss when the session goes. When the deadline passes without a new
//! success the holds are lost with [`LostReason::RenewalFailed`]; when the agent says the
//! session is gone, with [`LostReason::SessionExpired`]. Consul itself invalidates a session
//! only after 2 × TTL without a renewal, so a holder gives up at least 1.1 × TTL (plus the
//! lock-delay) before anyone else can be granted its locks, even if the two clocks' rates
//! differ by up to 10%.
//!
//! Dropping the last `Arc<Session>` stops the renewals and destroys the session on the agent
//! (its keys are released or deleted at once), with or without a runtime; this is also how a
//! cancelled acquisition cleans up a waiter or lease session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tumbler_core::keeper::{HoldSet, Keeper, KeeperConfig, Renew, Renewal, Validity};
use tumbler_core::retry::{retry_for, Backoff};
use tumbler_core::{Error, LossLatch, LostReason, Result};

use crate::api::{Api, Health, SessionSpec, BACKEND};

/// Runs once when a session is lost for a reason other than our own destroy.
type OnLost = Box<dyn Fn() + Send + Sync>;

/// One Consul session, its keeper and the holds it vouches for.
pub(crate) struct Session {
    id: String,
    api: Arc<Api>,
    ttl: Duration,
    holds: Arc<HoldSet>,
    keeper: Arc<Keeper>,
    /// `None` while live; why it is gone otherwise.
    state: LossLatch,
    /// Destroyed explicitly (release, shutdown): dropping it has nothing left to do.
    destroyed: AtomicBool,
    health: Option<Arc<Health>>,
    on_lost: Option<OnLost>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("lost", &self.state.reason())
            .finish()
    }
}

/// One renewal of a session: `PUT /v1/session/renew/<id>`.
struct Renewer {
    api: Arc<Api>,
    id: String,
}

#[async_trait]
impl Renew for Renewer {
    async fn renew(&self) -> Renewal {
        match self.api.session_renew(&self.id).await {
            Ok(true) => Renewal::Renewed,
            Ok(false) => Renewal::Gone(LostReason::SessionExpired),
            Err(error) => Renewal::Failed(error),
        }
    }
}

impl Session {
    /// Creates a session and starts renewing it. `health`, when given, hears when the session
    /// is lost (the backend's own session); `on_lost` runs once then.
    pub(crate) async fn create(
        api: Arc<Api>,
        spec: &SessionSpec,
        health: Option<Arc<Health>>,
        on_lost: Option<OnLost>,
    ) -> Result<Arc<Session>> {
        let sent = std::time::Instant::now();
        let id = api.session_create(spec).await?;
        let holds = HoldSet::new();
        let keeper = Arc::new(Keeper::spawn(
            KeeperConfig {
                what: "consul session",
                validity: Validity::consul(spec.ttl),
                every: spec.ttl / 2,
                // Suspended and Reconnected come from every request (see `Health`), Lost from
                // `Session::gone`.
                monitor: None,
            },
            Arc::new(Renewer {
                api: api.clone(),
                id: id.clone(),
            }),
            holds.clone(),
            sent,
        ));
        let session = Arc::new(Session {
            id,
            api,
            ttl: spec.ttl,
            holds,
            keeper: keeper.clone(),
            state: LossLatch::new(),
            destroyed: AtomicBool::new(false),
            health,
            on_lost,
        });
        tokio::spawn(supervise(keeper, Arc::downgrade(&session)));
        tracing::debug!(id = %session.id, ttl = ?spec.ttl, "consul session created");
        Ok(session)
    }

    /// The session ID.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The holds this session vouches for: register a hold here at its grant.
    pub(crate) fn holds(&self) -> &Arc<HoldSet> {
        &self.holds
    }

    /// Whether the session can still vouch for holds.
    pub(crate) fn is_live(&self) -> bool {
        self.state.reason().is_none()
            && self
                .holds
                .deadline()
                .is_none_or(|deadline| std::time::Instant::now() < deadline)
    }

    /// Resolves when the session is gone, with the reason.
    pub(crate) async fn lost(&self) -> LostReason {
        self.state.wait().await
    }

    /// Asks the agent whether the session still exists (after a hold's key was released or
    /// deleted): if not, marks it expired and returns true. The question is a renewal, so a
    /// live session is also renewed; when the agent cannot be asked, returns false.
    pub(crate) async fn expired_on_agent(&self) -> bool {
        if let Some(reason) = self.state.reason() {
            return reason == LostReason::SessionExpired;
        }
        match self.api.session_renew(&self.id).await {
            Ok(false) => {
                self.gone(LostReason::SessionExpired);
                true
            }
            _ => false,
        }
    }

    /// Destroys the session on the agent now (its keys are released or deleted) and stops
    /// renewing it. Renewing stops even when the agent cannot be told (the session then
    /// expires after 2 × TTL), and the session counts as gone from now on.
    pub(crate) async fn destroy(&self) -> Result<()> {
        self.destroyed.store(true, Ordering::SeqCst);
        self.gone(LostReason::Abandoned);
        self.api.session_destroy(&self.id).await
    }

    /// Marks the session gone for `reason` unless it already is: stops the keeper, loses
    /// every hold, and (unless it was our own doing) tells health and the owner.
    fn gone(&self, reason: LostReason) {
        let fired = self.state.fire(reason.clone());
        if !fired {
            return;
        }
        self.keeper.stop();
        self.holds.lose_all(reason.clone());
        if reason == LostReason::Abandoned {
            return;
        }
        tracing::warn!(id = %self.id, %reason, "consul session lost; its holds are lost");
        if let Some(health) = &self.health {
            health.session_lost();
        }
        if let Some(on_lost) = &self.on_lost {
            on_lost();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.stop();
        if self.destroyed.load(Ordering::SeqCst) {
            return;
        }
        // The keys of a dropped waiter or lease session block others until it goes: destroy
        // it, retrying for one TTL (after 2 × TTL the agent invalidates it anyway).
        let api = self.api.clone();
        let id = self.id.clone();
        let ttl = self.ttl;
        tumbler_core::cleanup::spawn_restartable("destroy a dropped consul session", move || {
            let (api, id) = (api.clone(), id.clone());
            async move {
                match retry_for(pause(ttl), ttl, || api.session_destroy(&id)).await {
                    Ok(()) => tracing::debug!(%id, "consul session destroyed"),
                    Err(error) => {
                        tracing::debug!(%id, %error, "consul session destroy failed; it expires by TTL")
                    }
                }
            }
        });
    }
}

/// The pauses between retries of a session request: from TTL/10 (50 ms..=1 s), doubling.
fn pause(ttl: Duration) -> Backoff {
    let first = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    Backoff::new(first, first * 8)
}

/// Follows a session's keeper: when it ends (the agent said the session is gone, or the
/// validity ran out without a renewal), marks the session gone; after a renewal failure also
/// destroys the session as soon as the agent can be reached again, so its keys do not stay
/// held until Consul's own 2 × TTL runs out.
async fn supervise(keeper: Arc<Keeper>, session: Weak<Session>) {
    let reason = keeper.ended().await;
    drop(keeper);
    let Some(session) = session.upgrade() else {
        return;
    };
    if session.destroyed.load(Ordering::SeqCst) {
        return;
    }
    session.gone(reason.clone());
    if reason != LostReason::RenewalFailed {
        return;
    }
    let (api, id, ttl) = (session.api.clone(), session.id.clone(), session.ttl);
    drop(session);
    if retry_for(pause(ttl), ttl * 2, || api.session_destroy(&id))
        .await
        .is_ok()
    {
        tracing::debug!(%id, "lost consul session destroyed");
    }
}

/// The sessions of one backend: its own (shared by every mutex and read-write hold, replaced
/// in the background when lost) and the short-lived ones of semaphore leases and queued mutex
/// waiters. Cloning shares them.
#[derive(Clone)]
pub(crate) struct Sessions {
    shared: Arc<Shared>,
}

struct Shared {
    api: Arc<Api>,
    main_spec: SessionSpec,
    temp_spec: SessionSpec,
    current: tokio::sync::Mutex<Option<Arc<Session>>>,
    all: Mutex<Vec<Weak<Session>>>,
    closed: AtomicBool,
}

impl Sessions {
    /// `main_spec` for the backend's own session; `temp_spec` for lease and waiter sessions.
    pub(crate) fn new(api: Arc<Api>, main_spec: SessionSpec, temp_spec: SessionSpec) -> Self {
        Sessions {
            shared: Arc::new(Shared {
                api,
                main_spec,
                temp_spec,
                current: tokio::sync::Mutex::new(None),
                all: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The backend's own session, created (again) if there is none or it was lost.
    ///
    /// Fails with [`Error::Closed`] after [`Sessions::close`].
    pub(crate) async fn main(&self) -> Result<Arc<Session>> {
        self.check_open()?;
        let mut current = self.shared.current.lock().await;
        if let Some(session) = current.as_ref().filter(|s| s.is_live()) {
            return Ok(session.clone());
        }
        let api = &self.shared.api;
        let weak = Arc::downgrade(&self.shared);
        let on_lost: Box<dyn Fn() + Send + Sync> = Box::new(move || replace_later(weak.clone()));
        let session = Session::create(
            api.clone(),
            &self.shared.main_spec,
            Some(api.health().clone()),
            Some(on_lost),
        )
        .await?;
        self.register(&session);
        *current = Some(session.clone());
        drop(current);
        if self.shared.closed.load(Ordering::SeqCst) {
            // Closed while it was being created: it must not outlive the shutdown.
            let _ = session.destroy().await;
            return Err(Error::Closed { backend: BACKEND });
        }
        api.health().session_restored();
        Ok(session)
    }

    /// The backend's own session if it is live, without creating one.
    pub(crate) async fn main_if_live(&self) -> Option<Arc<Session>> {
        self.shared
            .current
            .lock()
            .await
            .as_ref()
            .filter(|s| s.is_live())
            .cloned()
    }

    /// Forgets the backend's session `id` after the agent said it does not exist.
    pub(crate) async fn forget(&self, id: &str) {
        let mut current = self.shared.current.lock().await;
        if current.as_ref().is_some_and(|s| s.id() == id) {
            *current = None;
        }
    }

    /// A new session for one semaphore lease or one queued waiter (`Behavior=delete`, no
    /// lock-delay): destroyed when dropped.
    ///
    /// Fails with [`Error::Closed`] after [`Sessions::close`].
    pub(crate) async fn temporary(&self) -> Result<Arc<Session>> {
        self.check_open()?;
        let session =
            Session::create(self.shared.api.clone(), &self.shared.temp_spec, None, None).await?;
        self.register(&session);
        if self.shared.closed.load(Ordering::SeqCst) {
            let _ = session.destroy().await;
            return Err(Error::Closed { backend: BACKEND });
        }
        Ok(session)
    }

    /// The IDs of every live session of this backend.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.live().iter().map(|s| s.id().to_string()).collect()
    }

    /// Whether [`Sessions::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Fails with [`Error::Closed`] once closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed { backend: BACKEND });
        }
        Ok(())
    }

    /// Refuses new sessions from now on (the first step of a shutdown).
    pub(crate) fn refuse_new(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }

    /// Shutdown: refuses new sessions and destroys every live one (the backend's own, every
    /// lease's and every waiter's), so their holds end and their keys are released or deleted
    /// at once. Returns the first error, after trying them all.
    pub(crate) async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.current.lock().await.take();
        let mut first_error = None;
        for session in self.live() {
            if let Err(e) = session.destroy().await {
                tracing::warn!(id = %session.id(), %e, "consul session destroy at shutdown failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn live(&self) -> Vec<Arc<Session>> {
        let mut all = self.shared.all.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.upgrade().is_some_and(|s| s.is_live()));
        all.iter().filter_map(Weak::upgrade).collect()
    }

    fn register(&self, session: &Arc<Session>) {
        let mut all = self.shared.all.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(session));
    }
}

/// Replaces a lost backend session in the background (so `Reconnected` follows `Lost` once a
/// new session is usable, without waiting for the next acquisition), retrying with backoff
/// until it works or the backend is closed or dropped.
fn replace_later(weak: Weak<Shared>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut backoff = crate::watch::backoff();
        loop {
            let Some(shared) = weak.upgrade() else { return };
            let sessions = Sessions { shared };
            if sessions.is_closed() {
                return;
            }
            match sessions.main().await {
                Ok(_) => return,
                Err(e) if e.is_transient() => {
                    tracing::debug!(%e, "replacing the lost consul session failed; retrying");
                }
                Err(e) => {
                    tracing::warn!(%e, "cannot replace the lost consul session");
                    return;
                }
            }
            drop(sessions);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    });
}
