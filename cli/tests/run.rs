//! End-to-end tests of `tumbler run` against real stores started by testkit: two runs never
//! overlap, `--no-wait` reports busy, and a holder whose session expires has its command
//! stopped and exits with the lost code.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

const BUSY: i32 = 75;
const LOST: i32 = 76;

fn tumbler(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tumbler"));
    cmd.env("TUMBLER_URL", url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tumbler-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

async fn wait_for_file(path: &Path, limit: Duration) {
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

async fn exit_code(child: &mut Child, limit: Duration) -> i32 {
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| panic!("tumbler did not exit within {limit:?}"))
        .expect("wait for tumbler");
    status.code().unwrap_or(-1)
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Three `tumbler run`s on one name: their commands' [start, end] intervals never overlap.
async fn runs_never_overlap(url: &str, test: &str) {
    let dir = scratch(test);
    let log = dir.join("log");
    let script = format!(
        "echo start $(date +%s%N) >> {0}; sleep 0.3; echo end $(date +%s%N) >> {0}",
        log.display()
    );
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(
            tumbler(url)
                .args(["run", "cli/overlap", "--", "sh", "-c", &script])
                .spawn()
                .expect("spawn tumbler"),
        );
    }
    for child in &mut children {
        assert_eq!(exit_code(child, Duration::from_secs(60)).await, 0);
    }
    let text = std::fs::read_to_string(&log).expect("log");
    let mut intervals = Vec::new();
    let mut open = None;
    for line in text.lines() {
        let (what, at) = line.split_once(' ').expect("line");
        let at: u128 = at.trim().parse().expect("timestamp");
        match what {
            "start" => {
                assert!(open.is_none(), "two commands ran at once:\n{text}");
                open = Some(at);
            }
            "end" => {
                let start = open.take().expect("end without start");
                intervals.push((start, at));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(intervals.len(), 3, "{text}");
    for pair in intervals.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlap: {pair:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// While one run holds the lock, `--no-wait` exits with the busy code without running.
async fn no_wait_is_busy(url: &str, test: &str) {
    let dir = scratch(test);
    let held = dir.join("held");
    let ran = dir.join("ran");
    let mut holder = tumbler(url)
        .args([
            "run",
            "cli/busy",
            "--",
            "sh",
            "-c",
            &format!("touch {}; sleep 30", held.display()),
        ])
        .spawn()
        .expect("spawn holder");
    wait_for_file(&held, Duration::from_secs(30)).await;
    let mut busy = tumbler(url)
        .args(["run", "--no-wait", "cli/busy", "--", "touch"])
        .arg(&ran)
        .spawn()
        .expect("spawn --no-wait");
    assert_eq!(exit_code(&mut busy, Duration::from_secs(30)).await, BUSY);
    assert!(
        !ran.exists(),
        "--no-wait ran its command while the lock was held"
    );
    let mut timed = tumbler(url)
        .args(["run", "--timeout", "300ms", "cli/busy", "--", "touch"])
        .arg(&ran)
        .spawn()
        .expect("spawn --timeout");
    assert_eq!(exit_code(&mut timed, Duration::from_secs(30)).await, BUSY);
    assert!(!ran.exists());
    holder.kill().await.expect("kill holder");
    let _ = std::fs::remove_dir_all(dir);
}

/// The holder is stopped past its TTL (its session expires); once it runs again it stops its
/// command and exits with the lost code, and a rival gets the lock.
async fn lost_stops_the_command(url: &str, test: &str) {
    let dir = scratch(test);
    let held = dir.join("held");
    let finished = dir.join("finished");
    let script = format!(
        "touch {}; sleep 60; touch {}",
        held.display(),
        finished.display()
    );
    let mut holder = tumbler(url)
        .args([
            "run", "--grace", "1s", "cli/lost", "--", "sh", "-c", &script,
        ])
        .spawn()
        .expect("spawn holder");
    wait_for_file(&held, Duration::from_secs(30)).await;
    signal(&holder, libc::SIGSTOP);
    // A rival gets the lock once the stopped holder's session or TTL has run out.
    let mut rival = tumbler(url)
        .args(["run", "--timeout", "60s", "cli/lost", "--", "true"])
        .spawn()
        .expect("spawn rival");
    let rival_code = exit_code(&mut rival, Duration::from_secs(90)).await;
    signal(&holder, libc::SIGCONT);
    assert_eq!(
        rival_code, 0,
        "the rival did not get the lock of the stopped holder"
    );
    assert_eq!(exit_code(&mut holder, Duration::from_secs(60)).await, LOST);
    assert!(
        !finished.exists(),
        "the command ran to completion after the lock was lost"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The three end-to-end tests for one store; `$start` yields (servers kept alive, URL).
macro_rules! store_tests {
    ($module:ident, $start:expr) => {
        mod $module {
            #[tokio::test]
            async fn runs_never_overlap() {
                let (_servers, url) = $start.await;
                super::runs_never_overlap(&url, concat!(stringify!($module), "-overlap")).await;
            }

            #[tokio::test]
            async fn no_wait_is_busy() {
                let (_servers, url) = $start.await;
                super::no_wait_is_busy(&url, concat!(stringify!($module), "-busy")).await;
            }

            #[tokio::test]
            async fn lost_stops_the_command() {
                let (_servers, url) = $start.await;
                super::lost_stops_the_command(&url, concat!(stringify!($module), "-lost")).await;
            }
        }
    };
}

store_tests!(zookeeper, async {
    let zk = testkit::zk::ZooKeeper::start().await.expect("zookeeper");
    let url = format!("zk://{}?ttl=2s", zk.connect_string());
    (zk, url)
});

store_tests!(redis, async {
    let redis = testkit::redis::Redis::start().await.expect("redis");
    let url = format!("{}?ttl=2s", redis.url());
    (redis, url)
});

store_tests!(etcd, async {
    let etcd = testkit::etcd::Etcd::start().await.expect("etcd");
    let url = format!("etcd://{}?ttl=2s", etcd.addr());
    (etcd, url)
});

store_tests!(consul, async {
    let options = testkit::consul::ConsulServerOptions::default()
        .with_min_session_ttl(std::time::Duration::from_secs(1));
    let consul = testkit::consul::ConsulServer::start_with(options)
        .await
        .expect("consul test server");
    let url = format!("consul://{}?ttl=2s&lock_delay=0s", consul.http_addr());
    (consul, url)
});

#[test]
fn help_is_complete() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tumbler"))
        .args(["run", "--help"])
        .output()
        .expect("tumbler run --help");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--no-wait",
        "--timeout",
        "--semaphore",
        "TUMBLER_FENCING_TOKEN",
        "75",
        "76",
        "77",
    ] {
        assert!(text.contains(needle), "run --help lacks {needle}:\n{text}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tumbler"))
        .arg("--help")
        .output()
        .expect("tumbler --help");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "run",
        "status",
        "revoke",
        "bench",
        "lab",
        "redis://",
        "zk://",
        "etcd://",
        "consul://",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

#[test]
fn every_subcommand_has_help() {
    for (sub, needles) in [
        ("status", &["--json", "NAME"][..]),
        ("revoke", &["NAME"][..]),
        (
            "bench",
            &[
                "--target",
                "--local",
                "--scenario",
                "--json",
                "--svg",
                "contend-64",
                "rslock",
            ][..],
        ),
        (
            "lab",
            &[
                "--store",
                "--fault",
                "--out",
                "fenced",
                "partition",
                "leader-kill",
            ][..],
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tumbler"))
            .args([sub, "--help"])
            .output()
            .expect("tumbler SUB --help");
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in needles {
            assert!(
                text.contains(needle),
                "{sub} --help lacks {needle}:\n{text}"
            );
        }
    }
}

#[test]
fn missing_url_says_how_to_set_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tumbler"))
        .args(["status", "x"])
        .env_remove("TUMBLER_URL")
        .output()
        .expect("tumbler status");
    assert_eq!(out.status.code(), Some(77));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("TUMBLER_URL"), "{text}");
}
