//! End-to-end tests of `tumbler run` against real stores started by testkit: two runs never
//! overlap, `--no-wait` reports busy, and a holder whose session expires has its command
//! stopped and exits with the lost code.

mod support;

use std::time::{Duration, Instant};

use support::{exit_code, scratch, signal, tumbler, wait_for_file, BUSY, LOST};

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

/// How soon after it runs again a holder that lost its lock must have stopped its command
/// (which dies on SIGTERM) and exited: its `--grace` (1 s) plus the bounded cleanup.
const PROMPTLY: Duration = Duration::from_secs(5);

/// The holder is stopped past its TTL (its session expires); once it runs again it stops its
/// command and exits promptly with the lost code, and a rival gets the lock.
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
    let resumed = Instant::now();
    signal(&holder, libc::SIGCONT);
    assert_eq!(
        rival_code, 0,
        "the rival did not get the lock of the stopped holder"
    );
    let holder_code = exit_code(&mut holder, Duration::from_secs(60)).await;
    let took = resumed.elapsed();
    assert_eq!(holder_code, LOST);
    assert!(
        took < PROMPTLY,
        "the holder took {took:?} after resuming to stop its command and exit"
    );
    assert!(
        !finished.exists(),
        "the command ran to completion after the lock was lost"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The store stops answering (SIGSTOP) while the command runs: once the holder sees its lock
/// lost it stops the command and exits promptly, without waiting on the silent store.
async fn lost_store_exits_promptly(url: &str, test: &str, pause: impl FnOnce()) {
    let dir = scratch(test);
    let (held, stopped) = (dir.join("held"), dir.join("stopped"));
    let script = format!(
        "trap 'touch {}; exit 143' TERM; touch {}; while :; do sleep 0.05; done",
        stopped.display(),
        held.display()
    );
    let mut holder = tumbler(url)
        .args([
            "run", "--grace", "1s", "cli/gone", "--", "sh", "-c", &script,
        ])
        .spawn()
        .expect("spawn holder");
    wait_for_file(&held, Duration::from_secs(30)).await;
    pause();
    wait_for_file(&stopped, Duration::from_secs(60)).await;
    let child_stopped = Instant::now();
    let code = exit_code(&mut holder, Duration::from_secs(60)).await;
    let took = child_stopped.elapsed();
    assert_eq!(code, LOST);
    assert!(
        took < PROMPTLY,
        "the holder exited {took:?} after its command was stopped"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// ZooKeeper stops answering while a command runs under its lock.
#[tokio::test]
async fn lost_zookeeper_exits_promptly() {
    let (zk, url) = support::stores::zookeeper().await;
    lost_store_exits_promptly(&url, "zk-gone", || zk.pause().expect("pause")).await;
    zk.resume().expect("resume");
}

/// Redis stops answering while a command runs under its lock.
#[tokio::test]
async fn lost_redis_exits_promptly() {
    let (redis, url) = support::stores::redis().await;
    lost_store_exits_promptly(&url, "redis-gone", || redis.pause().expect("pause")).await;
    redis.resume().expect("resume");
}

/// etcd stops answering while a command runs under its lock.
#[tokio::test]
async fn lost_etcd_exits_promptly() {
    let (etcd, url) = support::stores::etcd().await;
    lost_store_exits_promptly(&url, "etcd-gone", || etcd.pause().expect("pause")).await;
    etcd.resume().expect("resume");
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

store_tests!(zookeeper, super::support::stores::zookeeper());
store_tests!(redis, super::support::stores::redis());
store_tests!(etcd, super::support::stores::etcd());
store_tests!(consul, super::support::stores::consul());

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
