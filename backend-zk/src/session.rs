//! One ZooKeeper session and the tasks that watch over it.
//!
//! A [`Session`] wraps one `zookeeper_client::Client`. Its supervisor turns the client's state
//! changes into connection events, and *retires* the session when it can no longer vouch for
//! the holds made through it:
//! - the servers expired it (or authentication failed), or
//! - no request sent through it has been answered for `lost_after` (the negotiated timeout
//!   minus the larger of a third of it and one second, or half of it for timeouts under two
//!   seconds): the servers may expire it soon and another client may then hold our locks
//!   ([`LostReason::RenewalFailed`]).
//!
//! The heartbeat is lockcore's [`Keeper`] around a `sync` every fifth of that span: it records
//! when the leader last heard from us (the time the answered request was *sent*, so the bound
//! holds whatever the reply latency), and so does every answered lock request. Each hold's validity deadline (its
//! `HoldSignals`) is that send time plus `lost_after`, published from the grant on and moved
//! forward by every answer: a holder stalled past it sees the loss without any task running.
//! Three missed heartbeats, or a failed request, report `Suspended`; the next answer
//! `Reconnected`.

use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;
use tumbler_core::keeper::{HoldSet, HoldTicket, Keeper, KeeperConfig, Renew, Renewal, Validity};
use tumbler_core::{ConnectionEvent, ConnectionMonitor, HoldNotifier, LossLatch, LostReason};
use zookeeper_client as zk;

use crate::error::limited;

/// One ZooKeeper session of a backend.
pub(crate) struct Session {
    id: zk::SessionId,
    client: StdMutex<Option<zk::Client>>,
    states: zk::StateWatcher,
    timeout: Duration,
    lost_after: Duration,
    validity: Validity,
    request_limit: Duration,
    retired: LossLatch,
    last_heard: StdMutex<Instant>,
    monitor: Arc<ConnectionMonitor>,
    /// The holds made through this session: the validity deadline and the loss reach them all.
    holds: Arc<HoldSet>,
    /// The runtime the client's tasks run on: background cleanup is spawned there, so a hold
    /// dropped outside any runtime never panics.
    runtime: tokio::runtime::Handle,
    /// The heartbeat (lockcore's keeper around a `sync`); stopped when the session is retired.
    keeper: StdMutex<Option<Arc<Keeper>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("timeout", &self.timeout)
            .field("retired", &self.retired.reason())
            .finish()
    }
}

/// How long a session may go without an answered request before its holds are reported lost:
/// ZooKeeper's validity formula, stated once in [`Validity::zookeeper`].
pub(crate) fn lost_after(timeout: Duration) -> Duration {
    Validity::zookeeper(timeout).period()
}

impl Session {
    /// Wraps a connected client and starts its supervisor and heartbeat.
    ///
    /// `sent` is when the connect request that opened the session was sent: the servers vouch
    /// for the session from then on.
    pub(crate) fn start(
        client: zk::Client,
        sent: Instant,
        request_limit: Duration,
        monitor: Arc<ConnectionMonitor>,
        on_retired: impl FnOnce(LostReason) + Send + 'static,
    ) -> Arc<Session> {
        let timeout = client.session_timeout();
        let lost_after = lost_after(timeout);
        let states = client.state_watcher();
        let retired = LossLatch::new();
        let session = Arc::new(Session {
            id: client.session_id(),
            states: states.clone(),
            client: StdMutex::new(Some(client)),
            timeout,
            lost_after,
            validity: Validity::zookeeper(timeout),
            request_limit,
            retired,
            last_heard: StdMutex::new(sent),
            monitor: monitor.clone(),
            holds: HoldSet::new(),
            runtime: tokio::runtime::Handle::current(),
            keeper: StdMutex::new(None),
        });
        // The heartbeat: validity from the connect request on, moved forward by every `sync`
        // the leader answers; the holds are lost once it has not been answered in time.
        let keeper = Arc::new(Keeper::spawn(
            KeeperConfig {
                what: "zookeeper session",
                validity: session.validity,
                every: heartbeat_period(lost_after),
                monitor: Some(monitor.clone()),
            },
            Arc::new(Heartbeat {
                session: Arc::downgrade(&session),
            }),
            session.holds.clone(),
            sent.into_std(),
        ));
        *session.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(keeper.clone());
        let span = tracing::info_span!("zk_session", session = %session.id);
        tokio::spawn(
            supervise(
                Arc::downgrade(&session),
                states,
                monitor,
                keeper,
                on_retired,
            )
            .instrument(span),
        );
        session
    }

    /// The session id, as ZooKeeper prints it.
    pub(crate) fn id(&self) -> zk::SessionId {
        self.id
    }

    /// The negotiated session timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The time limit of one request.
    pub(crate) fn request_limit(&self) -> Duration {
        self.request_limit
    }

    /// A handle to the client, unless the session was closed.
    pub(crate) fn client(&self) -> Result<zk::Client, zk::Error> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(zk::Error::ClientClosed)
    }

    /// The id and password of the session, to reattach to it (see `ZkBackend::expire_session_at`).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn info(&self) -> Result<zk::SessionInfo, zk::Error> {
        Ok(self.client()?.session().clone())
    }

    /// Why the session was retired, if it was.
    pub(crate) fn retired_reason(&self) -> Option<LostReason> {
        self.retired.reason()
    }

    /// Resolves when the session is retired, with the reason.
    pub(crate) async fn retired(&self) -> LostReason {
        self.retired.wait().await
    }

    /// Retires the session: tells every registered hold, then reports `Lost` on the
    /// connection events (unless it was closed on purpose). Returns whether this call did it.
    pub(crate) fn retire(&self, reason: LostReason) -> bool {
        let retired = self.retired.fire(reason.clone());
        if !retired {
            return false;
        }
        if let Some(keeper) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            keeper.stop();
        }
        self.holds.lose_all(reason.clone());
        if reason != LostReason::Abandoned {
            tracing::warn!(session = %self.id, %reason, "zookeeper session retired; its holds are lost");
            self.monitor.emit(ConnectionEvent::Lost);
        }
        true
    }

    /// Registers a hold: it gets the session's current validity deadline at once (validity
    /// from the grant), later ones as requests are answered, and is lost when the session is
    /// retired (at once if it was already). Dropping the ticket unregisters it.
    pub(crate) fn register(&self, notifier: HoldNotifier) -> HoldTicket {
        self.holds.register(notifier)
    }

    /// Whether the session can still be used: not retired, and the client has not reported a
    /// terminal state (if it has, the session is retired now rather than when the supervisor
    /// gets to it).
    pub(crate) fn usable(&self) -> bool {
        if self.retired_reason().is_some() {
            return false;
        }
        match self.states.peek_state() {
            zk::SessionState::Expired => self.retire(LostReason::SessionExpired),
            zk::SessionState::AuthFailed => self.retire(auth_failed()),
            zk::SessionState::Closed => self.retire(LostReason::Abandoned),
            _ => return true,
        };
        false
    }

    /// Retires the session and drops its client, which closes the session (deleting its
    /// ephemeral nodes) once no request is in flight.
    pub(crate) fn close(&self) {
        self.retire(LostReason::Abandoned);
        self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Waits up to `limit` for the client to report a terminal state (after [`Session::close`]).
    pub(crate) async fn closed_within(&self, limit: Duration) -> bool {
        let mut states = self.states.clone();
        tokio::time::timeout(limit, async {
            while !states.state().is_terminated() {
                states.changed().await;
            }
        })
        .await
        .is_ok()
    }

    /// Waits until the client is connected (true) or its session ended (false).
    pub(crate) async fn connected(&self) -> bool {
        let mut states = self.states.clone();
        loop {
            match states.state() {
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    return true
                }
                state if state.is_terminated() => return false,
                _ => {
                    states.changed().await;
                }
            }
        }
    }

    /// A request sent at `sent` was answered: the servers vouch for the session until
    /// `sent` plus the validity span. Moves every hold's deadline forward and, if the
    /// connection was in doubt, reports `Reconnected`.
    pub(crate) fn heard(&self, sent: Instant) {
        {
            let mut last = self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
            if sent <= *last {
                return;
            }
            *last = sent;
        }
        self.holds
            .publish_deadline(self.validity.deadline(sent.into_std()));
        if self.retired_reason().is_none()
            && self.monitor.current() == ConnectionEvent::Suspended
            && matches!(
                self.states.peek_state(),
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
            )
        {
            self.monitor.emit(ConnectionEvent::Reconnected);
        }
    }

    /// When the last answered request was sent: the servers vouched for the session then.
    pub(crate) fn last_heard(&self) -> Instant {
        *self.last_heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request failed on the connection (its outcome is unknown): the connection is in
    /// doubt, so the connection events say `Suspended` now rather than when the client
    /// notices.
    pub(crate) fn doubt(&self) {
        if self.retired_reason().is_none() && self.monitor.current() != ConnectionEvent::Lost {
            self.monitor.emit(ConnectionEvent::Suspended);
        }
    }

    /// When the connection is in doubt if nothing was heard since: three missed heartbeats.
    fn suspect_at(&self) -> Instant {
        let last = *self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
        last + (heartbeat_period(self.lost_after) * 3).min(self.lost_after)
    }

    /// Spawns `task` from any thread, with or without a runtime (the drop paths of holds use
    /// it): on the current runtime, else on the session's, else on lockcore's own.
    pub(crate) fn spawn_detached(
        &self,
        what: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        tumbler_core::cleanup::spawn_detached_on(Some(&self.runtime), what, task);
    }
}

fn auth_failed() -> LostReason {
    LostReason::Other("zookeeper authentication failed".into())
}

/// Turns the client's state changes into connection events; retires the session on expiry,
/// on authentication failure, and when it has not been heard from for too long.
async fn supervise(
    session: Weak<Session>,
    mut states: zk::StateWatcher,
    monitor: Arc<ConnectionMonitor>,
    keeper: Arc<Keeper>,
    on_retired: impl FnOnce(LostReason) + Send + 'static,
) {
    let reason = loop {
        let Some(live) = session.upgrade() else {
            return;
        };
        if let Some(reason) = live.retired_reason() {
            break reason;
        }
        let suspect_at = live.suspect_at();
        let suspected = monitor.current() == ConnectionEvent::Suspended;
        let mut retired = live.retired.subscribe();
        drop(live);
        tokio::select! {
            state = states.changed() => {
                let Some(live) = session.upgrade() else { return };
                match state {
                    zk::SessionState::Disconnected => {
                        tracing::info!("disconnected from zookeeper; holds stay valid while the session lives");
                        monitor.emit(ConnectionEvent::Suspended);
                    }
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                        if monitor.current() == ConnectionEvent::Suspended {
                            monitor.emit(ConnectionEvent::Reconnected);
                        }
                    }
                    zk::SessionState::Expired => {
                        live.retire(LostReason::SessionExpired);
                    }
                    zk::SessionState::AuthFailed => {
                        live.retire(auth_failed());
                    }
                    zk::SessionState::Closed => {
                        live.retire(LostReason::Abandoned);
                    }
                }
            }
            _ = tokio::time::sleep_until(suspect_at), if !suspected => {
                let Some(live) = session.upgrade() else { return };
                if Instant::now() >= live.suspect_at() {
                    tracing::info!("no heartbeat answered lately; the connection is in doubt");
                    live.doubt();
                }
            }
            reason = keeper.ended() => {
                let Some(live) = session.upgrade() else { return };
                live.retire(reason);
            }
            _ = retired.wait_for(Option::is_some) => {}
        }
    };
    on_retired(reason);
}

/// One heartbeat: a `sync` through the leader; the keeper notes when it was sent.
///
/// `sync` rather than a read: a read is answered by whichever server the client is connected
/// to, even by a follower cut off from the leader (until it notices, up to `syncLimit` ticks
/// later), while the leader, which expires sessions, no longer hears about ours. A `sync`
/// completes only through the leader.
struct Heartbeat {
    session: Weak<Session>,
}

#[async_trait::async_trait]
impl Renew for Heartbeat {
    async fn renew(&self) -> Renewal {
        let Some(live) = self.session.upgrade() else {
            return Renewal::Gone(LostReason::Abandoned);
        };
        let Ok(client) = live.client() else {
            return Renewal::Gone(LostReason::Abandoned);
        };
        let limit = live.lost_after;
        drop(live);
        let sent = Instant::now();
        let answered = limited(limit, client.sync("/")).await;
        drop(client);
        let Some(live) = self.session.upgrade() else {
            return Renewal::Gone(LostReason::Abandoned);
        };
        match answered {
            Ok(()) => {
                live.heard(sent);
                Renewal::Renewed
            }
            Err(zk::Error::SessionExpired) => Renewal::Gone(LostReason::SessionExpired),
            Err(zk::Error::AuthFailed) => Renewal::Gone(auth_failed()),
            Err(zk::Error::ClientClosed) => Renewal::Gone(LostReason::Abandoned),
            Err(error) => {
                live.doubt();
                Renewal::Failed(tumbler_core::Error::connection(
                    crate::error::BACKEND,
                    format!("session {}", live.id),
                    format!("heartbeat: {error}"),
                ))
            }
        }
    }
}

/// How often the heartbeat is sent: a fifth of the validity span.
fn heartbeat_period(lost_after: Duration) -> Duration {
    (lost_after / 5).max(Duration::from_millis(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_after_keeps_a_margin() {
        let s = Duration::from_secs;
        assert_eq!(lost_after(s(1)), Duration::from_millis(500));
        assert_eq!(lost_after(s(2)), s(1));
        assert_eq!(lost_after(s(3)), s(2));
        assert_eq!(lost_after(s(6)), s(4));
        assert_eq!(lost_after(s(30)), s(20));
    }
}
