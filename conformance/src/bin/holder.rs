//! `holder`: takes one lock by URL and keeps it until killed, so tests can crash or pause a
//! real holder process.
//!
//! Usage: `holder URL NAME [wait|lead]`. Prints `TOKEN <n>` once the lock is held, then
//! `LOST <reason>` if its `lost()` fires, then keeps running until killed. With `wait` it first
//! prints `WAITING` once connected, just before it starts waiting for the lock (a test kills it
//! while it waits). With `lead` it campaigns in the election NAME instead, advertising
//! `holder-<pid>`, and prints its term as the token. Exits 2 with a message on errors.

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [url, name] => hold(url, name, false).await,
        [url, name, mode] if mode == "wait" => hold(url, name, true).await,
        [url, name, mode] if mode == "lead" => lead(url, name).await,
        _ => {
            eprintln!("usage: holder URL NAME [wait|lead]");
            std::process::exit(2);
        }
    };
    if let Err(error) = outcome {
        eprintln!("holder: {error}");
        std::process::exit(2);
    }
}

async fn hold(url: &str, name: &str, announce_wait: bool) -> tumbler_locks::Result<()> {
    let locks = tumbler_locks::connect(url).await?;
    let mutex = locks.mutex(name)?;
    if announce_wait {
        say("WAITING");
    }
    let guard = mutex.lock().await?;
    say(&format!("TOKEN {}", guard.fencing_token()));
    let reason = guard.lost().await;
    say(&format!("LOST {reason}"));
    std::future::pending::<()>().await;
    Ok(())
}

async fn lead(url: &str, name: &str) -> tumbler_locks::Result<()> {
    let locks = tumbler_locks::connect(url).await?;
    let leadership = locks
        .election(name)?
        .campaign(format!("holder-{}", std::process::id()))
        .await?;
    say(&format!("TOKEN {}", leadership.term()));
    let reason = leadership.lost().await;
    say(&format!("LOST {reason}"));
    std::future::pending::<()>().await;
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The test reads these lines; if it went away there is nobody to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
