//! Consul sessions with client-side validity.
//!
//! Each [`Session`] is renewed every TTL/2 by its own task. It counts as valid for
//! [`validity`]`(ttl)` (0.9 × TTL) after the last renewal that succeeded was *sent*; when that
//! deadline passes without a new success, or the agent answers that the session is gone, the
//! session turns [`SessionState::Gone`] and every hold on it reports `lost()`. Consul itself
//! invalidates a session only after 2 × TTL without a renewal, so a holder gives up at least
//! 1.1 × TTL (plus the lock-delay) before anyone else can be granted its locks, even if the
//! two clocks' rates differ by up to 10%.
//!
//! Dropping the last `Arc<Session>` stops the renewals and destroys the session on the agent
//! (its keys are released or deleted at once); this is also how a cancelled acquisition cleans
//! up a waiter or lease session.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use lockcore::{LostReason, Result};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tracing::Instrument;

use crate::api::{Api, Health, SessionSpec};

/// How long a session counts as valid after a successful renewal was sent.
pub(crate) fn validity(ttl: Duration) -> Duration {
    ttl - ttl / 10
}

/// Whether a session can still vouch for its holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// Renewed recently enough: valid until this moment unless renewed again.
    Live(Instant),
    /// Expired, invalidated or given up, and why.
    Gone(LostReason),
}

/// What the renewal task should do when the session handle goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Keep renewing.
    Run,
    /// The session was destroyed explicitly; just stop.
    Destroyed,
}

/// One Consul session and its renewal task.
pub(crate) struct Session {
    id: String,
    api: Arc<Api>,
    state: watch::Receiver<SessionState>,
    stop: watch::Sender<Stop>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl Session {
    /// Creates a session and starts renewing it. `health`, when given, hears when the session
    /// is lost (the backend's own session).
    pub(crate) async fn create(
        api: Arc<Api>,
        spec: &SessionSpec,
        health: Option<Arc<Health>>,
    ) -> Result<Arc<Session>> {
        let sent = Instant::now();
        let id = api.session_create(spec).await?;
        let (state_tx, state_rx) = watch::channel(SessionState::Live(sent + validity(spec.ttl)));
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let span = tracing::debug_span!("consul session", id = %id, ttl = ?spec.ttl);
        tokio::spawn(
            renew(
                Renewal {
                    api: api.clone(),
                    id: id.clone(),
                    ttl: spec.ttl,
                    state: state_tx,
                    health,
                },
                sent,
                stop_rx,
            )
            .instrument(span),
        );
        tracing::debug!(%id, ttl = ?spec.ttl, "consul session created");
        Ok(Arc::new(Session {
            id,
            api,
            state: state_rx,
            stop: stop_tx,
        }))
    }

    /// The session ID.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether the session can still vouch for holds.
    pub(crate) fn is_live(&self) -> bool {
        matches!(*self.state.borrow(), SessionState::Live(_))
    }

    /// The session's state, to follow its validity deadline.
    pub(crate) fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// Resolves when the session is gone.
    pub(crate) async fn lost(&self) -> LostReason {
        let mut rx = self.state.clone();
        let outcome = match rx.wait_for(|s| matches!(s, SessionState::Gone(_))).await {
            Ok(state) => match &*state {
                SessionState::Gone(reason) => Some(reason.clone()),
                SessionState::Live(_) => None,
            },
            Err(_) => None,
        };
        outcome.unwrap_or(LostReason::Abandoned)
    }

    /// Destroys the session on the agent now (its keys are released or deleted) and stops
    /// renewing it.
    pub(crate) async fn destroy(&self) -> Result<()> {
        self.api.session_destroy(&self.id).await?;
        self.stop.send_replace(Stop::Destroyed);
        Ok(())
    }
}

/// What the renewal task owns.
struct Renewal {
    api: Arc<Api>,
    id: String,
    ttl: Duration,
    state: watch::Sender<SessionState>,
    health: Option<Arc<Health>>,
}

impl Renewal {
    fn gone(&self, reason: LostReason) {
        tracing::warn!(id = %self.id, %reason, "consul session lost; its holds are lost");
        self.state.send_replace(SessionState::Gone(reason));
        if let Some(health) = &self.health {
            health.session_lost();
        }
    }

    /// Pause before retrying a failed renewal.
    fn retry_pause(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// Renews every TTL/2 until the session is dropped, destroyed, expired, or its validity runs
/// out without a successful renewal.
async fn renew(r: Renewal, created_sent: Instant, mut stop: watch::Receiver<Stop>) {
    let validity = validity(r.ttl);
    let mut valid_until = created_sent + validity;
    let mut next = created_sent + r.ttl / 2;
    let mut last_error: Option<lockcore::Error> = None;
    loop {
        tokio::select! {
            biased;
            stopped = stop.changed() => {
                finish(&r, stopped.is_err()).await;
                return;
            }
            _ = sleep_until(valid_until) => break,
            _ = sleep_until(next) => {}
        }
        let sent = Instant::now();
        let outcome = tokio::select! {
            biased;
            stopped = stop.changed() => {
                finish(&r, stopped.is_err()).await;
                return;
            }
            _ = sleep_until(valid_until) => break,
            outcome = r.api.session_renew(&r.id) => outcome,
        };
        match outcome {
            Ok(true) => {
                tracing::trace!(id = %r.id, "consul session renewed");
                valid_until = sent + validity;
                next = sent + r.ttl / 2;
                r.state.send_replace(SessionState::Live(valid_until));
                last_error = None;
            }
            Ok(false) => {
                r.gone(LostReason::SessionExpired);
                return;
            }
            Err(error) => {
                tracing::warn!(id = %r.id, %error, "consul session renewal failed; retrying");
                next = Instant::now() + r.retry_pause();
                last_error = Some(error);
            }
        }
    }
    // The validity ran out without a successful renewal.
    let reason = match &last_error {
        Some(e) if e.is_transient() => LostReason::Disconnected,
        _ => LostReason::RenewalFailed,
    };
    r.gone(reason);
    // The agent may still count the session alive (we could not reach it): destroy it as soon
    // as we can, so its keys do not stay held until Consul's own 2 × TTL runs out.
    let give_up = Instant::now() + r.ttl * 2;
    while Instant::now() < give_up {
        if *stop.borrow() == Stop::Destroyed {
            return;
        }
        if r.api.session_destroy(&r.id).await.is_ok() {
            tracing::debug!(id = %r.id, "lost consul session destroyed");
            return;
        }
        tokio::time::sleep(r.retry_pause() * 4).await;
    }
}

/// The handle is gone (`dropped`) or the session was destroyed explicitly.
async fn finish(r: &Renewal, dropped: bool) {
    if matches!(*r.state.borrow(), SessionState::Live(_)) {
        r.state
            .send_replace(SessionState::Gone(LostReason::Abandoned));
    }
    if !dropped {
        return;
    }
    // Keys of a dropped waiter or lease session block others until it goes: retry for a while
    // (after 2 × TTL the agent invalidates it anyway).
    let give_up = Instant::now() + r.ttl;
    loop {
        match r.api.session_destroy(&r.id).await {
            Ok(()) => {
                tracing::debug!(id = %r.id, "consul session destroyed");
                return;
            }
            Err(error) if Instant::now() < give_up => {
                tracing::debug!(id = %r.id, %error, "consul session destroy failed; retrying");
                tokio::time::sleep(r.retry_pause() * 4).await;
            }
            Err(error) => {
                tracing::debug!(id = %r.id, %error, "consul session destroy failed; it expires by TTL");
                return;
            }
        }
    }
}

/// The sessions of one backend: its own (shared by every mutex and read-write hold, created
/// again when lost) and the short-lived ones of semaphore leases and queued mutex waiters.
pub(crate) struct Sessions {
    api: Arc<Api>,
    main_spec: SessionSpec,
    temp_spec: SessionSpec,
    current: tokio::sync::Mutex<Option<Arc<Session>>>,
    all: Mutex<Vec<Weak<Session>>>,
}

impl Sessions {
    /// `main_spec` for the backend's own session; `temp_spec` for lease and waiter sessions.
    pub(crate) fn new(api: Arc<Api>, main_spec: SessionSpec, temp_spec: SessionSpec) -> Self {
        Sessions {
            api,
            main_spec,
            temp_spec,
            current: tokio::sync::Mutex::new(None),
            all: Mutex::new(Vec::new()),
        }
    }

    /// The backend's own session, created (again) if there is none or it was lost.
    pub(crate) async fn main(&self) -> Result<Arc<Session>> {
        let mut current = self.current.lock().await;
        if let Some(session) = current.as_ref().filter(|s| s.is_live()) {
            return Ok(session.clone());
        }
        let session = Session::create(
            self.api.clone(),
            &self.main_spec,
            Some(self.api.health().clone()),
        )
        .await?;
        self.register(&session);
        *current = Some(session.clone());
        Ok(session)
    }

    /// The backend's own session if it is live, without creating one.
    pub(crate) async fn main_if_live(&self) -> Option<Arc<Session>> {
        self.current
            .lock()
            .await
            .as_ref()
            .filter(|s| s.is_live())
            .cloned()
    }

    /// Forgets the backend's session `id` after the agent said it does not exist.
    pub(crate) async fn forget(&self, id: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|s| s.id() == id) {
            *current = None;
        }
    }

    /// A new session for one semaphore lease or one queued waiter (`Behavior=delete`, no
    /// lock-delay): destroyed when dropped.
    pub(crate) async fn temporary(&self) -> Result<Arc<Session>> {
        let session = Session::create(self.api.clone(), &self.temp_spec, None).await?;
        self.register(&session);
        Ok(session)
    }

    /// The IDs of every live session of this backend.
    pub(crate) fn ids(&self) -> Vec<String> {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.upgrade().is_some_and(|s| s.is_live()));
        all.iter()
            .filter_map(Weak::upgrade)
            .map(|s| s.id().to_string())
            .collect()
    }

    /// Destroys the backend's own session (shutdown).
    pub(crate) async fn close(&self) -> Result<()> {
        let session = self.current.lock().await.take();
        match session {
            Some(session) => session.destroy().await,
            None => Ok(()),
        }
    }

    fn register(&self, session: &Arc<Session>) {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(session));
    }
}
