//! `tumbler run`: run a command while holding a lock, like `flock`, `etcdctl lock` and
//! `consul lock`.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tumbler::{Guard, LockName, SharedBackend};

use crate::exit;

/// What `tumbler run` was asked to do.
pub struct RunArgs {
    pub name: String,
    pub timeout: Option<Duration>,
    pub no_wait: bool,
    pub semaphore: Option<u32>,
    pub grace: Duration,
    pub command: Vec<String>,
}

/// Runs the command under the lock and returns the process exit code.
pub async fn run(locks: SharedBackend, args: RunArgs) -> Result<i32, String> {
    let name = LockName::new(args.name.clone()).map_err(|e| e.to_string())?;
    let Some((program, program_args)) = args.command.split_first() else {
        return Err("no command given; write: tumbler run NAME -- COMMAND [ARGS...]".into());
    };

    let spinner = if args.no_wait {
        None
    } else {
        crate::spinner::start(locks.clone(), name.clone())
    };
    let acquired = acquire(&locks, &name, &args).await;
    crate::spinner::stop(spinner);
    let guard = match acquired.map_err(|e| e.to_string())? {
        Some(guard) => guard,
        None => {
            eprintln!(
                "tumbler: {name} is held by someone else{}",
                match args.timeout {
                    Some(t) if !args.no_wait => format!(" (gave up after {t:?})"),
                    _ => String::new(),
                }
            );
            return Ok(exit::BUSY);
        }
    };

    let mut child = Command::new(program)
        .args(program_args)
        .env("TUMBLER_LOCK_NAME", name.as_str())
        .env("TUMBLER_FENCING_TOKEN", guard.fencing_token().to_string())
        .stdin(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;

    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let outcome = loop {
        tokio::select! {
            status = child.wait() => {
                break Outcome::Exited(status.map_err(|e| format!("waiting for the command: {e}"))?);
            }
            reason = guard.signals().lost() => {
                eprintln!("tumbler: lost {name} ({reason}); stopping the command");
                stop_child(&mut child, args.grace).await;
                break Outcome::Lost;
            }
            _ = terminate.recv() => forward(&child, libc::SIGTERM),
            _ = interrupt.recv() => forward(&child, libc::SIGINT),
        }
    };
    let released = guard.release_boxed().await;
    match outcome {
        Outcome::Lost => Ok(exit::LOST),
        Outcome::Exited(status) => {
            if let Err(e) = released {
                eprintln!("tumbler: the command finished but releasing {name} failed: {e}");
            }
            Ok(exit::from_status(status))
        }
    }
}

enum Outcome {
    Exited(std::process::ExitStatus),
    Lost,
}

async fn acquire(
    locks: &SharedBackend,
    name: &LockName,
    args: &RunArgs,
) -> tumbler::Result<Option<Box<dyn Guard>>> {
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

fn forward(child: &tokio::process::Child, signal: libc::c_int) {
    if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// SIGTERM, then SIGKILL if the command has not exited within `grace`.
async fn stop_child(child: &mut tokio::process::Child, grace: Duration) {
    forward(child, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        eprintln!("tumbler: the command ignored SIGTERM for {grace:?}; killing it");
        let _ = child.kill().await;
    }
}
