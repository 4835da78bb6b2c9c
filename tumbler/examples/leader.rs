//! A worker that only its leader runs: `cargo run -p tumbler-locks --example leader [URL] [NAME]`.
//!
//! Start it two or three times (in separate terminals, with the same URL, e.g.
//! `redis://127.0.0.1:6379` with `--features redis`): one instance is elected and works, the
//! others wait as candidates and follow who leads. Stop the leader (Ctrl-C, or kill it) and
//! another takes over within the store's liveness bound, with a higher term.
//!
//! Every write the leader makes carries its term, and the resource it writes to (here a
//! [`FencedLog`] in a shared file) refuses a term lower than the highest it has seen. A leader
//! that stalled past its leadership and wakes up after a successor was elected is refused
//! there, even if it has not noticed the loss yet: that is what the term is for.
//!
//! Without a URL it uses the in-process memory store and runs three candidates in one process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tumbler_locks::{Election, Leadership, SharedBackend};

/// A resource that accepts a write only with a term at least as high as any it has seen (the
/// fencing check every resource a leader writes to should make).
struct FencedLog {
    path: PathBuf,
}

impl FencedLog {
    /// Appends `line` under `term`, or refuses it if a later leader has written already.
    fn write(&self, term: u64, line: &str) -> std::io::Result<bool> {
        let highest = std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        if term < highest {
            return Ok(false);
        }
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(file, "{term} {line}")?;
        Ok(true)
    }
}

/// What the leader does while it leads: a write every 200 ms, each fenced by the term.
async fn lead(leadership: &Leadership, log: &FencedLog, me: &str) -> tumbler_locks::Result<()> {
    let term = leadership.term();
    println!("{me}: elected with term {term}");
    for round in 0.. {
        tokio::select! {
            reason = leadership.lost() => {
                println!("{me}: leadership lost ({reason}); stopping the work");
                return Ok(());
            }
            () = leadership.revoke_requested() => {
                println!("{me}: asked to step down");
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let accepted = log
            .write(term, &format!("{me} round {round}"))
            .map_err(|e| tumbler_locks::Error::backend("example", e))?;
        if !accepted {
            println!("{me}: the log refused term {term}: a later leader wrote; stopping");
            return Ok(());
        }
        if round == 10 {
            // Hand over after a while, so that several candidates get a turn.
            return Ok(());
        }
    }
    Ok(())
}

/// One candidate: campaign, lead, resign; follow the leader while waiting.
async fn candidate(election: Election, log: &FencedLog, me: String) -> tumbler_locks::Result<()> {
    let mut observer = election.observe();
    let campaign = election.campaign(me.clone());
    tokio::pin!(campaign);
    let leadership = loop {
        tokio::select! {
            elected = &mut campaign => break elected?,
            seen = observer.next() => match seen {
                Ok(Some(leader)) => println!(
                    "{me}: waiting; {} leads with term {}",
                    String::from_utf8_lossy(&leader.value),
                    leader.term
                ),
                Ok(None) => println!("{me}: waiting; nobody leads"),
                Err(e) => println!("{me}: cannot see who leads ({e}); still campaigning"),
            },
        }
    };
    lead(&leadership, log, &me).await?;
    leadership.resign().await
}

/// `text` with everything but letters and digits as `_`, for a file name.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[tokio::main]
async fn main() -> tumbler_locks::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next();
    let name = args.next().unwrap_or_else(|| "examples/leader".into());
    // Terms are per store and election: one log per store, so another store's (lower) terms
    // are not refused here. The in-process store starts afresh each run, and so does its log.
    let file = match &url {
        Some(url) => format!("tumbler-leader-{}.log", sanitize(&format!("{url}-{name}"))),
        None => format!("tumbler-leader-memory-{}.log", std::process::id()),
    };
    let log = FencedLog {
        path: Path::new(&std::env::temp_dir()).join(file),
    };
    println!("fenced writes go to {}", log.path.display());
    match url {
        Some(url) => {
            let locks: SharedBackend = tumbler_locks::connect(&url).await?;
            let me = format!("pid-{}", std::process::id());
            let outcome = tokio::select! {
                outcome = candidate(locks.election(&name)?, &log, me) => outcome,
                _ = tokio::signal::ctrl_c() => Ok(()),
            };
            // Resigns or withdraws whatever is left, before the process exits.
            locks.shutdown().await?;
            outcome
        }
        None => {
            let store = tumbler_locks::memory::MemoryStore::new();
            let mut candidates = Vec::new();
            for i in 0..3 {
                let locks = tumbler_locks::share(store.connect_client(Default::default()).await?);
                let election = locks.election(&name)?;
                let log = FencedLog {
                    path: log.path.clone(),
                };
                candidates.push(tokio::spawn(async move {
                    candidate(election, &log, format!("candidate-{i}")).await
                }));
            }
            for c in candidates {
                c.await
                    .map_err(|e| tumbler_locks::Error::backend("example", e))??;
            }
            Ok(())
        }
    }
}
