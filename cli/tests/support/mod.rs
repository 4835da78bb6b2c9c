//! What the end-to-end tests of the `tumbler` binary share: starting it against a store,
//! scratch folders, waiting for files, exit codes, signals.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// `--no-wait` found the lock held, or `--timeout` passed.
pub const BUSY: i32 = 75;
/// The lock was lost while the command ran.
pub const LOST: i32 = 76;
/// tumbler failed: usage error, unreachable store.
pub const ERROR: i32 = 77;
/// `tumbler revoke` stopped the command.
pub const REVOKED: i32 = 78;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;

/// The `tumbler` binary with `TUMBLER_URL` set, stdin closed, killed when dropped.
pub fn tumbler(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tumbler"));
    cmd.env("TUMBLER_URL", url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A fresh, empty folder for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tumbler-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Polls until `path` exists; panics after `limit`.
pub async fn wait_for_file(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {limit:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The exit code of `child`; panics if it does not exit within `limit` or died of a signal
/// (reported as -1 so that the assertion shows it).
pub async fn exit_code(child: &mut Child, limit: Duration) -> i32 {
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| panic!("tumbler did not exit within {limit:?}"))
        .expect("wait for tumbler");
    status.code().unwrap_or(-1)
}

/// Sends `sig` to `child`.
pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// A `tumbler run NAME` holder whose command touches `held` once it runs and ends (exit 0)
/// once `go` exists: [`Holder::finish`] creates it, and so does dropping the holder, so that
/// a failed test leaves no command looping behind.
pub struct Holder {
    pub child: Child,
    go: PathBuf,
}

impl Holder {
    /// Starts the holder.
    pub fn start(url: &str, name: &str, held: &Path, go: &Path) -> Holder {
        let script = format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
            held.display(),
            go.display()
        );
        let child = tumbler(url)
            .args(["run", name, "--", "sh", "-c", &script])
            .spawn()
            .expect("spawn holder");
        Holder {
            child,
            go: go.to_owned(),
        }
    }

    /// Lets the command end and returns tumbler's exit code.
    pub async fn finish(&mut self, limit: Duration) -> i32 {
        std::fs::write(&self.go, "").expect("create the go file");
        exit_code(&mut self.child, limit).await
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.go, "");
    }
}

/// `tumbler status --json NAME`'s waiter count (`None` if the store cannot list waiters).
pub async fn waiters(url: &str, name: &str) -> Option<u64> {
    let out = tumbler(url)
        .args(["status", "--json", name])
        .output()
        .await
        .expect("tumbler status");
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    state["waiters"].as_u64()
}

/// `tumbler run --no-wait NAME -- true`'s exit code and stderr.
pub async fn no_wait(url: &str, name: &str) -> (i32, String) {
    let out = tumbler(url)
        .args(["run", "--no-wait", name, "--", "true"])
        .output()
        .await
        .expect("tumbler run --no-wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a store for the end-to-end tests: (servers kept alive, URL with a 2 s TTL).
pub mod stores {
    /// ZooKeeper standalone.
    pub async fn zookeeper() -> (testkit::zk::ZooKeeper, String) {
        let zk = testkit::zk::ZooKeeper::start().await.expect("zookeeper");
        let url = format!("zk://{}?ttl=2s", zk.connect_string());
        (zk, url)
    }

    /// One Redis server.
    pub async fn redis() -> (testkit::redis::Redis, String) {
        let redis = testkit::redis::Redis::start().await.expect("redis");
        let url = format!("{}?ttl=2s", redis.url());
        (redis, url)
    }

    /// etcd standalone.
    pub async fn etcd() -> (testkit::etcd::Etcd, String) {
        let etcd = testkit::etcd::Etcd::start().await.expect("etcd");
        let url = format!("etcd://{}?ttl=2s", etcd.addr());
        (etcd, url)
    }

    /// Consul's test server, with a 1 s minimum session TTL and no lock delay.
    pub async fn consul() -> (testkit::consul::ConsulServer, String) {
        let options = testkit::consul::ConsulServerOptions::default()
            .with_min_session_ttl(std::time::Duration::from_secs(1));
        let consul = testkit::consul::ConsulServer::start_with(options)
            .await
            .expect("consul test server");
        let url = format!("consul://{}?ttl=2s&lock_delay=0s", consul.http_addr());
        (consul, url)
    }
}
