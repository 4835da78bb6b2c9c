//! Issue 12 A.6: guards outlive nothing silently. A guard dropped outside any runtime does not
//! panic, one dropped inside another runtime is still released, and `shutdown()` releases
//! every hold and waiter of its backend.

use std::sync::Arc;
use std::time::Duration;

use tumbler_core::{LockName, MutexGuard};

use crate::util::{lock, unique_name, wait_until_queued, CaseResult, Context, Verdict, PROMPT};
use crate::{ensure, Harness, TestClient};

/// A runtime of the case's own, kept running (its client keeps renewing) until dropped.
struct OtherRuntime(Option<tokio::runtime::Runtime>);

impl OtherRuntime {
    fn start() -> Result<Self, String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map(|rt| OtherRuntime(Some(rt)))
            .map_err(|e| format!("cannot build a runtime: {e}"))
    }

    /// A client connected on this runtime, holding the mutex `name`.
    async fn hold(
        &self,
        h: &Arc<dyn Harness>,
        name: &LockName,
    ) -> Result<(TestClient, MutexGuard), String> {
        let rt = self.0.as_ref().ok_or("the runtime is gone")?;
        let (h, name) = (h.clone(), name.clone());
        rt.spawn(async move {
            let a = h.client().await?;
            let guard = lock(&a, &name, "A").await?;
            Ok::<_, String>((a, guard))
        })
        .await
        .ctx("the other runtime's task")?
    }
}

impl OtherRuntime {
    /// Shuts the runtime down and waits until its threads are gone (dropping it, as the end of
    /// `#[tokio::main]` does), from a thread of its own since dropping a runtime blocks.
    async fn shut_down(mut self) -> Result<(), String> {
        let Some(rt) = self.0.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || std::thread::spawn(move || drop(rt)).join())
            .await
            .ctx("the runtime's shutdown task")?
            .map_err(|_| "dropping the runtime panicked".to_string())
    }
}

/// Runs `work` on a new thread that has no tokio runtime and returns the panics it caused
/// there, caught or not (tokio catches a panic raised while it drops a cancelled task, but the
/// user's program still prints it, and the cleanup it was to do is lost).
fn panics_without_runtime(work: impl FnOnce() + Send + 'static) -> Vec<String> {
    use std::sync::{Mutex, Once};
    static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static HOOK: Once = Once::new();
    const PREFIX: &str = "conformance-no-runtime-";
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if let Some(name) = thread.name().filter(|n| n.starts_with(PREFIX)) {
                PANICS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!(
                        "{name}: {}",
                        info.to_string()
                            .lines()
                            .take(2)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
            }
            previous(info);
        }));
    });
    let name = format!(
        "{PREFIX}{}",
        unique_name("thread").as_str().replace('/', "-")
    );
    let joined = std::thread::Builder::new()
        .name(name.clone())
        .spawn(work)
        .map(|t| t.join());
    let mut seen: Vec<String> = PANICS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|p| p.starts_with(&name))
        .cloned()
        .collect();
    match joined {
        Err(e) => seen.push(format!("cannot start a thread: {e}")),
        Ok(Err(_)) if seen.is_empty() => seen.push(format!("{name} panicked")),
        Ok(_) => {}
    }
    seen
}

impl Drop for OtherRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // Dropping a runtime blocks, which an async context forbids.
            rt.shutdown_background();
        }
    }
}

/// Waits up to `within` for B to get `name`, which nobody renews or holds any more.
async fn rival_gets(b: &TestClient, name: &LockName, within: Duration) -> Result<(), String> {
    let guard = b
        .locks
        .mutex(name)
        .ctx("mutex")?
        .lock_timeout(within)
        .await
        .ctx("B's lock")?
        .ok_or_else(|| {
            format!("B did not get {name} within {within:?} of A's guard being dropped")
        })?;
    guard.release().await.ctx("B's release")
}

/// A guard taken on a live runtime and dropped on a thread with no runtime: no panic, and the
/// lock is released although the runtime keeps renewing the client's session. Then a guard
/// and its client outlive their runtime (shut down, as at the end of `main`) and are dropped on
/// a thread with no runtime at all: no panic either, and the lock is free again in time.
pub async fn drop_outside_runtime_does_not_panic(h: Arc<dyn Harness>) -> CaseResult {
    let b = h.client().await?;
    let name = unique_name("drop-outside");
    let other = OtherRuntime::start()?;
    let (a, guard) = other.hold(&h, &name).await?;
    let panics = panics_without_runtime(move || drop(guard));
    ensure!(
        panics.is_empty(),
        "dropping a guard on a thread without a tokio runtime panicked: {}",
        panics.join("; ")
    );
    rival_gets(&b, &name, h.crash_release_bound()).await?;
    drop(a);
    drop(other);

    let name = unique_name("drop-after-runtime");
    let other = OtherRuntime::start()?;
    let (a, guard) = other.hold(&h, &name).await?;
    other.shut_down().await?;
    let panics = panics_without_runtime(move || {
        drop(guard);
        drop(a);
    });
    ensure!(
        panics.is_empty(),
        "dropping a guard and its client after their runtime shut down, on a thread without a \
         runtime, panicked: {}",
        panics.join("; ")
    );
    rival_gets(&b, &name, h.crash_release_bound()).await?;
    Ok(Verdict::Passed)
}

/// A guard taken on one runtime and dropped inside another (the test's): still released,
/// although the first runtime keeps renewing the client's session. Then a guard dropped inside
/// a runtime that ends right after the drop (a `block_on` wrapper, the end of a
/// current-thread `main`): a release spawned there is dropped unpolled, yet the lock must still
/// be released, as the client's session is kept alive on the first runtime and would keep it
/// held.
pub async fn drop_in_other_runtime_releases(h: Arc<dyn Harness>) -> CaseResult {
    let b = h.client().await?;
    let name = unique_name("drop-other-rt");
    let other = OtherRuntime::start()?;
    let (a, guard) = other.hold(&h, &name).await?;
    drop(guard);
    rival_gets(&b, &name, h.crash_release_bound()).await?;

    let name = unique_name("drop-ending-rt");
    let (a2, guard) = other.hold(&h, &name).await?;
    tokio::task::spawn_blocking(move || {
        let ending = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a runtime: {e}"))?;
        ending.block_on(async move { drop(guard) });
        drop(ending);
        Ok::<_, String>(())
    })
    .await
    .ctx("the ending runtime's thread")??;
    rival_gets(&b, &name, h.crash_release_bound()).await?;
    drop(a2);
    drop(a);
    drop(other);
    Ok(Verdict::Passed)
}

/// A holds one lock and waits for another; `shutdown()` frees the held lock at once (a rival's
/// `try_lock` gets it as soon as shutdown returns) and ends the wait with an error.
pub async fn shutdown_releases_holds_and_waiters(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    let (held_name, waited_name) = (unique_name("shutdown-held"), unique_name("shutdown-wait"));
    let held = lock(&a, &held_name, "A").await?;
    let blocker = lock(&b, &waited_name, "B").await?;
    let a_mutex = a.locks.mutex(&waited_name).ctx("mutex")?;
    let waiting = tokio::spawn(async move { a_mutex.lock().await });
    wait_until_queued(&c.locks, &waited_name, 1).await?;
    tokio::time::timeout(PROMPT, a.locks.shutdown())
        .await
        .map_err(|_| format!("shutdown() did not return within {PROMPT:?}"))?
        .ctx("shutdown")?;
    let freed = c
        .locks
        .mutex(&held_name)
        .ctx("mutex")?
        .try_lock()
        .await
        .ctx("C's try_lock")?
        .ok_or("shutdown() returned but A's hold was still there: it was not released")?;
    freed.release().await.ctx("C's release")?;
    let ended = tokio::time::timeout(PROMPT, waiting)
        .await
        .map_err(|_| format!("A's wait was still running {PROMPT:?} after shutdown()"))?
        .ctx("A's waiting task")?;
    ensure!(
        ended.is_err(),
        "A's wait was granted after shutdown(): {:?}",
        ended.map(|g| g.fencing_token())
    );
    blocker.release().await.ctx("B's release")?;
    let after = c
        .locks
        .mutex(&waited_name)
        .ctx("mutex")?
        .try_lock()
        .await
        .ctx("C's try_lock")?
        .ok_or("the shut-down backend's waiter still blocks the lock B released")?;
    after.release().await.ctx("C's release")?;
    drop(held);
    Ok(Verdict::Passed)
}
