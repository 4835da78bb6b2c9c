//! Connection events of a backend: Connected, Suspended, Lost, Reconnected.
//!
//! Every store reports the same sequence (Curator's connection states are the model):
//!
//! ```text
//! Connected ──► Suspended ──► Reconnected            (the session or holds survived)
//!                   │
//!                   └───────► Lost ──► Reconnected   (every hold was lost; a new session
//!                                                     serves later acquisitions)
//! ```
//!
//! - **Suspended**: as soon as a request fails or the connection drops. While the backend is
//!   Suspended or Lost, a `lock_timeout` that runs out is an error, not "busy".
//! - **Lost**: the store expired the session or lease (ZooKeeper, etcd, Consul) or, on Redis,
//!   the cut lasted longer than the lock TTL, so no hold of this backend can be vouched for.
//! - **Reconnected**: requests succeed again.

use tokio::sync::{broadcast, watch};

/// The state of a backend's connection to its store, as reported by the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionEvent {
    /// Connected for the first time.
    Connected,
    /// The connection dropped; holds may still be valid (the session has not expired yet).
    Suspended,
    /// The session is gone: every hold of this backend has been lost.
    Lost,
    /// Connected again after a suspension; holds whose `lost()` did not fire are still valid.
    Reconnected,
}

/// The backend's end: publishes connection events.
#[derive(Debug)]
pub struct ConnectionMonitor {
    events: broadcast::Sender<ConnectionEvent>,
    current: watch::Sender<ConnectionEvent>,
}

impl Default for ConnectionMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectionMonitor {
    /// A monitor whose current state is [`ConnectionEvent::Connected`].
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(64);
        let (current, _) = watch::channel(ConnectionEvent::Connected);
        ConnectionMonitor { events, current }
    }

    /// Publishes `event` if it differs from the current state. Returns whether it was published.
    pub fn emit(&self, event: ConnectionEvent) -> bool {
        let changed = self.current.send_if_modified(|now| {
            if *now == event {
                false
            } else {
                *now = event;
                true
            }
        });
        if changed {
            tracing::info!(?event, "connection state changed");
            let _ = self.events.send(event);
        }
        changed
    }

    /// The current state.
    pub fn current(&self) -> ConnectionEvent {
        *self.current.borrow()
    }

    /// A subscription that sees every later event.
    pub fn subscribe(&self) -> ConnectionEvents {
        ConnectionEvents {
            events: self.events.subscribe(),
            current: self.current.subscribe(),
        }
    }
}

/// A stream of connection events, from [`crate::LockBackend::connection_events`].
#[derive(Debug)]
pub struct ConnectionEvents {
    events: broadcast::Receiver<ConnectionEvent>,
    current: watch::Receiver<ConnectionEvent>,
}

impl ConnectionEvents {
    /// The next event. If events came faster than they were read, skips to the current state.
    /// Returns `None` once the backend is gone.
    pub async fn next(&mut self) -> Option<ConnectionEvent> {
        match self.events.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(*self.current.borrow()),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The current state.
    pub fn current(&self) -> ConnectionEvent {
        *self.current.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn emits_changes_only() {
        let monitor = ConnectionMonitor::new();
        let mut events = monitor.subscribe();
        assert!(!monitor.emit(ConnectionEvent::Connected));
        assert!(monitor.emit(ConnectionEvent::Suspended));
        assert!(monitor.emit(ConnectionEvent::Reconnected));
        assert_eq!(events.next().await, Some(ConnectionEvent::Suspended));
        assert_eq!(events.next().await, Some(ConnectionEvent::Reconnected));
        assert_eq!(events.current(), ConnectionEvent::Reconnected);
        drop(monitor);
        assert_eq!(events.next().await, None);
    }
}
