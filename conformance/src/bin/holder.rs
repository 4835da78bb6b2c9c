//! `holder`: takes one lock by URL and keeps it until killed, so tests can crash or pause a
//! real holder process.
//!
//! Usage: `holder URL NAME`. Prints `TOKEN <n>` once the lock is held, then `LOST <reason>` if
//! its `lost()` fires, then keeps running until killed. Exits 2 with a message on errors.

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, name] = args.as_slice() else {
        eprintln!("usage: holder URL NAME");
        std::process::exit(2);
    };
    if let Err(error) = hold(url, name).await {
        eprintln!("holder: {error}");
        std::process::exit(2);
    }
}

async fn hold(url: &str, name: &str) -> tumbler::Result<()> {
    let locks = tumbler::connect(url).await?;
    let guard = locks.mutex(name)?.lock().await?;
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
