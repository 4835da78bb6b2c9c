//! Work that must finish after its owner is gone: drop-release and cancelled acquisitions.

use std::future::Future;
use std::pin::Pin;

use tokio::runtime::Handle;

type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs `task` in the background on `runtime` (or the current runtime). Returns false, and
/// logs an error, when no runtime is available to run it.
pub(crate) fn spawn_detached(
    runtime: Option<&Handle>,
    what: &str,
    task: impl Future<Output = ()> + Send + 'static,
) -> bool {
    let handle = runtime.cloned().or_else(|| Handle::try_current().ok());
    match handle {
        Some(handle) => {
            handle.spawn(task);
            true
        }
        None => {
            tracing::error!(
                what,
                "no tokio runtime is running, so this cleanup cannot run; the store will \
                 reclaim it when the session or TTL expires"
            );
            false
        }
    }
}

/// Cleanup for a cancel-safe acquisition: runs a future in the background if this value is
/// dropped before [`CancelCleanup::disarm`] is called.
///
/// A backend creates one right after it put something on the store (a queue node, a waiting
/// key) and disarms it once the acquisition returned; if the caller drops the acquire future in
/// between, the cleanup removes what was put.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use lockcore::cleanup::CancelCleanup;
///
/// let cleaned = Arc::new(AtomicBool::new(false));
/// let flag = cleaned.clone();
/// let (done_tx, done_rx) = tokio::sync::oneshot::channel();
/// let guard = CancelCleanup::new("remove queue node", async move {
///     flag.store(true, Ordering::SeqCst);
///     let _ = done_tx.send(());
/// });
/// drop(guard); // the acquisition was cancelled
/// done_rx.await.unwrap();
/// assert!(cleaned.load(Ordering::SeqCst));
/// # }
/// ```
pub struct CancelCleanup {
    what: &'static str,
    task: Option<Task>,
    runtime: Option<Handle>,
}

impl CancelCleanup {
    /// Arms a cleanup; `what` names it in logs.
    pub fn new(what: &'static str, task: impl Future<Output = ()> + Send + 'static) -> Self {
        CancelCleanup {
            what,
            task: Some(Box::pin(task)),
            runtime: Handle::try_current().ok(),
        }
    }

    /// The acquisition finished normally: do not run the cleanup.
    pub fn disarm(mut self) {
        self.task = None;
    }
}

impl Drop for CancelCleanup {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            tracing::debug!(what = self.what, "acquisition cancelled; cleaning up");
            spawn_detached(self.runtime.as_ref(), self.what, task);
        }
    }
}

impl std::fmt::Debug for CancelCleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelCleanup")
            .field("what", &self.what)
            .field("armed", &self.task.is_some())
            .finish()
    }
}
