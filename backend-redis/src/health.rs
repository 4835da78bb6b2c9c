//! The connection health of a backend's servers, as [`ConnectionEvent`]s.

use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use tumbler_core::{ConnectionEvent, ConnectionMonitor};

/// Connection health of every node of one backend, published as [`ConnectionEvent`]s:
/// `Suspended` as soon as a request to a node fails or its connection drops, `Lost` once so
/// many nodes stayed unreachable for a whole TTL that every hold of the backend has expired on
/// the servers, `Reconnected` when all are back.
pub(crate) struct Health {
    pub(crate) monitor: ConnectionMonitor,
    /// Since when each node has been unreachable.
    down: StdMutex<Vec<Option<Instant>>>,
    /// How many nodes may stay unreachable past the TTL with holds still valid (0 on one
    /// server; the masters beyond a majority in Redlock).
    tolerated: usize,
    pub(crate) ttl: Duration,
}

impl Health {
    pub(crate) fn new(nodes: usize, tolerated: usize, ttl: Duration) -> Self {
        Health {
            monitor: ConnectionMonitor::new(),
            down: StdMutex::new(vec![None; nodes]),
            tolerated,
            ttl,
        }
    }

    /// Records node `index` as up or down; returns true if it just went down.
    pub(crate) fn set(&self, index: usize, down: bool) -> bool {
        let mut all = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let was_any = all.iter().any(Option::is_some);
        let mut newly_down = false;
        if let Some(slot) = all.get_mut(index) {
            match (slot.is_some(), down) {
                (false, true) => {
                    *slot = Some(Instant::now());
                    newly_down = true;
                }
                (true, false) => *slot = None,
                _ => {}
            }
        }
        let is_any = all.iter().any(Option::is_some);
        drop(all);
        match (was_any, is_any) {
            (false, true) => {
                self.monitor.emit(ConnectionEvent::Suspended);
            }
            (true, false) => {
                self.monitor.emit(ConnectionEvent::Reconnected);
            }
            _ => {}
        }
        newly_down
    }

    /// Reports `Lost` if more nodes than tolerated have been unreachable for a TTL or longer.
    pub(crate) fn check_lost(&self) {
        let all = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let long_gone = all
            .iter()
            .filter(|since| since.is_some_and(|at| at.elapsed() >= self.ttl))
            .count();
        drop(all);
        if long_gone > self.tolerated {
            self.monitor.emit(ConnectionEvent::Lost);
        }
    }
}
