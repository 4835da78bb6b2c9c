//! Exports tumbler's metrics for Prometheus: installs `metrics-exporter-prometheus` with an HTTP
//! listener, runs one lock cycle (a hold, a busy try, a cancelled wait, a waiter handed the
//! lock), prints `ready`,
//! and serves `/metrics` until its standard input closes.
//!
//! ```text
//! cargo run -p tumbler-locks --example metrics -- 127.0.0.1:9187 memory://
//! curl -s http://127.0.0.1:9187/metrics | grep tumbler_
//! ```
//!
//! The second argument is any store URL (`redis://…`, `etcd://…` with the matching feature).

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9187".into())
        .parse()
        .map_err(|e| format!("the first argument must be host:port to listen on: {e}"))?;
    let url = args.next().unwrap_or_else(|| "memory://".into());

    PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .map_err(|e| format!("cannot serve metrics on {listen}: {e}"))?;
    tumbler_locks::metrics::describe();

    let locks = tumbler_locks::connect(&url).await?;
    let job = locks.mutex("examples/metrics")?;
    let guard = job.lock().await?;
    // A second handle's try finds the lock busy; a waiter gets it when the guard is released.
    if job.try_lock().await?.is_some() {
        return Err("a try on a held lock was granted".into());
    }
    // A waiter whose future is dropped: a cancelled acquisition.
    let _ = tokio::time::timeout(Duration::from_millis(20), job.lock()).await;
    let waiter = {
        let job = job.clone();
        tokio::spawn(async move { job.lock_timeout(Duration::from_secs(10)).await })
    };
    // Release once the waiter is queued (stores that cannot count waiters: after a moment).
    let name = job.name().clone();
    for _ in 0..100 {
        match locks.state(&name).await?.waiters {
            Some(n) if n > 0 => break,
            None => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    guard.release().await?;
    if let Some(handed) = waiter.await?? {
        handed.release().await?;
    }
    println!("ready: http://{listen}/metrics");

    // Serve until standard input closes.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    locks.shutdown().await?;
    Ok(())
}
