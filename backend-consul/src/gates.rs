//! Local exclusion per key within one backend.
//!
//! All mutex holds of a backend share its session, and Consul grants `?acquire=` to the session
//! that already holds a key. So two tasks of one process must not both go to Consul for the same
//! key: each passes this key's gate first and keeps the pass while it holds (or cleans up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The gates of one backend, one per key in use.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The right to use one key on Consul; dropping it lets the next local task in.
#[derive(Debug)]
pub(crate) struct GatePass {
    guard: Option<OwnedMutexGuard<()>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    gates: Arc<Gates>,
    key: String,
}

impl Gates {
    fn gate(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }

    /// Waits for the gate of `key`.
    pub(crate) async fn enter(self: &Arc<Self>, key: &str) -> GatePass {
        let gate = self.gate(key);
        let guard = gate.clone().lock_owned().await;
        self.pass(key, gate, guard)
    }

    /// The gate of `key` if nobody else of this backend is using the key.
    pub(crate) fn try_enter(self: &Arc<Self>, key: &str) -> Option<GatePass> {
        let gate = self.gate(key);
        match gate.clone().try_lock_owned() {
            Ok(guard) => Some(self.pass(key, gate, guard)),
            Err(_) => {
                drop(gate);
                self.tidy(key);
                None
            }
        }
    }

    fn pass(
        self: &Arc<Self>,
        key: &str,
        gate: Arc<tokio::sync::Mutex<()>>,
        guard: OwnedMutexGuard<()>,
    ) -> GatePass {
        GatePass {
            guard: Some(guard),
            gate,
            gates: self.clone(),
            key: key.to_string(),
        }
    }

    /// Forgets the gate of `key` when nobody holds or waits for it.
    fn tidy(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|g| Arc::strong_count(g) == 1) {
            map.remove(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Our own clone of the gate must not count: swap it for a fresh, unshared one.
        let _ = std::mem::take(&mut self.gate);
        self.gates.tidy(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_pass_per_key_and_tidy() {
        let gates = Arc::new(Gates::default());
        let a = gates.enter("k").await;
        assert!(gates.try_enter("k").is_none());
        let other = gates.try_enter("j").expect("another key is free");
        let waiter = {
            let gates = gates.clone();
            tokio::spawn(async move { gates.enter("k").await })
        };
        drop(a);
        let b = waiter.await.unwrap();
        drop(b);
        drop(other);
        assert_eq!(gates.len(), 0);
    }
}
