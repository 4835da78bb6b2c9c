//! A tour of the API: run with `cargo run -p tumbler-locks --example tour [URL]`.
//!
//! Without a URL it uses the in-process memory store; with one (e.g. `redis://127.0.0.1:6379`
//! when tumbler is built with the `redis` feature) the same code runs on that store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_locks::{LockSpec, MultiLock, Semaphore};

#[tokio::main]
async fn main() -> tumbler_locks::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://tour".into());
    let locks = tumbler_locks::connect(&url).await?;
    // Shut the backend down on every path, also after an early `?` in the tour: it releases
    // whatever the tour still holds or waits for (on Redis it would otherwise stay held until
    // its TTL runs out).
    let toured = tour(&locks).await;
    locks.shutdown().await?;
    toured
}

async fn tour(locks: &tumbler_locks::SharedBackend) -> tumbler_locks::Result<()> {
    let caps = locks.capabilities();
    println!("store: {} at {}", caps.backend, locks.address());
    println!(
        "capabilities: fifo={} fencing={:?} rwlock={} semaphore={} revocation={}",
        caps.fifo, caps.fencing, caps.rwlock, caps.semaphore, caps.revocation
    );

    // 1. A mutex contended by four workers: holds never overlap, tokens only grow.
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..4 {
        let mutex = locks.mutex("tour/nightly-job")?;
        workers.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for _ in 0..5 {
                let guard = mutex.lock().await?;
                tokens.push(guard.fencing_token());
                tokio::time::sleep(Duration::from_millis(2)).await; // the protected work
                guard.release().await?;
            }
            Ok::<_, tumbler_locks::Error>((worker, tokens))
        }));
    }
    let mut all_tokens = Vec::new();
    for worker in workers {
        let (id, tokens) = worker
            .await
            .map_err(|e| tumbler_locks::Error::backend("tour", e))??;
        println!("mutex: worker {id} held the lock with tokens {tokens:?}");
        all_tokens.extend(tokens);
    }
    all_tokens.sort_unstable();
    all_tokens.dedup();
    println!(
        "mutex: 20 acquisitions by 4 workers in {:?}, {} distinct tokens",
        started.elapsed(),
        all_tokens.len()
    );

    // 2. Re-entrancy: the same handle may lock again.
    let reentrant = locks.reentrant_mutex("tour/config")?;
    let outer = reentrant.lock().await?;
    let inner = reentrant.lock().await?;
    println!("reentrant: hold count {}", reentrant.hold_count());
    inner.release().await?;
    outer.release().await?;

    // 3. A semaphore of 3 permits with leases.
    if caps.semaphore {
        let pool = locks.semaphore("tour/db-pool", 3)?;
        let two = pool.acquire(2).await?;
        let one = pool.acquire(1).await?;
        let full = pool.try_acquire(1).await?.is_none();
        println!("semaphore: leased 2 + 1 of 3 permits; a 4th is refused: {full}");
        Semaphore::release_all(vec![two, one]).await?;
    }

    // 4. A read-write lock with downgrade.
    if caps.rwlock {
        let rw = locks.rwlock("tour/catalog")?;
        let writer = rw.write().await?;
        let reader = writer.downgrade().await?;
        let other = locks.rwlock("tour/catalog")?;
        let shared = other.try_read().await?;
        println!(
            "rwlock: downgraded write to read; another reader shares it: {}",
            shared.is_some()
        );
        if let Some(shared) = shared {
            shared.release().await?;
        }
        reader.release().await?;
    }

    // 5. All or nothing over several locks.
    let a = locks.mutex("tour/account-a")?;
    let b = locks.mutex("tour/account-b")?;
    let transfer = MultiLock::new(vec![LockSpec::from(&a), LockSpec::from(&b)]);
    let both = transfer.lock().await?;
    println!("multilock: holding {:?}", both.fencing_tokens());
    both.release().await?;

    // 6. Cooperative revocation and the lost-lock signal.
    if caps.revocation {
        let guard = Arc::new(locks.mutex("tour/report")?.lock().await?);
        let notified = locks.request_revoke("tour/report").await?;
        tokio::time::timeout(Duration::from_secs(5), guard.revoke_requested())
            .await
            .map_err(|_| tumbler_locks::Error::backend("tour", "revocation did not arrive"))?;
        println!("revocation: {notified} holder(s) asked to let go; the holder saw it");
        if let Ok(guard) = Arc::try_unwrap(guard) {
            guard.release().await?;
        }
    }
    let state = locks.state("tour/report").await?;
    println!(
        "state: tour/report held={} waiters={:?}",
        state.is_held(),
        state.waiters
    );
    Ok(())
}
