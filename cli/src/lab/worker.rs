//! `tumbler lab-worker URL NAME`: the lab's workload process. It takes the lock, then writes to
//! the lab's two resources (by printing `WRITE <token> <seq>` lines the lab applies) until its
//! `lost()` fires, when it prints `LOST <reason>` and stops writing. A connection or lock
//! attempt that fails for a transient reason (the store unreachable) is retried.
//!
//! Like a real service, it checks `lost_reason()` before each write, and a write it already
//! decided to make still goes out: that is the window fencing tokens exist for.

use std::io::Write;
use std::time::Duration;

/// Runs the worker; returns the process exit code.
///
/// With `ignore_lost` it plays a naive client that never checks `lost()` (like most Redis lock
/// libraries): it keeps writing after its lock is gone.
pub async fn run(url: &str, name: &str, every: Duration, ignore_lost: bool) -> i32 {
    match work(url, name, every, ignore_lost).await {
        Ok(()) => 0,
        Err(e) => {
            say(&format!("ERROR {e}"));
            crate::exit::ERROR
        }
    }
}

async fn work(
    url: &str,
    name: &str,
    every: Duration,
    ignore_lost: bool,
) -> tumbler_locks::Result<()> {
    // Like a service, it retries what a store outage causes (each retry says `RETRY <why>`).
    let locks = loop {
        match tumbler_locks::connect(url).await {
            Ok(locks) => break locks,
            Err(e) if e.is_transient() => retry_later(&e).await,
            Err(e) => return Err(e),
        }
    };
    let mutex = locks.mutex(name)?;
    let guard = loop {
        match mutex.lock().await {
            Ok(guard) => break guard,
            Err(e) if e.is_transient() => retry_later(&e).await,
            Err(e) => return Err(e),
        }
    };
    let token = guard.fencing_token();
    say(&format!("ACQUIRED {token}"));
    let mut seq = 0u64;
    loop {
        tokio::select! {
            reason = guard.lost(), if !ignore_lost => {
                say(&format!("LOST {reason}"));
                // A lost lock needs no release; stay up until the lab stops us.
                std::future::pending::<()>().await;
            }
            _ = tokio::time::sleep(every) => {
                if ignore_lost || guard.lost_reason().is_none() {
                    seq += 1;
                    say(&format!("WRITE {token} {seq}"));
                }
            }
        }
    }
}

async fn retry_later(error: &tumbler_locks::Error) {
    say(&format!("RETRY {error}"));
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
