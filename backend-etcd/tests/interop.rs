//! Interop with Debian's `etcdctl lock NAME -- CMD` (Go's concurrency.Mutex): each side waits
//! while the other holds the same name.

use std::process::Stdio;
use std::time::Duration;

use testkit::etcd::Etcd;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tumbler_core::{LockName, SharedBackend};

const DEADLINE: Duration = Duration::from_secs(20);

async fn connect(e: &Etcd) -> SharedBackend {
    tumbler_etcd::connect_url(&format!("etcd://127.0.0.1:{}?ttl=5s", e.port()))
        .await
        .expect("connect")
}

/// `etcdctl lock NAME -- sh -c SCRIPT`, with piped stdin and stdout.
fn etcdctl_lock(e: &Etcd, name: &str, script: &str) -> Child {
    let program = std::env::var("TESTKIT_ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    Command::new(program)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", e.endpoint()))
        .args(["lock", name, "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start etcdctl (Debian package etcd-client)")
}

/// A named pipe in a fresh temporary folder.
struct Fifo {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl Fifo {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("backend-etcd-interop-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp folder");
        let path = dir.join("release");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo failed");
        Fifo { dir, path }
    }

    /// Writes one line (opening blocks until the reader has the pipe open).
    async fn send_line(&self) {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut pipe = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open fifo");
            pipe.write_all(b"go\n").expect("write fifo");
        })
        .await
        .expect("fifo writer");
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the store shows `holders` holders and `waiters` waiters on `name`.
async fn wait_for_state(locks: &SharedBackend, name: &LockName, holders: usize, waiters: usize) {
    let start = tokio::time::Instant::now();
    loop {
        let state = locks.state(name).await.expect("state");
        if state.holders.len() == holders && state.waiters == Some(waiters) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "state never showed {holders} holder(s) and {waiters} waiter(s): {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn etcdctl_holds_and_tumbler_waits() {
    let e = Etcd::start().await.expect("etcd");
    let locks = connect(&e).await;
    let name = LockName::new("interop/etcdctl-first").unwrap();
    // The command holds the lock until a line arrives on a FIFO (etcdctl does not hand its
    // stdin to the command).
    let fifo = Fifo::new();
    let script = format!("echo HELD; read line < {}", fifo.path.display());
    let mut etcdctl = etcdctl_lock(&e, name.as_str(), &script);
    let mut out = BufReader::new(etcdctl.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(DEADLINE, out.next_line())
        .await
        .expect("etcdctl did not take the lock")
        .expect("read etcdctl");
    assert_eq!(first.as_deref(), Some("HELD"));

    let mutex = locks.mutex(name.clone()).unwrap();
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "tumbler got the lock while etcdctl held it"
    );
    let state = locks.state(&name).await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    let their_token = state.holders[0].token.expect("token of etcdctl's key");

    let waiter = tokio::spawn(async move { mutex.lock().await });
    wait_for_state(&locks, &name, 1, 1).await;
    assert!(
        !waiter.is_finished(),
        "tumbler got the lock while etcdctl held it"
    );

    fifo.send_line().await; // the command ends, etcdctl releases
    let guard = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("tumbler did not get the lock after etcdctl released it")
        .unwrap()
        .unwrap();
    assert!(guard.fencing_token() > their_token);
    let status = etcdctl.wait().await.unwrap();
    assert!(status.success(), "etcdctl exited with {status}");
    guard.release().await.unwrap();
}

#[tokio::test]
async fn tumbler_holds_and_etcdctl_waits() {
    let e = Etcd::start().await.expect("etcd");
    let locks = connect(&e).await;
    let name = LockName::new("interop/tumbler-first").unwrap();
    let guard = locks.mutex(name.clone()).unwrap().lock().await.unwrap();

    let mut etcdctl = etcdctl_lock(&e, name.as_str(), "echo GOT");
    let mut out = BufReader::new(etcdctl.stdout.take().unwrap()).lines();
    // etcdctl has queued its key behind ours...
    wait_for_state(&locks, &name, 1, 1).await;
    let state = locks.state(&name).await.unwrap();
    assert_eq!(
        state.holders[0].token,
        Some(guard.fencing_token()),
        "{state:?}"
    );
    // ...and has not run its command.
    let early = tokio::time::timeout(Duration::from_millis(500), out.next_line()).await;
    assert!(
        early.is_err(),
        "etcdctl ran its command while tumbler held the lock: {early:?}"
    );

    guard.release().await.unwrap();
    let line = tokio::time::timeout(DEADLINE, out.next_line())
        .await
        .expect("etcdctl did not get the lock after tumbler released it")
        .unwrap();
    assert_eq!(line.as_deref(), Some("GOT"));
    let status = tokio::time::timeout(DEADLINE, etcdctl.wait())
        .await
        .expect("etcdctl did not exit")
        .unwrap();
    assert!(status.success(), "etcdctl exited with {status}");
    // etcdctl deleted its key on the way out: the lock is free.
    wait_for_state(&locks, &name, 0, 0).await;
}

/// A tumbler waiter's key lives on the short waiting lease and moves to the hold lease when
/// granted: etcdctl, queued behind it, must still wait for it, and get the lock after it.
#[tokio::test]
async fn etcdctl_queued_behind_a_tumbler_waiter_still_excludes() {
    let e = Etcd::start().await.expect("etcd");
    let (first, second) = (connect(&e).await, connect(&e).await);
    let name = LockName::new("interop/behind-a-waiter").unwrap();
    let held = first.mutex(name.clone()).unwrap().lock().await.unwrap();
    let waiter = tokio::spawn({
        let second = second.clone();
        let name = name.clone();
        async move { second.mutex(name).unwrap().lock().await }
    });
    wait_for_state(&first, &name, 1, 1).await;
    let fifo = Fifo::new();
    let script = format!("echo GOT; read line < {}", fifo.path.display());
    let mut etcdctl = etcdctl_lock(&e, name.as_str(), &script);
    let mut out = BufReader::new(etcdctl.stdout.take().unwrap()).lines();
    wait_for_state(&first, &name, 1, 2).await;

    held.release().await.unwrap();
    let granted = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("the tumbler waiter was not granted")
        .unwrap()
        .unwrap();
    let state = first.state(&name).await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    assert_eq!(state.holders[0].token, Some(granted.fencing_token()));
    // Moving the granted key to the hold lease is a put, not a delete: etcdctl keeps waiting.
    let early = tokio::time::timeout(Duration::from_millis(800), out.next_line()).await;
    assert!(
        early.is_err(),
        "etcdctl ran its command while the granted tumbler waiter held the lock: {early:?}"
    );
    granted.release().await.unwrap();
    let line = tokio::time::timeout(DEADLINE, out.next_line())
        .await
        .expect("etcdctl did not get the lock after tumbler released it")
        .unwrap();
    assert_eq!(line.as_deref(), Some("GOT"));
    fifo.send_line().await;
    let status = tokio::time::timeout(DEADLINE, etcdctl.wait())
        .await
        .expect("etcdctl did not exit")
        .unwrap();
    assert!(status.success(), "etcdctl exited with {status}");
}
