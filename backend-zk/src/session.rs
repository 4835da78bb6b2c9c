//! One ZooKeeper session and the tasks that watch over it.
//!
//! A [`Session`] wraps one `zookeeper_client::Client`. Its supervisor turns the client's state
//! changes into connection events, and *retires* the session when it can no longer vouch for
//! the holds made through it:
//! - the servers expired it (or authentication failed), or
//! - no heartbeat sent through it has succeeded for `lost_after` (the negotiated timeout minus
//!   the larger of a third of it and one second, or half of it for timeouts under two
//!   seconds): the servers may expire it soon and another client may then hold our locks.
//!
//! A heartbeat `sync` every fifth of that span records when the leader last heard from us
//! (the time the successful request was *sent*, so the bound holds whatever the reply latency).
//! Every hold watches [`Session::retired`] and reports `lost()` when it fires.

use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use lockcore::{ConnectionEvent, ConnectionMonitor, LostReason};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;
use zookeeper_client as zk;

use crate::error::limited;

/// Told synchronously when a session is retired: the holds made through it, so that every
/// hold reports `lost()` before the connection events say `Lost`.
pub(crate) trait OnRetire: Send + Sync {
    /// The session was retired for `reason`.
    fn session_retired(&self, reason: &LostReason);
}

/// One ZooKeeper session of a backend.
pub(crate) struct Session {
    id: zk::SessionId,
    client: StdMutex<Option<zk::Client>>,
    states: zk::StateWatcher,
    timeout: Duration,
    lost_after: Duration,
    request_limit: Duration,
    retired: watch::Sender<Option<LostReason>>,
    last_heard: StdMutex<Instant>,
    monitor: Arc<ConnectionMonitor>,
    /// The holds to tell on retirement; guards `retired` changes too.
    holds: StdMutex<Vec<Weak<dyn OnRetire>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("timeout", &self.timeout)
            .field("retired", &*self.retired.borrow())
            .finish()
    }
}

/// How long a session may go without a successful request before its holds are reported lost:
/// the timeout minus a margin of a third of it, at least one second when the timeout allows
/// (never less than half the timeout).
pub(crate) fn lost_after(timeout: Duration) -> Duration {
    let margin = (timeout / 3).max(Duration::from_secs(1).min(timeout / 2));
    timeout.saturating_sub(margin)
}

impl Session {
    /// Wraps a connected client and starts its supervisor and heartbeat.
    pub(crate) fn start(
        client: zk::Client,
        request_limit: Duration,
        monitor: Arc<ConnectionMonitor>,
        on_retired: impl FnOnce(LostReason) + Send + 'static,
    ) -> Arc<Session> {
        let timeout = client.session_timeout();
        let lost_after = lost_after(timeout);
        let states = client.state_watcher();
        let (retired, _) = watch::channel(None);
        let session = Arc::new(Session {
            id: client.session_id(),
            states: states.clone(),
            client: StdMutex::new(Some(client)),
            timeout,
            lost_after,
            request_limit,
            retired,
            last_heard: StdMutex::new(Instant::now()),
            monitor: monitor.clone(),
            holds: StdMutex::new(Vec::new()),
        });
        let span = tracing::info_span!("zk_session", session = %session.id);
        tokio::spawn(
            supervise(Arc::downgrade(&session), states, monitor, on_retired)
                .instrument(span.clone()),
        );
        tokio::spawn(heartbeat(Arc::downgrade(&session), lost_after).instrument(span));
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
    pub(crate) fn info(&self) -> Result<zk::SessionInfo, zk::Error> {
        Ok(self.client()?.session().clone())
    }

    /// Why the session was retired, if it was.
    pub(crate) fn retired_reason(&self) -> Option<LostReason> {
        self.retired.borrow().clone()
    }

    /// Resolves when the session is retired, with the reason.
    pub(crate) async fn retired(&self) -> LostReason {
        let mut rx = self.retired.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            // The sender lives in `self`, so this cannot happen while we are borrowed.
            Err(_) => None,
        };
        reason.unwrap_or(LostReason::Abandoned)
    }

    /// Retires the session: tells every registered hold, then reports `Lost` on the
    /// connection events (unless it was closed on purpose). Returns whether this call did it.
    pub(crate) fn retire(&self, reason: LostReason) -> bool {
        let holds = {
            let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
            let retired = self.retired.send_if_modified(|current| {
                if current.is_none() {
                    *current = Some(reason.clone());
                    true
                } else {
                    false
                }
            });
            if !retired {
                return false;
            }
            std::mem::take(&mut *holds)
        };
        for hold in holds.iter().filter_map(Weak::upgrade) {
            hold.session_retired(&reason);
        }
        if reason != LostReason::Abandoned {
            tracing::warn!(session = %self.id, %reason, "zookeeper session retired; its holds are lost");
            self.monitor.emit(ConnectionEvent::Lost);
        }
        true
    }

    /// Registers a hold to tell when the session is retired. If it already was, tells the hold
    /// at once.
    pub(crate) fn register(&self, hold: Weak<dyn OnRetire>) {
        let already = {
            let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
            match self.retired_reason() {
                Some(reason) => Some(reason),
                None => {
                    holds.retain(|h| h.strong_count() > 0);
                    holds.push(hold.clone());
                    None
                }
            }
        };
        if let (Some(reason), Some(hold)) = (already, hold.upgrade()) {
            hold.session_retired(&reason);
        }
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

    fn heard(&self, sent: Instant) {
        let mut last = self.last_heard.lock().unwrap_or_else(|p| p.into_inner());
        if sent > *last {
            *last = sent;
        }
    }

    /// When the holds must be reported lost unless a request succeeds before.
    fn doubt_at(&self) -> Instant {
        *self.last_heard.lock().unwrap_or_else(|p| p.into_inner()) + self.lost_after
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
    on_retired: impl FnOnce(LostReason) + Send + 'static,
) {
    let reason = loop {
        let Some(live) = session.upgrade() else {
            return;
        };
        if let Some(reason) = live.retired_reason() {
            break reason;
        }
        let doubt_at = live.doubt_at();
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
            _ = tokio::time::sleep_until(doubt_at) => {
                let Some(live) = session.upgrade() else { return };
                if Instant::now() >= live.doubt_at() {
                    live.retire(LostReason::Disconnected);
                }
            }
            _ = retired.wait_for(Option::is_some) => {}
        }
    };
    on_retired(reason);
}

/// Sends a `sync` every fifth of [`Session::lost_after`] and records when the last successful
/// one was sent.
///
/// `sync` rather than a read: a read is answered by whichever server the client is connected
/// to, even by a follower cut off from the leader (until it notices, up to `syncLimit` ticks
/// later), while the leader, which expires sessions, no longer hears about ours. A `sync`
/// completes only through the leader.
async fn heartbeat(session: Weak<Session>, lost_after: Duration) {
    let every = (lost_after / 5).max(Duration::from_millis(20));
    loop {
        tokio::time::sleep(every).await;
        let client = {
            let Some(live) = session.upgrade() else {
                return;
            };
            if live.retired_reason().is_some() {
                return;
            }
            let Ok(client) = live.client() else {
                return;
            };
            client
        };
        let sent = Instant::now();
        let answered = limited(lost_after, client.sync("/")).await;
        drop(client);
        match answered {
            Ok(_) => {
                if let Some(live) = session.upgrade() {
                    live.heard(sent);
                }
            }
            Err(error) => tracing::debug!(%error, "heartbeat failed"),
        }
    }
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
