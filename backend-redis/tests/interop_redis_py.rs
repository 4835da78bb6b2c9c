//! redis-py's `Lock` and tumbler exclude each other on the same name (the same key, `SET NX PX`).
//!
//! Needs python3 with redis-py (scripts/setup installs redis==5.2.1).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{connect, fresh_redis, PROMPT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tumbler_core::HoldMode;

/// A small redis-py program: `hold` takes `Lock(name, timeout=10)` and keeps it until a line
/// arrives on stdin; `try` makes one non-blocking attempt and one blocking for 0.5 s. With a
/// fourth argument `cluster`, it talks to a Redis Cluster through `RedisCluster`.
const PY: &str = r#"
import sys, redis
port, name, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if sys.argv[4:] == ['cluster']:
    from redis.cluster import RedisCluster
    r = RedisCluster(host='127.0.0.1', port=port)
else:
    r = redis.Redis(host='127.0.0.1', port=port)
lock = r.lock(name, timeout=10)
if mode == 'hold':
    if not lock.acquire(blocking=True, blocking_timeout=20):
        print('TIMEOUT', flush=True)
        sys.exit(1)
    print('HELD ' + lock.local.token.decode(), flush=True)
    sys.stdin.readline()
    lock.release()
    print('RELEASED', flush=True)
else:
    now = lock.acquire(blocking=False)
    later = now or lock.acquire(blocking=True, blocking_timeout=0.5)
    print('GOT' if later else 'BUSY', flush=True)
    if later:
        lock.release()
"#;

struct Py {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Py {
    fn start(port: u16, name: &str, mode: &str) -> Py {
        Py::spawn(&[&port.to_string(), name, mode])
    }

    /// The program on the Redis Cluster that `port` is a node of.
    fn start_cluster(port: u16, name: &str, mode: &str) -> Py {
        Py::spawn(&[&port.to_string(), name, mode, "cluster"])
    }

    fn spawn(args: &[&str]) -> Py {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(PY)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 (run scripts/setup)");
        let stdout = child.stdout.take().expect("stdout");
        Py {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(PROMPT, self.lines.next_line())
            .await
            .expect("python answered in time")
            .expect("python's output")
            .expect("python printed a line (is redis-py installed? run scripts/setup)")
    }

    async fn say(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").await.expect("write to python");
        stdin.flush().await.expect("flush");
    }
}

#[tokio::test]
async fn redis_py_lock_excludes_ours() {
    let redis = fresh_redis().await;
    let locks = connect(&redis.url()).await;
    let mut py = Py::start(redis.port(), "interop/py-first", "hold");
    let held = py.line().await;
    let py_token = held
        .strip_prefix("HELD ")
        .expect("python holds the lock")
        .to_owned();
    let mutex = locks.mutex("interop/py-first").unwrap();
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "we got in while redis-py held"
    );
    assert!(mutex
        .lock_timeout(Duration::from_millis(500))
        .await
        .unwrap()
        .is_none());
    let state = locks.state("interop/py-first").await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    assert_eq!(state.holders[0].id, py_token);
    assert_eq!(
        (state.holders[0].mode.clone(), state.holders[0].token),
        (HoldMode::Exclusive, None)
    );
    let waiting = tokio::spawn(async move { mutex.lock().await });
    py.say().await;
    assert_eq!(py.line().await, "RELEASED");
    let guard = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("we got the lock after redis-py released it")
        .unwrap()
        .unwrap();
    guard.release().await.unwrap();
}

#[tokio::test]
async fn our_lock_excludes_redis_py() {
    let redis = fresh_redis().await;
    let locks = connect(&redis.url()).await;
    let guard = locks
        .mutex("interop/ours-first")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let mut py = Py::start(redis.port(), "interop/ours-first", "try");
    assert_eq!(py.line().await, "BUSY", "redis-py got in while we held");
    guard.release().await.unwrap();
    let mut py = Py::start(redis.port(), "interop/ours-first", "try");
    assert_eq!(
        py.line().await,
        "GOT",
        "redis-py could not lock after we released"
    );
}

/// An election and a redis-py `Lock` on one name exclude each other both ways; a redis-py
/// holder is no leader (`leader()` says so with a `Conflict` naming the key), and a campaign
/// waiting behind it is elected once redis-py releases.
#[tokio::test]
async fn an_election_and_a_redis_py_lock_exclude_each_other() {
    let redis = fresh_redis().await;
    let locks = connect(&redis.url()).await;
    let election = locks.election("interop/election").unwrap();
    let leadership = election.campaign("ours").await.unwrap();
    let mut py = Py::start(redis.port(), "interop/election", "try");
    assert_eq!(py.line().await, "BUSY", "redis-py got in while we led");
    leadership.resign().await.unwrap();

    let mut py = Py::start(redis.port(), "interop/election", "hold");
    assert!(
        py.line().await.starts_with("HELD "),
        "python holds the lock"
    );
    assert!(election.try_campaign("ours").await.unwrap().is_none());
    match election.leader().await {
        Err(tumbler_core::Error::Conflict { problem, .. }) => {
            assert!(problem.contains("interop/election"), "{problem}")
        }
        other => panic!("a redis-py holder read as {other:?}"),
    }
    let waiting = {
        let election = election.clone();
        tokio::spawn(async move { election.campaign("ours").await })
    };
    py.say().await;
    assert_eq!(py.line().await, "RELEASED");
    let leadership = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("elected after redis-py released")
        .unwrap()
        .unwrap();
    let leader = election.leader().await.unwrap().expect("a leader");
    assert_eq!(
        (leader.value, leader.term),
        (b"ours".to_vec(), leadership.term())
    );
    leadership.resign().await.unwrap();
}

/// On a Redis Cluster, redis-py's `RedisCluster(...).lock(name)` and tumbler's
/// `redis+cluster://` mutex exclude each other both ways, on names of every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_cluster_locks_and_ours_exclude_each_other() {
    let cluster = testkit::redis_cluster::RedisCluster::start()
        .await
        .expect("start a Redis Cluster");
    let port = cluster.nodes()[0].port();
    let locks = connect(&format!(
        "redis+cluster://{}?restart_delay=0s",
        cluster.seed_hosts()
    ))
    .await;
    for name in common::one_name_per_master(&cluster, "interop/cluster").await {
        // redis-py first.
        let mut py = Py::start_cluster(port, &name, "hold");
        assert!(py.line().await.starts_with("HELD "), "python holds {name}");
        let mutex = locks.mutex(name.as_str()).unwrap();
        assert!(
            mutex.try_lock().await.unwrap().is_none(),
            "we got {name} while redis-py held it"
        );
        let waiting = tokio::spawn(async move { mutex.lock().await });
        py.say().await;
        assert_eq!(py.line().await, "RELEASED");
        let guard = tokio::time::timeout(PROMPT, waiting)
            .await
            .expect("we got the lock after redis-py released it")
            .unwrap()
            .unwrap();
        // Ours first.
        let mut py = Py::start_cluster(port, &name, "try");
        assert_eq!(
            py.line().await,
            "BUSY",
            "redis-py got {name} while we held it"
        );
        guard.release().await.unwrap();
        let mut py = Py::start_cluster(port, &name, "try");
        assert_eq!(
            py.line().await,
            "GOT",
            "redis-py could not lock {name} after we released"
        );
    }
}
