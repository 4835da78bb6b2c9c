//! The first example of the README, compiled: `tests/readme.rs` checks that every line of the
//! README's Rust blocks appears here, in order, so the README cannot drift from the API.
//!
//! `cargo run -p tumbler-locks --features redis --example readme` runs it against a local Redis.

/// The protected work of the example.
async fn run_job(token: u64) {
    println!("running the nightly job with fencing token {token}");
}

#[rustfmt::skip] // the lines are the README's, as written there
#[tokio::main(flavor = "current_thread")]
async fn main() -> tumbler_locks::Result<()> {
    // README.md, "tumbler is a Rust library ...":
    let locks = tumbler_locks::connect("redis://127.0.0.1:6379").await?;   // or zk://, etcd://, consul://, memory://
    let job = locks.mutex("jobs/nightly")?;                          // cheap handle; the name is checked here
    let guard = job.lock().await?;                                   // or try_lock(), lock_timeout(d)
    tokio::select! {
        reason = guard.lost() => eprintln!("lost the lock ({reason}): stop writing"),
        _ = run_job(guard.fencing_token()) => {}                     // hand the token to what you protect
    }
    guard.release().await?;                                          // reports what the store confirmed
    locks.shutdown().await?;                                         // before exit: frees every hold and waiter
    Ok(())
}

/// The README's leader-election block.
#[rustfmt::skip] // the lines are the README's, as written there
#[allow(dead_code)] // compiled, not run: `examples/leader.rs` is the runnable one
async fn elect(locks: tumbler_locks::SharedBackend) -> tumbler_locks::Result<Option<tumbler_locks::LeaderInfo>> {
    // README.md, "Leader election":
    let election = locks.election("services/indexer")?;
    let leadership = election.campaign("indexer-7:8080").await?;          // waits until elected; or try_campaign(), campaign_timeout(d)
    tokio::select! {
        reason = leadership.lost() => eprintln!("no longer leader ({reason}): stop writing"),
        _ = run_job(leadership.term()) => {}                               // every write carries the term
    }
    leadership.resign().await?;                                            // the next candidate is elected
    let leader = election.leader().await?;                                 // Option<LeaderInfo { value, term, id }>
    Ok(leader)
}
