//! `holder`: takes one lock by URL and keeps it until killed, so tests can crash or pause a
//! real holder process.
//!
//! Usage: `holder URL NAME [wait]`. Prints `TOKEN <n>` once the lock is held, then
//! `LOST <reason>` if its `lost()` fires, then keeps running until killed. With `wait` it first
//! prints `WAITING` once connected, just before it starts waiting for the lock (a test kills it
//! while it waits). Exits 2 with a message on errors.

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, name, announce) = match args.as_slice() {
        [url, name] => (url, name, false),
        [url, name, mode] if mode == "wait" => (url, name, true),
        _ => {
            eprintln!("usage: holder URL NAME [wait]");
            std::process::exit(2);
        }
    };
    if let Err(error) = hold(url, name, announce).await {
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

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The test reads these lines; if it went away there is nobody to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
