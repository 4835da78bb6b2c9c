//! Work that must finish after its owner is gone: drop-release and cancelled acquisitions.

use std::future::Future;
use std::pin::Pin;

use std::sync::{Arc, Mutex as StdMutex, OnceLock};

use tokio::runtime::Handle;

type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs `task` in the background on the current tokio runtime, or, outside any runtime, on
/// lockcore's own background runtime (one thread, started on first use). Never panics.
///
/// Drop paths (drop-release, cancelled acquisitions) call this so that a guard dropped after
/// its runtime is gone, or in a thread with no runtime at all, is still released.
pub fn spawn_detached(what: &'static str, task: impl Future<Output = ()> + Send + 'static) {
    spawn_detached_on(None, what, task);
}

/// Like [`spawn_detached`], also trying `runtime` (the runtime the hold was acquired on).
///
/// The task runs on the first runtime that accepts it, in this order: the current one (it is
/// alive: we are running in it), `runtime`, then lockcore's own background runtime. A runtime
/// that has shut down drops a spawned task without polling it; that is noticed and the next
/// runtime is tried, so a guard dropped after its runtime ended is still released.
pub fn spawn_detached_on(
    runtime: Option<&Handle>,
    what: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let slot: Arc<StdMutex<Option<Task>>> = Arc::new(StdMutex::new(Some(Box::pin(task))));
    let candidates = [Handle::try_current().ok(), runtime.cloned()];
    for handle in candidates.into_iter().flatten().chain(fallback_runtime()) {
        let mine = slot.clone();
        let join = handle.spawn(async move {
            let task = mine.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(task) = task {
                task.await;
            }
        });
        // A shut-down runtime cancels the task at once, before it took the work out of the
        // slot; a live one has it queued (or running).
        let still_here = slot.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if !(still_here && join.is_finished()) {
            return;
        }
    }
    tracing::error!(
        what,
        "no tokio runtime could run this cleanup; the store will reclaim it when the session \
         or TTL expires"
    );
}

/// The name of the background runtime's thread.
const BACKGROUND_THREAD: &str = "lockcore-background";

/// lockcore's own background runtime (one thread, started on first use), for cleanups that
/// must outlive the caller's runtime; `None` if it cannot be started.
///
/// A backend whose cleanups need the store after the caller's runtime may have ended (a CLI
/// exits right after a `lock_timeout`) opens a second connection *on this runtime* (spawn the
/// connect here) and runs those cleanups here.
pub fn background_runtime() -> Option<Handle> {
    fallback_runtime()
}

/// Whether the current thread is the background runtime's (code there must never block on a
/// task of that same runtime).
pub fn on_background_runtime() -> bool {
    std::thread::current().name() == Some(BACKGROUND_THREAD)
}

pub(crate) fn fallback_runtime() -> Option<Handle> {
    static RUNTIME: OnceLock<Option<Handle>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(BACKGROUND_THREAD)
                .build()
                .ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(BACKGROUND_THREAD.into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .clone()
}

type Make = Arc<dyn Fn() -> Task + Send + Sync>;

/// How often a restartable cleanup is started at most.
const MAX_STARTS: u32 = 3;

/// Runs `make()` in the background like [`spawn_detached`]; if the runtime running it shuts
/// down before it finished (a waiter on a short-lived runtime that timed out, then returned
/// from `block_on`), a fresh `make()` runs elsewhere (at most three starts in all). `make`
/// must be idempotent: an interrupted attempt is started again from the beginning.
pub fn spawn_restartable<F, Fut>(what: &'static str, make: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    spawn_restartable_on(None, what, make);
}

/// Like [`spawn_restartable`], with the first start placed like [`spawn_detached_on`] (the
/// current runtime, else `runtime`, else lockcore's own); restarts go to lockcore's own.
pub fn spawn_restartable_on<F, Fut>(runtime: Option<&Handle>, what: &'static str, make: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let make: Make = Arc::new(move || Box::pin(make()));
    start_on(runtime, what, make, 1);
}

fn start(what: &'static str, make: Make, starts: u32) {
    start_on(None, what, make, starts);
}

fn start_on(runtime: Option<&Handle>, what: &'static str, make: Make, starts: u32) {
    let mut guard = Restart {
        what,
        make: Some(make.clone()),
        starts,
    };
    let task = async move {
        make().await;
        guard.finished();
    };
    if starts == 1 {
        spawn_detached_on(runtime, what, task);
    } else if let Some(own) = fallback_runtime() {
        // The runtime that ran the last start is shutting down: go straight to lockcore's own.
        own.spawn(task);
    }
}

/// Starts the cleanup again if dropped before it finished.
struct Restart {
    what: &'static str,
    make: Option<Make>,
    starts: u32,
}

impl Restart {
    fn finished(&mut self) {
        self.make = None;
    }
}

impl Drop for Restart {
    fn drop(&mut self) {
        if let Some(make) = self.make.take() {
            if self.starts < MAX_STARTS {
                tracing::debug!(what = self.what, "cleanup cut short by its runtime; again");
                start(self.what, make, self.starts + 1);
            } else {
                tracing::warn!(
                    what = self.what,
                    "cleanup cut short {MAX_STARTS} times; gave up"
                );
            }
        }
    }
}

/// Like [`CancelCleanup`], but restartable: if dropped armed, runs `make()` with
/// [`spawn_restartable`], so a cancelled acquisition is cleaned up even when its runtime ends
/// right after the cancellation. `make` must be idempotent.
pub struct RestartableCleanup {
    what: &'static str,
    make: Option<Make>,
}

impl RestartableCleanup {
    /// Arms a cleanup; `what` names it in logs.
    pub fn new<F, Fut>(what: &'static str, make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        RestartableCleanup {
            what,
            make: Some(Arc::new(move || Box::pin(make()))),
        }
    }

    /// The acquisition finished normally: do not run the cleanup.
    pub fn disarm(mut self) {
        self.make = None;
    }
}

impl Drop for RestartableCleanup {
    fn drop(&mut self) {
        if let Some(make) = self.make.take() {
            tracing::debug!(what = self.what, "acquisition cancelled; cleaning up");
            start(self.what, make, 1);
        }
    }
}

impl std::fmt::Debug for RestartableCleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestartableCleanup")
            .field("what", &self.what)
            .field("armed", &self.make.is_some())
            .finish()
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
/// use tumbler_core::cleanup::CancelCleanup;
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
            spawn_detached_on(self.runtime.as_ref(), self.what, task);
        }
    }
}

/// A request that must run to its end even if its caller stops waiting for it (a lock
/// request already sent, whose answer decides what a cleanup must undo).
///
/// While awaited, the request is polled in place: no task is spawned and no thread hop is
/// added to its round trip. Dropped before it finished, the rest of it runs in the background,
/// placed like [`spawn_detached_on`] (the current runtime, else `runtime`, else lockcore's
/// own). Polling it again after it returned its output stays pending.
pub struct FinishOnDrop<F: Future + Send + 'static> {
    what: &'static str,
    future: Option<Pin<Box<F>>>,
    runtime: Option<Handle>,
}

impl<F: Future + Send + 'static> FinishOnDrop<F> {
    /// Wraps `future`; `what` names it in logs should no runtime take it over.
    pub fn new(what: &'static str, runtime: Option<Handle>, future: F) -> Self {
        FinishOnDrop {
            what,
            future: Some(Box::pin(future)),
            runtime,
        }
    }
}

impl<F: Future + Send + 'static> Future for FinishOnDrop<F> {
    type Output = F::Output;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            return std::task::Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        std::task::Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            tracing::debug!(
                what = self.what,
                "caller gone; finishing the request in the background"
            );
            spawn_detached_on(self.runtime.as_ref(), self.what, async move {
                let _ = future.await;
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_outside_any_runtime_runs_the_task() {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_detached("test", async move {
            tokio::task::yield_now().await;
            let _ = tx.send(42);
        });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)), Ok(42));
    }

    #[tokio::test]
    async fn a_request_awaited_to_its_end_runs_in_place() {
        // A spawned request would run as a task of its own, with its own id.
        let here = tokio::task::try_id();
        let request = FinishOnDrop::new("test", None, async move {
            tokio::task::yield_now().await;
            tokio::task::try_id()
        });
        assert_eq!(request.await, here, "the request ran as a task of its own");
    }

    #[tokio::test]
    async fn a_request_dropped_midway_finishes_in_the_background() {
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let request = FinishOnDrop::new("test", None, async move {
            let _ = gate_rx.await;
            let _ = done_tx.send("finished");
        });
        // Polled once (it waits at the gate), then given up.
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), request).await;
        assert!(waited.is_err(), "the request ended before its gate opened");
        let _ = gate_tx.send(());
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), done_rx).await;
        assert_eq!(done.ok().and_then(Result::ok), Some("finished"));
    }

    #[test]
    fn a_dead_runtime_hands_the_task_on() {
        let dead = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = dead.handle().clone();
        drop(dead);
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_detached_on(Some(&handle), "test", async move {
            let _ = tx.send(7);
        });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)), Ok(7));
    }

    #[test]
    fn a_restartable_cleanup_cut_short_by_its_runtime_runs_again() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let starts = Arc::new(AtomicU32::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Arc::new(StdMutex::new(tx));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let counted = starts.clone();
        runtime.block_on(async move {
            let cleanup = RestartableCleanup::new("test", move || {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let tx = tx.clone();
                async move {
                    if !on_background_runtime() {
                        // Still waiting on the caller's runtime when that is dropped.
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    }
                    let _ = tx.lock().unwrap().send(n);
                }
            });
            drop(cleanup);
        });
        drop(runtime); // ends before the cleanup ran to completion
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert!(matches!(got, Ok(1 | 2)), "{got:?}");
    }

    #[test]
    fn cleanup_dropped_outside_a_runtime_still_runs() {
        let (tx, rx) = std::sync::mpsc::channel();
        let cleanup = CancelCleanup::new("test", async move {
            let _ = tx.send(());
        });
        drop(cleanup);
        assert!(rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok());
    }
}
