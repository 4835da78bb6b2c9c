//! Helpers the test cases share: verdicts, unique names, hooks, the exclusive-lock adapters
//! and a recorded workload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tumbler_core::{Capabilities, Fencing, Guard, LockName, SharedBackend};

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
) -> Result<tumbler_core::MutexGuard, String> {
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

/// The first answer of `call` that is not a transient error (a leader election or a blip is
/// no answer about the name), retried for up to [`PROMPT`]. Cases that run on clusters whose
/// leader is killed mid-case ask through it where a store request may meet the election.
pub async fn answered<T, F, Fut>(mut call: F) -> tumbler_core::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = tumbler_core::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        match call().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

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

/// A guard of any primitive, boxed, for code that holds them side by side.
fn boxed<G: Guard + 'static>(g: Option<G>) -> Option<Box<dyn Guard>> {
    g.map(|g| Box::new(g) as Box<dyn Guard>)
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
    /// The leadership of an election (its term is the token).
    Leadership,
}

impl Exclusive {
    /// Why this adapter cannot run on a backend, if it cannot.
    pub fn unsupported(&self, caps: &Capabilities) -> Option<Verdict> {
        let kind = match self {
            Exclusive::Mutex => Kind::Mutex,
            Exclusive::Semaphore1 => Kind::Semaphore,
            Exclusive::RwWrite => Kind::Write,
            Exclusive::Leadership if !caps.election => {
                return Some(Verdict::Skipped(format!(
                    "{} has no elections",
                    caps.backend
                )))
            }
            Exclusive::Leadership => return None,
        };
        kind.unsupported(caps).map(Verdict::Skipped)
    }

    /// Takes the lock `name` on `locks` the adapter's way.
    pub async fn acquire(
        &self,
        locks: &SharedBackend,
        name: &LockName,
        wait: Wait,
    ) -> tumbler_core::Result<Option<Box<dyn Guard>>> {
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
            Exclusive::Leadership => {
                let e = locks.election(name)?;
                let value = format!(
                    "candidate-{:x}",
                    std::ptr::addr_of!(*locks) as *const () as usize
                );
                boxed(match wait {
                    Wait::Forever => Some(e.campaign(value).await?),
                    Wait::No => e.try_campaign(value).await?,
                    Wait::For(d) => e.campaign_timeout(value, d).await?,
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

/// Runs `make()`'s future on a runtime of its own, on a thread of its own, and returns its
/// result. Everything a client connected inside it spawns (renewals, session pings) runs on
/// that runtime only, so blocking the thread (`std::thread::sleep`) stalls the client the way
/// a GC pause or SIGSTOP stalls a process.
pub async fn on_own_runtime<T, F, Fut>(make: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(make()),
            Err(e) => Err(format!("cannot build a runtime: {e}")),
        };
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| "the thread of the separate runtime panicked".to_string())?
}

/// The four ways to use a name, for the one-name-one-kind cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A mutex.
    Mutex,
    /// The read side of a read-write lock.
    Read,
    /// The write side of a read-write lock.
    Write,
    /// One permit of a semaphore with limit 2.
    Semaphore,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Mutex, Kind::Read, Kind::Write, Kind::Semaphore];

    /// The primitive, as error messages should name it.
    pub fn primitive(&self) -> &'static str {
        match self {
            Kind::Mutex => "mutex",
            Kind::Read | Kind::Write => "rwlock",
            Kind::Semaphore => "semaphore",
        }
    }

    /// Whether an error message names this primitive (in any of the usual words).
    pub fn named_in(&self, message: &str) -> bool {
        let message = message.to_lowercase();
        let words: &[&str] = match self {
            Kind::Mutex => &["mutex"],
            Kind::Read | Kind::Write => &["rwlock", "read-write", "read", "write"],
            Kind::Semaphore => &["semaphore", "permit"],
        };
        words.iter().any(|w| message.contains(w))
    }

    /// Why this kind cannot run on a backend, if it cannot.
    pub fn unsupported(&self, caps: &Capabilities) -> Option<String> {
        match self {
            Kind::Read | Kind::Write if !caps.rwlock => {
                Some(format!("{} has no read-write locks", caps.backend))
            }
            Kind::Semaphore if !caps.semaphore => {
                Some(format!("{} has no semaphores", caps.backend))
            }
            _ => None,
        }
    }

    /// Takes `name` this way on `locks`.
    pub async fn acquire(
        &self,
        locks: &SharedBackend,
        name: &LockName,
        wait: Wait,
    ) -> tumbler_core::Result<Option<Box<dyn Guard>>> {
        Ok(match self {
            Kind::Mutex => Exclusive::Mutex.acquire(locks, name, wait).await?,
            Kind::Write => Exclusive::RwWrite.acquire(locks, name, wait).await?,
            Kind::Read => {
                let rw = locks.rwlock(name)?;
                boxed(match wait {
                    Wait::Forever => Some(rw.read().await?),
                    Wait::No => rw.try_read().await?,
                    Wait::For(d) => rw.read_timeout(d).await?,
                })
            }
            Kind::Semaphore => {
                let s = locks.semaphore(name, 2)?;
                boxed(match wait {
                    Wait::Forever => Some(s.acquire(1).await?),
                    Wait::No => s.try_acquire(1).await?,
                    Wait::For(d) => s.acquire_timeout(1, d).await?,
                })
            }
        })
    }
}

/// Waits until `locks.state(name)` shows `count` or more waiters (or, if the store cannot list
/// waiters, half a second).
pub async fn wait_until_queued(
    locks: &SharedBackend,
    name: &LockName,
    count: usize,
) -> Result<(), String> {
    crate::cases::semaphore::wait_until_queued(locks, name, count).await
}
