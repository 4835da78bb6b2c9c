//! [`Health`]: turns request outcomes and session loss into connection events.

use lockcore::{ConnectionEvent, ConnectionEvents, ConnectionMonitor};

/// The connection state of one backend instance, fed by every request.
#[derive(Debug, Default)]
pub(crate) struct Health {
    monitor: ConnectionMonitor,
}

impl Health {
    /// Starts in [`ConnectionEvent::Connected`].
    pub(crate) fn new() -> Self {
        Health {
            monitor: ConnectionMonitor::new(),
        }
    }

    /// A request reached the agent and got an answer.
    pub(crate) fn reachable(&self) {
        if matches!(
            self.monitor.current(),
            ConnectionEvent::Suspended | ConnectionEvent::Lost
        ) {
            self.monitor.emit(ConnectionEvent::Reconnected);
        }
    }

    /// A request could not reach the agent (refused, reset, timed out).
    pub(crate) fn unreachable(&self) {
        if matches!(
            self.monitor.current(),
            ConnectionEvent::Connected | ConnectionEvent::Reconnected
        ) {
            self.monitor.emit(ConnectionEvent::Suspended);
        }
    }

    /// The backend's session is gone: every hold on it has been lost.
    pub(crate) fn session_lost(&self) {
        self.monitor.emit(ConnectionEvent::Lost);
    }

    /// A subscription to the events.
    pub(crate) fn subscribe(&self) -> ConnectionEvents {
        self.monitor.subscribe()
    }
}
