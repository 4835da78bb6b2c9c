//! Server processes never outlive their handle, a panicking test, or a killed test process.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::etcd::Etcd;
use testkit::redis::Redis;
use testkit::zk::ZooKeeper;

/// True if `pid` names a live process. A zombie counts as dead only once all its threads are
/// gone: a killed JVM's main thread turns zombie while other threads still hold its sockets.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    !(matches!(state, Some("Z") | Some("X") | None) && threads <= 1)
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).is_ok()
}

/// Polls until every pid is gone (deadline 10 s); returns the ones still alive.
fn wait_gone(pids: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn drop_kills_the_server_and_frees_its_port() {
    let r = Redis::start().await.expect("start redis");
    let (pid, port) = (r.pid().expect("pid"), r.port());
    assert!(alive(pid) && listening(port));
    drop(r);
    assert!(!alive(pid), "redis {pid} still runs after drop");
    assert!(!listening(port), "port {port} still listens after drop");
}

#[test]
fn a_panicking_test_kills_its_servers() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let r = testkit::blocking(Redis::start())
            .expect("runtime")
            .expect("start redis");
        tx.send(r.pid().expect("pid")).expect("send pid");
        panic!("deliberate panic while holding a server");
    })
    .join();
    assert!(outcome.is_err(), "the thread was meant to panic");
    let pid = rx.recv().expect("pid");
    assert!(!alive(pid), "redis {pid} survived a panic");
}

/// Not a test on its own: the body of the child process that
/// `a_killed_test_process_takes_its_servers_along` starts and then kills.
#[test]
#[ignore = "helper: run by a_killed_test_process_takes_its_servers_along"]
fn helper_hold_servers_until_killed() {
    if std::env::var_os("TESTKIT_LIFETIME_HELPER").is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (r, e, z) =
        rt.block_on(async { tokio::join!(Redis::start(), Etcd::start(), ZooKeeper::start()) });
    let (r, e, z) = (r.expect("redis"), e.expect("etcd"), z.expect("zookeeper"));
    let pids = [r.pid(), e.pid(), z.pid()].map(|p| p.expect("pid"));
    let ports = [r.port(), e.port(), z.port()];
    println!("HOLDING {pids:?} {ports:?}");
    // Run the servers from a thread other than the one that started them: the death signal
    // must follow the process, not the thread.
    std::thread::spawn(|| {}).join().expect("thread");
    loop {
        std::thread::park();
    }
}

#[test]
fn a_killed_test_process_takes_its_servers_along() {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "helper_hold_servers_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TESTKIT_LIFETIME_HELPER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn helper");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let mut reader = BufReader::new(out);
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read helper output");
        assert!(n > 0, "the helper ended without holding servers");
        if let Some(at) = line.find("HOLDING") {
            line.drain(..at);
            break;
        }
    }
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("number"))
        .collect();
    assert_eq!(nums.len(), 6, "{line}");
    let (pids, ports) = nums.split_at(3);
    for (pid, port) in pids.iter().zip(ports) {
        assert!(alive(*pid), "server {pid} is not running");
        assert!(listening(*port as u16), "port {port} is not listening");
    }

    let helper_pid = child.id();
    child.kill().expect("SIGKILL the helper");
    child.wait().expect("reap the helper");

    let left = wait_gone(pids);
    assert!(
        left.is_empty(),
        "servers {left:?} outlived the killed test process"
    );
    for port in ports {
        assert!(!listening(*port as u16), "port {port} still listens");
    }

    // The killed helper could not remove its folders; the sweep does.
    let prefix = format!("tumbler-testkit.{helper_pid}.");
    let count = || {
        std::fs::read_dir(std::env::temp_dir())
            .expect("temp dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count()
    };
    testkit::remove_stale_dirs();
    assert_eq!(count(), 0, "remove_stale_dirs left the helper's folders");
}
