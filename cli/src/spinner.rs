//! While waiting for a lock on a terminal: a spinner that shows who holds it (or that the
//! store grants nothing yet after a restart).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tumbler_locks::{LockName, SharedBackend};

/// Shows the spinner on stderr until the returned task is aborted. Does nothing when stderr is
/// not a terminal.
pub fn start(locks: SharedBackend, name: LockName) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
        let started = Instant::now();
        let mut holders = String::from("?");
        let mut frame = 0usize;
        let mut next_state = Instant::now();
        loop {
            if Instant::now() >= next_state {
                holders = match locks.state(&name).await {
                    Ok(state) if state.holders.is_empty() => {
                        match crate::recovery::Recovery::check(&locks).await {
                            Some(recovery) => format!(
                                "nobody, but the store grants none for another {:.0}s after a \
                                 restart",
                                recovery.remaining.as_secs_f64().ceil()
                            ),
                            None => "nobody (hand-off in progress)".into(),
                        }
                    }
                    Ok(state) => state
                        .holders
                        .iter()
                        .map(|h| match h.token {
                            Some(token) => format!("{} (token {token})", h.id),
                            None => h.id.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    Err(e) => format!("unknown ({e})"),
                };
                next_state = Instant::now() + Duration::from_secs(1);
            }
            {
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2K{} waiting {:>4}s for {name}; held by {holders}",
                    FRAMES[frame % FRAMES.len()],
                    started.elapsed().as_secs()
                );
                let _ = err.flush();
            }
            frame += 1;
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    }))
}

/// Stops the spinner and clears its line.
pub fn stop(spinner: Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = spinner {
        task.abort();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}
