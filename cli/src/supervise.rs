//! A command that runs while a hold lasts, shared by `tumbler run` (a lock) and `tumbler
//! elect` (a leadership): start it with the hold's identity in its environment, forward
//! SIGINT/SIGTERM/SIGHUP to it, stop it (SIGTERM, SIGKILL after a grace period) when the hold is
//! lost or its revocation is requested, and release the hold when it ends.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tumbler_locks::params::format_duration;
use tumbler_locks::Guard;

use crate::exit;
use crate::interrupt::Interrupts;

/// How long tumbler waits for the store to confirm a release before exiting anyway (the store
/// then frees the lock when its session or TTL runs out).
const RELEASE_LIMIT: Duration = Duration::from_secs(3);
/// The same for a hold already lost: the store no longer has it (or soon forgets it), so the
/// release is a courtesy, and the store is often the reason it was lost.
const LOST_RELEASE_LIMIT: Duration = Duration::from_secs(1);

/// The command to run under a hold, and how.
pub struct Supervised<'a> {
    /// The program and its arguments.
    pub command: &'a [String],
    /// Extra environment variables for the command (the hold's name, token, term).
    pub env: Vec<(&'static str, String)>,
    /// How long the command may take to exit after SIGTERM before it gets SIGKILL.
    pub grace: Duration,
    /// What the hold is, for messages: `jobs/nightly`, `the leadership of services/indexer`.
    pub what: String,
}

/// Runs `job.command` while `guard` holds and returns tumbler's exit code: the command's own
/// code, [`exit::LOST`], [`exit::REVOKED`], [`exit::NOT_FOUND`], [`exit::CANNOT_EXECUTE`] or
/// [`exit::ERROR`]. The hold is released (or, once lost, dropped) on every path out.
///
/// The command dies with tumbler (SIGKILL, through `PR_SET_PDEATHSIG`): a tumbler that is
/// killed can no longer stop it when the store hands the hold to someone else, and an orphan
/// working on would overlap with the next holder.
pub async fn supervise(
    guard: Box<dyn Guard>,
    job: Supervised<'_>,
    interrupts: &mut Interrupts,
) -> i32 {
    let Some((program, program_args)) = job.command.split_first() else {
        release(guard, &job.what, "no command was given").await;
        return exit::ERROR;
    };
    let mut command = Command::new(program);
    command
        .args(program_args)
        .envs(job.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::inherit());
    die_with_parent(&mut command);
    let mut child = match command.spawn() {
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
            release(guard, &job.what, "the command did not start").await;
            return code;
        }
    };

    let what = &job.what;
    let outcome = loop {
        tokio::select! {
            status = child.wait() => {
                match status {
                    Ok(status) => break Outcome::Exited(status),
                    Err(e) => {
                        eprintln!("tumbler: waiting for the command failed: {e}");
                        stop_child(&mut child, job.grace).await;
                        break Outcome::Failed;
                    }
                }
            }
            reason = guard.signals().lost() => {
                eprintln!("tumbler: lost {what} ({reason}); stopping the command");
                stop_child(&mut child, job.grace).await;
                break Outcome::Lost;
            }
            () = guard.signals().revoke_requested() => {
                eprintln!(
                    "tumbler: revocation of {what} requested; stopping the command \
                     (SIGTERM, SIGKILL after {})",
                    format_duration(job.grace)
                );
                stop_child(&mut child, job.grace).await;
                break Outcome::Revoked;
            }
            signal = interrupts.recv() => forward(&child, signal),
        }
    };
    match outcome {
        Outcome::Lost => {
            // The store no longer has this hold: nothing to wait for, only local state to drop.
            drop_lost(guard).await;
            exit::LOST
        }
        Outcome::Revoked => {
            release(guard, what, "the command was stopped on revocation").await;
            exit::REVOKED
        }
        Outcome::Failed => {
            release(guard, what, "the command was stopped").await;
            exit::ERROR
        }
        Outcome::Exited(status) => {
            release(guard, what, "the command finished").await;
            exit::from_status(status)
        }
    }
}

enum Outcome {
    Exited(std::process::ExitStatus),
    Lost,
    Revoked,
    Failed,
}

/// Has the kernel SIGKILL the command when tumbler dies (also of SIGKILL), and makes a command
/// whose tumbler died before that took effect exit at once.
fn die_with_parent(command: &mut Command) {
    // SAFETY: getpid(2) before the fork; in the child only async-signal-safe calls (prctl,
    // getppid, _exit) run between fork and exec.
    let parent = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(exit::LOST);
            }
            Ok(())
        });
    }
}

/// Releases the hold, waiting at most [`RELEASE_LIMIT`] for the store to confirm it.
pub async fn release(guard: Box<dyn Guard>, what: &str, context: &str) {
    match tokio::time::timeout(RELEASE_LIMIT, guard.release_boxed()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("tumbler: {context} but releasing {what} failed: {e}"),
        Err(_) => eprintln!(
            "tumbler: {context} but the store did not confirm the release of {what} within \
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
