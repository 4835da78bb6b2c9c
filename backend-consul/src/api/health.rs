//! [`Health`]: turns request outcomes and session loss into connection events.

use tumbler_core::{ConnectionEvent, ConnectionEvents, ConnectionMonitor};

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

    /// A request reached the agent and got an answer: a suspension ends (the session was
    /// kept). After [`Health::session_lost`] only [`Health::session_restored`] reconnects.
    pub(crate) fn reachable(&self) {
        if self.monitor.current() == ConnectionEvent::Suspended {
            self.monitor.emit(ConnectionEvent::Reconnected);
        }
    }

    /// A request could not reach the agent (refused, reset, timed out, stalled, or answered
    /// "not now").
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

    /// The backend has a usable session again after it was lost.
    pub(crate) fn session_restored(&self) {
        if self.monitor.current() == ConnectionEvent::Lost {
            self.monitor.emit(ConnectionEvent::Reconnected);
        }
    }

    /// A subscription to the events.
    pub(crate) fn subscribe(&self) -> ConnectionEvents {
        self.monitor.subscribe()
    }
}
