//! A hold's loss signal as a value of its own, to watch from another task.

use crate::name::LockName;
use crate::signals::{HoldSignals, LostReason};

/// A cheap, cloneable handle on one hold's `lost()` signal, from
/// [`MutexGuard::loss_signal`](crate::MutexGuard::loss_signal) (and the same method of every
/// guard and lease).
///
/// It is `Clone + Send + Sync + 'static`, so a spawned task can wait for the loss while the
/// guard stays where the work is, with no `Arc` around the guard. It only observes: it holds
/// nothing, and the lock is released by the guard as always.
///
/// Once the guard is released or dropped, nobody vouches for the hold any more, so a handle
/// that outlives its guard sees the hold lost too (with the backend's reason, or
/// [`LostReason::Abandoned`] when the backend stops watching it).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
/// let store = tumbler_core::memory::MemoryStore::new();
/// let locks = store.connect(Default::default()).await?;
/// let guard = locks.mutex("jobs/nightly")?.lock().await?;
///
/// let signal = guard.loss_signal();
/// let watcher = tokio::spawn(async move { signal.lost().await });
///
/// store.force_release("jobs/nightly")?; // an administrator breaks the lock
/// let reason = watcher.await.expect("the watcher ran");
/// assert_eq!(guard.lost_reason(), Some(reason));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LossSignal {
    name: LockName,
    signals: HoldSignals,
}

impl LossSignal {
    pub(crate) fn new(name: LockName, signals: HoldSignals) -> Self {
        LossSignal { name, signals }
    }

    /// The lock whose hold this signal watches.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// Resolves when ownership can no longer be guaranteed, with the reason: the same moment
    /// and reason as the guard's own `lost()`.
    pub async fn lost(&self) -> LostReason {
        self.signals.lost().await
    }

    /// Whether the hold has been lost, and why; like the guard's `lost_reason()`, this also
    /// sees a validity deadline that passed while the process was stopped.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.signals.lost_reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryOptions, MemoryStore};

    fn watchable_from_a_spawned_task<T: Clone + Send + Sync + 'static>(_: &T) {}

    #[tokio::test]
    async fn a_spawned_task_sees_the_loss_while_the_guard_stays() {
        let store = MemoryStore::new();
        let locks = store.connect(MemoryOptions::default()).await.unwrap();
        let guard = locks.mutex("loss/spawned").unwrap().lock().await.unwrap();
        let signal = guard.loss_signal();
        watchable_from_a_spawned_task(&signal);
        assert_eq!(signal.name().as_str(), "loss/spawned");
        assert_eq!(signal.lost_reason(), None);
        let watcher = tokio::spawn({
            let signal = signal.clone();
            async move { signal.lost().await }
        });
        assert_eq!(store.force_release("loss/spawned").unwrap(), 1);
        let reason = watcher.await.unwrap();
        assert_eq!(guard.lost_reason(), Some(reason.clone()));
        assert_eq!(signal.lost_reason(), Some(reason));
    }

    #[tokio::test]
    async fn every_guard_kind_hands_out_its_signal() {
        let store = MemoryStore::new();
        let locks = store.connect(MemoryOptions::default()).await.unwrap();
        let lease = locks
            .semaphore("loss/sem", 2)
            .unwrap()
            .acquire(1)
            .await
            .unwrap();
        let read = locks.rwlock("loss/rw").unwrap().read().await.unwrap();
        let reentrant = locks
            .reentrant_mutex("loss/re")
            .unwrap()
            .lock()
            .await
            .unwrap();
        let multi = crate::MultiLock::new(vec![locks.mutex("loss/multi").unwrap()])
            .lock()
            .await
            .unwrap();
        let signals = [
            lease.loss_signal(),
            read.loss_signal(),
            reentrant.loss_signal(),
            multi.loss_signals().remove(0),
        ];
        let names: Vec<&str> = signals.iter().map(|s| s.name().as_str()).collect();
        assert_eq!(names, ["loss/sem", "loss/rw", "loss/re", "loss/multi"]);
        store.restart();
        for signal in signals {
            let reason = tokio::spawn(async move { signal.lost().await })
                .await
                .unwrap();
            assert_eq!(reason, LostReason::ServerRestarted, "{reason}");
        }
    }
}
