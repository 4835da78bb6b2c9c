//! Each waiter hears only of what can let it in (issue 14): a release is delivered to the
//! waiters it may admit and to its own instance, not to every contender. Counted with the
//! member's `etcd_debugging_mvcc_events_total` (events sent to watchers), and the semaphore's
//! chain of waiters checked for order when one in the middle gives up.

use std::sync::Arc;
use std::time::Duration;

use testkit::etcd::Etcd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tumbler_core::{Guard, SharedBackend};

const DEADLINE: Duration = Duration::from_secs(30);
const CONTENDERS: usize = 8;
const ROUNDS: usize = 8;

async fn connect(e: &Etcd) -> SharedBackend {
    tumbler_etcd::connect_url(&format!("etcd://127.0.0.1:{}?ttl=5s", e.port()))
        .await
        .expect("connect")
}

/// The member's count of events sent to watchers so far.
async fn events_sent(e: &Etcd) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", e.port()))
        .await
        .expect("connect to /metrics");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        e.port()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.expect("read /metrics");
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_events_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .unwrap_or_else(|| panic!("no etcd_debugging_mvcc_events_total in /metrics: {text}"))
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Mutex,
    Permit,
    Read,
    Write,
}

/// `contenders` backends (one instance each, as separate processes would be) loop over `ops`
/// on one name; returns the events sent per acquisition.
async fn events_per_acquisition(e: &Etcd, name: &str, ops: &[Op], contenders: usize) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..contenders {
        clients.push(connect(e).await);
    }
    let before = events_sent(e).await;
    let done = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let (client, done, name) = (client.clone(), done.clone(), name.to_owned());
        let ops = ops.to_vec();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let op = ops[(index + round) % ops.len()];
                let guard: Box<dyn Guard> = match op {
                    Op::Mutex => {
                        Box::new(client.mutex(name.as_str()).unwrap().lock().await.unwrap())
                    }
                    Op::Permit => Box::new(
                        client
                            .semaphore(name.as_str(), 3)
                            .unwrap()
                            .acquire(1)
                            .await
                            .unwrap(),
                    ),
                    Op::Read => {
                        Box::new(client.rwlock(name.as_str()).unwrap().read().await.unwrap())
                    }
                    Op::Write => {
                        Box::new(client.rwlock(name.as_str()).unwrap().write().await.unwrap())
                    }
                };
                guard.release_boxed().await.unwrap();
                *done.lock().await += 1;
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the contenders did not finish")
            .unwrap();
    }
    let after = events_sent(e).await;
    let acquisitions = *done.lock().await;
    assert_eq!(acquisitions, contenders * ROUNDS);
    for client in clients {
        client.shutdown().await.unwrap();
    }
    let per = (after - before) as f64 / acquisitions as f64;
    eprintln!("{name}: {per:.2} watch events per acquisition at {contenders} contenders");
    per
}

#[tokio::test]
async fn a_mutex_release_reaches_its_successor_not_every_contender() {
    let e = Etcd::start().await.expect("etcd");
    let mut seen = Vec::new();
    for contenders in [CONTENDERS, 64] {
        let name = format!("wait-set/mutex-{contenders}");
        let per = events_per_acquisition(&e, &name, &[Op::Mutex], contenders).await;
        seen.push((contenders, per));
    }
    // Our own key's deletion to our instance, and to the one waiting just behind it: 2, at
    // any contention. Every contender hearing every release would be one per contender.
    assert!(
        seen.iter().all(|(_, per)| *per <= 3.0),
        "watch events per acquisition (contenders, events): {seen:.1?}"
    );
}

#[tokio::test]
async fn a_semaphore_release_reaches_the_first_waiter_not_every_contender() {
    let e = Etcd::start().await.expect("etcd");
    let per = events_per_acquisition(&e, "wait-set/sem", &[Op::Permit], CONTENDERS).await;
    // Own deletion, the first waiter's folder watcher, the grant of the one before a waiter.
    assert!(
        per <= 4.0,
        "{per:.1} watch events per acquisition at {CONTENDERS} contenders"
    );
}

#[tokio::test]
async fn an_rwlock_release_reaches_the_waiters_it_admits() {
    let e = Etcd::start().await.expect("etcd");
    let mix = [Op::Read, Op::Read, Op::Read, Op::Write];
    let per = events_per_acquisition(&e, "wait-set/rw", &mix, CONTENDERS).await;
    assert!(
        per <= 4.0,
        "{per:.1} watch events per acquisition at {CONTENDERS} contenders"
    );
}

/// Semaphore of 3: holders of 1 and 2 permits; then waiters for 2, 1 and 1. The last one
/// waits for the grant of the one before it; when that one gives up, it must wait for the
/// first waiter instead, and still get in only after it, once permits are free.
#[tokio::test]
async fn a_semaphore_waiter_behind_one_that_gives_up_keeps_its_turn() {
    let e = Etcd::start().await.expect("etcd");
    let c: Vec<SharedBackend> = futures_join(&e, 5).await;
    let sem = |i: usize| c[i].semaphore("wait-set/chain", 3).unwrap();
    let h1 = sem(0).acquire(1).await.unwrap();
    let h2 = sem(1).acquire(2).await.unwrap();
    let (s2, s3, s4) = (sem(2), sem(3), sem(4));
    let mut w1 = tokio::spawn(async move { s2.acquire(2).await });
    wait_waiters(&c[0], 1).await;
    let w2 = tokio::spawn(async move { s3.acquire(1).await });
    wait_waiters(&c[0], 2).await;
    let mut w3 = tokio::spawn(async move { s4.acquire(1).await });
    wait_waiters(&c[0], 3).await;
    // The middle waiter gives up; the last one now stands right behind the first waiter.
    w2.abort();
    let _ = w2.await;
    wait_waiters(&c[0], 2).await;
    // 1 + 2 held: releasing the 2 lets the first waiter (2) in, not the last (1 + 2 + 1 > 3).
    h2.release().await.unwrap();
    let g1 = tokio::time::timeout(DEADLINE, &mut w1)
        .await
        .expect("the first waiter did not get in")
        .unwrap()
        .unwrap();
    let state = c[0]
        .state(&tumbler_core::LockName::new("wait-set/chain").unwrap())
        .await
        .unwrap();
    assert_eq!(state.waiters, Some(1), "{state:?}");
    assert!(
        !w3.is_finished(),
        "the last waiter got in with 4 permits taken of 3"
    );
    h1.release().await.unwrap();
    let g3 = tokio::time::timeout(DEADLINE, &mut w3)
        .await
        .expect("the last waiter did not get in after permits were freed")
        .unwrap()
        .unwrap();
    assert!(g3.fencing_token() > g1.fencing_token());
    g1.release().await.unwrap();
    g3.release().await.unwrap();
}

async fn futures_join(e: &Etcd, n: usize) -> Vec<SharedBackend> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(connect(e).await);
    }
    out
}

/// Polls the semaphore's state until `n` contenders wait.
async fn wait_waiters(client: &SharedBackend, n: usize) {
    let name = tumbler_core::LockName::new("wait-set/chain").unwrap();
    let start = tokio::time::Instant::now();
    loop {
        let state = client.state(&name).await.unwrap();
        if state.waiters == Some(n) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "never {n} waiters: {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A waiter whose hold lease is revoked while it waits must queue again with a new lease, not
/// fail with the store's "lease not found" when the holder before it leaves and its check asks
/// to move its key to that lease.
#[tokio::test]
async fn a_waiter_whose_hold_lease_was_revoked_queues_again() {
    let e = Etcd::start().await.expect("etcd");
    let holder = connect(&e).await;
    let waiter =
        tumbler_etcd::EtcdConfig::from_url(&format!("etcd://127.0.0.1:{}?ttl=10s", e.port()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let shared: SharedBackend = waiter.clone();
    let held = holder
        .mutex("wait-set/revoked")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let mutex = shared.mutex("wait-set/revoked").unwrap();
    let mut waiting = tokio::spawn(async move { mutex.lock().await });
    let name = tumbler_core::LockName::new("wait-set/revoked").unwrap();
    let start = tokio::time::Instant::now();
    while holder.state(&name).await.unwrap().waiters != Some(1) {
        assert!(start.elapsed() < DEADLINE, "the waiter never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Revoke the waiter's hold lease (with a 10 s TTL its keeper notices at its next
    // keep-alive, seconds later), then let the waiter's turn come at once.
    e.revoke_lease(waiter.lease_id().unwrap()).await.unwrap();
    held.release().await.unwrap();
    let got = tokio::time::timeout(DEADLINE, &mut waiting)
        .await
        .expect("the waiter never got the lock")
        .unwrap()
        .expect("the waiter failed instead of queueing again with a new lease");
    got.release().await.unwrap();
}
