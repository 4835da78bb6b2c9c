//! Hand-off: a release wakes one queued waiter, not all of them, so the requests the agent
//! serves per hand-off do not grow with the number of waiters.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client, server, Client};
use testkit::consul::ConsulServer;
use tumbler_core::LockName;

/// Long sessions, so that no renewal falls into the measured window.
const PARAMS: &str = "ttl=60s&lock_delay=0s&request_timeout=5s";

/// Queues `waiters` clients behind a holder, then lets each take and release the lock in turn.
/// Returns the requests the agent received and the blocking queries among them, per hand-off.
async fn chain(server: &ConsulServer, waiters: usize) -> (f64, f64) {
    let name = LockName::new(format!("chain-{waiters}")).unwrap();
    let holder = client(server, PARAMS).await;
    let observer = client(server, PARAMS).await;
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..waiters {
        clients.push(client(server, PARAMS).await);
    }
    let held = holder.locks.mutex(&name).unwrap().lock().await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let mutex = c.locks.mutex(&name).unwrap();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let guard = mutex
                .lock_timeout(Duration::from_secs(60))
                .await
                .unwrap()
                .expect("a waiter never got the lock");
            order.lock().unwrap().push(i);
            guard.release().await.unwrap();
        }));
        // Queue one at a time, so each waits behind the one before.
        loop {
            let state = observer.locks.state(&name).await.unwrap();
            if state.waiters == Some(i + 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    server.reset_counters();
    held.release().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let counters = server.counters();
    assert_eq!(order.lock().unwrap().len(), waiters);
    (
        counters.total as f64 / waiters as f64,
        counters.blocking as f64 / waiters as f64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_hand_off_do_not_grow_with_waiters() {
    let server = common::server().await;
    let (one_total, one_blocking) = chain(&server, 1).await;
    let (many_total, many_blocking) = chain(&server, 12).await;
    eprintln!(
        "requests per hand-off: 1 waiter {one_total:.1} ({one_blocking:.1} blocking), \
         12 waiters {many_total:.1} ({many_blocking:.1} blocking)"
    );
    // A herd (every waiter re-reading and retrying on every release) would cost at least 12
    // blocking reads per hand-off with 12 waiters.
    assert!(
        many_blocking <= 4.0,
        "{many_blocking:.1} blocking queries per hand-off with 12 waiters"
    );
    assert!(
        many_total <= one_total + 6.0,
        "{many_total:.1} requests per hand-off with 12 waiters vs {one_total:.1} with 1"
    );
}

/// Queued waiters are served in the order they queued (among tumbler clients, with nobody
/// barging in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_waiters_are_served_in_order() {
    let server = server().await;
    let name = LockName::new("order").unwrap();
    let holder = client(&server, PARAMS).await;
    let held = holder.locks.mutex(&name).unwrap().lock().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut keep = Vec::new();
    for i in 0..5usize {
        let c = client(&server, PARAMS).await;
        let mutex = c.locks.mutex(&name).unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let guard = mutex.lock().await.unwrap();
            tx.send(i).unwrap();
            guard.release().await.unwrap();
        });
        keep.push(c);
        while holder.locks.state(&name).await.unwrap().waiters != Some(i + 1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    held.release().await.unwrap();
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(
            tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(order, [0, 1, 2, 3, 4]);
}
