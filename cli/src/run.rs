//! `tumbler run`: run a command while holding a lock, like `flock`, `etcdctl lock` and
//! `consul lock`.

use std::time::Duration;

use tumbler_locks::params::format_duration;
use tumbler_locks::{Guard, LockName, SharedBackend};

use crate::exit;
use crate::interrupt::Interrupts;
use crate::recovery::Recovery;
use crate::supervise::{supervise, Supervised};

/// What `tumbler run` was asked to do.
pub struct RunArgs {
    pub name: String,
    pub timeout: Option<Duration>,
    pub no_wait: bool,
    pub semaphore: Option<u32>,
    pub grace: Duration,
    pub command: Vec<String>,
}

/// Runs the command under the lock and returns the process exit code. Every path out of here
/// has cancelled its wait or released (or tried to release) its hold; the caller then shuts the
/// backend down, which finishes any cleanup still running.
/// `interrupts` must be listening already, so that SIGINT/SIGTERM never kill tumbler: a
/// waiter leaves the queue first, a holder forwards them to its command.
pub async fn run(
    locks: SharedBackend,
    args: RunArgs,
    interrupts: &mut Interrupts,
) -> Result<i32, String> {
    let name = LockName::new(args.name.clone()).map_err(|e| e.to_string())?;
    if args.command.is_empty() {
        return Err("no command given; write: tumbler run NAME -- COMMAND [ARGS...]".into());
    }
    if !args.no_wait {
        if let Some(recovery) = Recovery::check(&locks).await {
            eprintln!("tumbler: waiting for {name}: {}", recovery.describe());
        }
    }
    let spinner = if args.no_wait {
        None
    } else {
        crate::spinner::start(locks.clone(), name.clone())
    };
    let acquired = tokio::select! {
        acquired = acquire(&locks, &name, &args) => Ok(acquired),
        // Dropping the acquisition cancels it; the backend's cleanup of the queue entry is
        // awaited by the caller's shutdown().
        signal = interrupts.recv() => Err(signal),
    };
    crate::spinner::stop(spinner);
    let acquired = match acquired {
        Ok(acquired) => acquired,
        Err(signal) => {
            eprintln!("tumbler: interrupted while waiting for {name}; gave up waiting");
            return Ok(exit::from_signal(signal));
        }
    };
    let guard = match acquired {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            let why = match Recovery::check(&locks).await {
                Some(recovery) => recovery.describe(),
                None => "it is held by someone else".into(),
            };
            let waited = match args.timeout {
                Some(t) if !args.no_wait => format!(" within {}", format_duration(t)),
                _ => String::new(),
            };
            eprintln!("tumbler: {name} not acquired{waited}: {why}");
            return Ok(exit::BUSY);
        }
        // Not acquired for now, but nothing is wrong: busy, like a held lock.
        Err(e @ tumbler_locks::Error::Recovering { .. }) => {
            eprintln!("tumbler: {name} not acquired: {e}");
            return Ok(exit::BUSY);
        }
        Err(e) => return Err(e.to_string()),
    };

    let token = guard.fencing_token().to_string();
    let job = Supervised {
        command: &args.command,
        env: vec![
            ("TUMBLER_LOCK_NAME", name.to_string()),
            ("TUMBLER_FENCING_TOKEN", token),
        ],
        grace: args.grace,
        what: name.to_string(),
    };
    Ok(supervise(guard, job, interrupts).await)
}

async fn acquire(
    locks: &SharedBackend,
    name: &LockName,
    args: &RunArgs,
) -> tumbler_locks::Result<Option<Box<dyn Guard>>> {
    fn boxed<G: Guard + 'static>(g: Option<G>) -> Option<Box<dyn Guard>> {
        g.map(|g| Box::new(g) as Box<dyn Guard>)
    }
    match args.semaphore {
        Some(limit) => {
            let sem = locks.semaphore(name, limit)?;
            Ok(boxed(if args.no_wait {
                sem.try_acquire(1).await?
            } else if let Some(timeout) = args.timeout {
                sem.acquire_timeout(1, timeout).await?
            } else {
                Some(sem.acquire(1).await?)
            }))
        }
        None => {
            let mutex = locks.mutex(name)?;
            Ok(boxed(if args.no_wait {
                mutex.try_lock().await?
            } else if let Some(timeout) = args.timeout {
                mutex.lock_timeout(timeout).await?
            } else {
                Some(mutex.lock().await?)
            }))
        }
    }
}
