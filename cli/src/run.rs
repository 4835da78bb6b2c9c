//! `tumbler run`: run a command while holding a lock, like `flock`, `etcdctl lock` and
//! `consul lock`.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tumbler_locks::params::format_duration;
use tumbler_locks::{Guard, LockName, SharedBackend};

use crate::exit;
use crate::interrupt::Interrupts;
use crate::recovery::Recovery;

/// How long tumbler waits for the store to confirm a release before exiting anyway (the store
/// then frees the lock when its session or TTL runs out).
const RELEASE_LIMIT: Duration = Duration::from_secs(3);
/// The same for a hold already lost: the store no longer has it (or soon forgets it), so the
/// release is a courtesy, and the store is often the reason it was lost.
const LOST_RELEASE_LIMIT: Duration = Duration::from_secs(1);

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
    let Some((program, program_args)) = args.command.split_first() else {
        return Err("no command given; write: tumbler run NAME -- COMMAND [ARGS...]".into());
    };
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

    let spawned = Command::new(program)
        .args(program_args)
        .env("TUMBLER_LOCK_NAME", name.as_str())
        .env("TUMBLER_FENCING_TOKEN", guard.fencing_token().to_string())
        .stdin(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    eprintln!("tumbler: {program}: command not found");
                    exit::NOT_FOUND
                }
                std::io::ErrorKind::PermissionDenied => {
                    eprintln!("tumbler: {program}: permission denied (is it executable?)");
                    exit::CANNOT_EXECUTE
                }
                _ => {
                    eprintln!("tumbler: cannot start {program:?}: {e}");
                    exit::CANNOT_EXECUTE
                }
            };
            release(guard, &name, "the command did not start").await;
            return Ok(code);
        }
    };

    let outcome = loop {
        tokio::select! {
            status = child.wait() => {
                match status {
                    Ok(status) => break Outcome::Exited(status),
                    Err(e) => {
                        eprintln!("tumbler: waiting for the command failed: {e}");
                        stop_child(&mut child, args.grace).await;
                        break Outcome::Failed;
                    }
                }
            }
            reason = guard.signals().lost() => {
                eprintln!("tumbler: lost {name} ({reason}); stopping the command");
                stop_child(&mut child, args.grace).await;
                break Outcome::Lost;
            }
            () = guard.signals().revoke_requested() => {
                eprintln!(
                    "tumbler: revocation of {name} requested; stopping the command \
                     (SIGTERM, SIGKILL after {})",
                    format_duration(args.grace)
                );
                stop_child(&mut child, args.grace).await;
                break Outcome::Revoked;
            }
            signal = interrupts.recv() => forward(&child, signal),
        }
    };
    match outcome {
        Outcome::Lost => {
            // The store no longer has this hold: nothing to wait for, only local state to drop.
            drop_lost(guard).await;
            Ok(exit::LOST)
        }
        Outcome::Revoked => {
            release(guard, &name, "the command was stopped on revocation").await;
            Ok(exit::REVOKED)
        }
        Outcome::Failed => {
            release(guard, &name, "the command was stopped").await;
            Ok(exit::ERROR)
        }
        Outcome::Exited(status) => {
            release(guard, &name, "the command finished").await;
            Ok(exit::from_status(status))
        }
    }
}

enum Outcome {
    Exited(std::process::ExitStatus),
    Lost,
    Revoked,
    Failed,
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

/// Releases the hold, waiting at most [`RELEASE_LIMIT`] for the store to confirm it.
async fn release(guard: Box<dyn Guard>, name: &LockName, context: &str) {
    match tokio::time::timeout(RELEASE_LIMIT, guard.release_boxed()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("tumbler: {context} but releasing {name} failed: {e}"),
        Err(_) => eprintln!(
            "tumbler: {context} but the store did not confirm the release of {name} within \
             {}; it frees the lock when the hold's session or TTL runs out",
            format_duration(RELEASE_LIMIT)
        ),
    }
}

/// Lets go of a lost hold: the release is only a courtesy (the store may still have the
/// record if it was lost by a missed deadline), so it is bounded by [`LOST_RELEASE_LIMIT`] and
/// not reported.
async fn drop_lost(guard: Box<dyn Guard>) {
    let _ = tokio::time::timeout(LOST_RELEASE_LIMIT, guard.release_boxed()).await;
}

fn forward(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// SIGTERM, then SIGKILL if the command has not exited within `grace`.
async fn stop_child(child: &mut Child, grace: Duration) {
    forward(child, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        eprintln!(
            "tumbler: the command ignored SIGTERM for {}; killing it",
            format_duration(grace)
        );
        let _ = child.kill().await;
    }
}
