//! Helpers the test cases share: verdicts, unique names, hooks, the exclusive-lock adapters
//! and a recorded workload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockcore::{Capabilities, Fencing, Guard, LockName, SharedBackend};

use crate::history::{History, Interval, Mode};

/// How a case ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check held.
    Passed,
    /// The case could not run on this backend, for this reason.
    Skipped(String),
}

/// What a case returns: a verdict, or the reason it failed.
pub type CaseResult = Result<Verdict, String>;

/// Fails the case with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Runs a fault hook: skips the case if the backend lacks it, fails it if the hook failed.
#[macro_export]
macro_rules! hook {
    ($call:expr) => {
        match $call {
            Ok(value) => value,
            Err($crate::HookError::Unsupported(why)) => {
                return Ok($crate::util::Verdict::Skipped(why))
            }
            Err($crate::HookError::Failed(why)) => return Err(format!("fault hook failed: {why}")),
        }
    };
}

/// Adds context to a lock error.
pub trait Context<T> {
    /// Turns the error into a case failure that says what was being done.
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Takes the mutex `name` on `client`, waiting for it; a failure names `who` ("A", "B").
pub async fn lock(
    client: &crate::TestClient,
    name: &LockName,
    who: &str,
) -> Result<lockcore::MutexGuard, String> {
    client
        .locks
        .mutex(name)
        .ctx("mutex")?
        .lock()
        .await
        .ctx(&format!("{who}'s lock"))
}

/// A lock name no other case or run uses.
pub fn unique_name(case: &str) -> LockName {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let text = format!("conformance/{case}/{:x}-{}-{n}", nanos, std::process::id());
    // The name is built from safe characters only.
    LockName::new(text).unwrap_or_else(|e| panic!("test name is invalid: {e}"))
}

/// Skips unless fencing tokens are promised to increase.
pub fn needs_strict_fencing(caps: &Capabilities) -> Option<Verdict> {
    (caps.fencing != Fencing::StrictlyIncreasing).then(|| {
        Verdict::Skipped(format!(
            "{} does not promise strictly increasing tokens ({:?})",
            caps.backend, caps.fencing
        ))
    })
}

/// How long a case waits for something that should happen promptly.
pub const PROMPT: Duration = Duration::from_secs(20);

/// How to wait in an adapter acquisition.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Until granted.
    Forever,
    /// One attempt.
    No,
    /// At most this long.
    For(Duration),
}

/// The three ways the suite takes an exclusive lock: the mutex tests run on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusive {
    /// A mutex.
    Mutex,
    /// A semaphore with limit 1.
    Semaphore1,
    /// The write side of a read-write lock.
    RwWrite,
}

impl Exclusive {
    /// Why this adapter cannot run on a backend, if it cannot.
    pub fn unsupported(&self, caps: &Capabilities) -> Option<Verdict> {
        match self {
            Exclusive::Mutex => None,
            Exclusive::Semaphore1 if !caps.semaphore => Some(Verdict::Skipped(format!(
                "{} has no semaphores",
                caps.backend
            ))),
            Exclusive::RwWrite if !caps.rwlock => Some(Verdict::Skipped(format!(
                "{} has no read-write locks",
                caps.backend
            ))),
            _ => None,
        }
    }

    /// Takes the lock `name` on `locks` the adapter's way.
    pub async fn acquire(
        &self,
        locks: &SharedBackend,
        name: &LockName,
        wait: Wait,
    ) -> lockcore::Result<Option<Box<dyn Guard>>> {
        fn boxed<G: Guard + 'static>(g: Option<G>) -> Option<Box<dyn Guard>> {
            g.map(|g| Box::new(g) as Box<dyn Guard>)
        }
        Ok(match self {
            Exclusive::Mutex => {
                let m = locks.mutex(name)?;
                boxed(match wait {
                    Wait::Forever => Some(m.lock().await?),
                    Wait::No => m.try_lock().await?,
                    Wait::For(d) => m.lock_timeout(d).await?,
                })
            }
            Exclusive::Semaphore1 => {
                let s = locks.semaphore(name, 1)?;
                boxed(match wait {
                    Wait::Forever => Some(s.acquire(1).await?),
                    Wait::No => s.try_acquire(1).await?,
                    Wait::For(d) => s.acquire_timeout(1, d).await?,
                })
            }
            Exclusive::RwWrite => {
                let rw = locks.rwlock(name)?;
                boxed(match wait {
                    Wait::Forever => Some(rw.write().await?),
                    Wait::No => rw.try_write().await?,
                    Wait::For(d) => rw.write_timeout(d).await?,
                })
            }
        })
    }
}

/// Runs `rounds` acquire/work/release rounds on one client, recording each hold.
pub async fn exclusive_rounds(
    adapter: Exclusive,
    locks: SharedBackend,
    client: usize,
    name: LockName,
    rounds: usize,
    history: History,
) -> Result<(), String> {
    for _ in 0..rounds {
        let guard = adapter
            .acquire(&locks, &name, Wait::For(PROMPT * 3))
            .await
            .ctx("acquire in workload")?
            .ok_or_else(|| format!("client {client} waited {:?} without the lock", PROMPT * 3))?;
        let start = Instant::now();
        // The protected work: long enough for an overlap to show.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let end = Instant::now();
        history.record(Interval {
            client,
            mode: Mode::Exclusive,
            token: guard.fencing_token(),
            start,
            end,
        });
        guard.release_boxed().await.ctx("release in workload")?;
    }
    Ok(())
}
