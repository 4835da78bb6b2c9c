//! `tumbler run` keeps the word of its exit-code table against real stores started by testkit:
//! usage errors exit 77, `tumbler revoke` stops a holder's command (78), a missing command is
//! 127 with the lock released, and a waiter that times out or is interrupted leaves nothing
//! behind, so the freed lock is at once available to `--no-wait`.

mod support;

use std::time::Duration;

use support::{
    exit_code, no_wait, scratch, signal, tumbler, wait_for_file, waiters, Holder, BUSY, ERROR,
    NOT_FOUND, REVOKED,
};

const LIMIT: Duration = Duration::from_secs(30);

/// `tumbler revoke NAME` makes the holder's `tumbler run` stop its command (SIGTERM) and exit
/// with the revoked code, having released the lock.
async fn revoke_stops_the_command(url: &str, test: &str) {
    let dir = scratch(test);
    let (held, finished) = (dir.join("held"), dir.join("finished"));
    let script = format!(
        "touch {}; sleep 60; touch {}",
        held.display(),
        finished.display()
    );
    let mut holder = tumbler(url)
        .args([
            "run",
            "--grace",
            "5s",
            "cli/revoke",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .spawn()
        .expect("spawn holder");
    wait_for_file(&held, LIMIT).await;
    let revoke = tumbler(url)
        .args(["revoke", "cli/revoke"])
        .output()
        .await
        .expect("tumbler revoke");
    assert!(
        revoke.status.success(),
        "revoke failed: {}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    assert_eq!(exit_code(&mut holder, LIMIT).await, REVOKED);
    assert!(
        !finished.exists(),
        "the command ran on after the revocation"
    );
    let (code, stderr) = no_wait(url, "cli/revoke").await;
    assert_eq!(code, 0, "the revoked holder did not release: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A command that ignores SIGTERM gets SIGKILL once `--grace` has passed.
async fn revoke_kills_after_grace(url: &str, test: &str) {
    let dir = scratch(test);
    let held = dir.join("held");
    let script = format!("trap '' TERM; touch {}; exec sleep 60", held.display());
    let mut holder = tumbler(url)
        .args([
            "run",
            "--grace",
            "1s",
            "cli/grace",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .spawn()
        .expect("spawn holder");
    wait_for_file(&held, LIMIT).await;
    let revoke = tumbler(url)
        .args(["revoke", "cli/grace"])
        .status()
        .await
        .expect("tumbler revoke");
    assert!(revoke.success());
    // Without SIGKILL the command would run its full 60 s.
    assert_eq!(exit_code(&mut holder, LIMIT).await, REVOKED);
    let _ = std::fs::remove_dir_all(dir);
}

/// A command that does not exist: 127 and "command not found", no word of a lost or
/// unreleased lock, and the lock is free at once.
async fn command_not_found(url: &str) {
    let out = tumbler(url)
        .env("TUMBLER_LOG", "warn")
        .args(["run", "cli/missing", "--", "tumbler-no-such-command"])
        .output()
        .await
        .expect("tumbler run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(NOT_FOUND), "{stderr}");
    assert!(
        stderr.contains("tumbler-no-such-command: command not found"),
        "{stderr}"
    );
    for needle in ["lost cli/missing", "without release", "dropped"] {
        assert!(
            !stderr.contains(needle),
            "stderr mentions {needle:?}: {stderr}"
        );
    }
    let (code, stderr) = no_wait(url, "cli/missing").await;
    assert_eq!(code, 0, "the lock was not released: {stderr}");
}

/// `--timeout 500ms` against a held lock exits busy; once the holder is done, `--no-wait`
/// gets the lock at once (the timed-out waiter left no queue entry).
async fn timed_out_waiter_leaves_nothing(url: &str, test: &str) {
    let dir = scratch(test);
    let (held, go) = (dir.join("held"), dir.join("go"));
    let mut holder = Holder::start(url, "cli/timeout", &held, &go);
    wait_for_file(&held, LIMIT).await;
    let mut waiter = tumbler(url)
        .args(["run", "--timeout", "500ms", "cli/timeout", "--", "true"])
        .spawn()
        .expect("spawn waiter");
    assert_eq!(exit_code(&mut waiter, LIMIT).await, BUSY);
    assert_eq!(holder.finish(LIMIT).await, 0);
    let (code, stderr) = no_wait(url, "cli/timeout").await;
    assert_eq!(code, 0, "the timed-out waiter still blocks: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A waiter interrupted by SIGINT (or SIGTERM) exits 128+N and leaves no queue entry: once
/// the holder is done, `--no-wait` gets the lock at once.
async fn interrupted_waiter_leaves_nothing(url: &str, test: &str, sig: libc::c_int) {
    let dir = scratch(test);
    let (held, go) = (dir.join("held"), dir.join("go"));
    let mut holder = Holder::start(url, "cli/interrupt", &held, &go);
    wait_for_file(&held, LIMIT).await;
    let mut waiter = tumbler(url)
        .args(["run", "cli/interrupt", "--", "true"])
        .spawn()
        .expect("spawn waiter");
    let deadline = std::time::Instant::now() + LIMIT;
    while waiters(url, "cli/interrupt").await.unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&waiter, sig);
    assert_eq!(exit_code(&mut waiter, LIMIT).await, 128 + sig);
    assert_eq!(holder.finish(LIMIT).await, 0);
    let (code, stderr) = no_wait(url, "cli/interrupt").await;
    assert_eq!(code, 0, "the interrupted waiter still blocks: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

macro_rules! store_tests {
    ($module:ident) => {
        mod $module {
            use super::support::stores;

            #[tokio::test]
            async fn revoke_stops_the_command() {
                let (_servers, url) = stores::$module().await;
                super::revoke_stops_the_command(&url, concat!(stringify!($module), "-revoke"))
                    .await;
            }

            #[tokio::test]
            async fn command_not_found() {
                let (_servers, url) = stores::$module().await;
                super::command_not_found(&url).await;
            }

            #[tokio::test]
            async fn timed_out_waiter_leaves_nothing() {
                let (_servers, url) = stores::$module().await;
                super::timed_out_waiter_leaves_nothing(
                    &url,
                    concat!(stringify!($module), "-timeout"),
                )
                .await;
            }

            #[tokio::test]
            async fn interrupted_waiter_leaves_nothing() {
                let (_servers, url) = stores::$module().await;
                super::interrupted_waiter_leaves_nothing(
                    &url,
                    concat!(stringify!($module), "-sigint"),
                    libc::SIGINT,
                )
                .await;
            }
        }
    };
}

store_tests!(zookeeper);
store_tests!(redis);
store_tests!(etcd);
store_tests!(consul);

/// SIGTERM to a waiting tumbler is handled like SIGINT (one store is enough: the signal
/// handling is the CLI's own).
#[tokio::test]
async fn terminated_waiter_leaves_nothing() {
    let (_etcd, url) = support::stores::etcd().await;
    interrupted_waiter_leaves_nothing(&url, "sigterm", libc::SIGTERM).await;
}

/// So is SIGHUP (the terminal went away).
#[tokio::test]
async fn hung_up_waiter_leaves_nothing() {
    let (_etcd, url) = support::stores::etcd().await;
    interrupted_waiter_leaves_nothing(&url, "sighup", libc::SIGHUP).await;
}

/// `--grace` bounds how long a command may ignore SIGTERM (the kill is the CLI's own).
#[tokio::test]
async fn revoke_kills_a_command_ignoring_sigterm() {
    let (_redis, url) = support::stores::redis().await;
    revoke_kills_after_grace(&url, "grace").await;
}

/// Usage errors exit with the documented 77 (not clap's 2); `--help` and `--version` exit 0.
#[test]
fn usage_errors_exit_77() {
    let code = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tumbler"))
            .args(args)
            .env("TUMBLER_URL", "redis://127.0.0.1:1")
            .output()
            .expect("tumbler")
            .status
            .code()
    };
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["run", "--bogus", "x", "--", "true"][..],
        &["run", "x"][..],
        &["run", "--timeout", "soon", "x", "--", "true"][..],
        &["run", "--timeout", "1s", "--no-wait", "x", "--", "true"][..],
        &["status"][..],
    ] {
        assert_eq!(code(args), Some(ERROR), "tumbler {args:?}");
    }
    for args in [
        &["--help"][..],
        &["--version"][..],
        &["run", "--help"][..],
        &["help", "run"][..],
    ] {
        assert_eq!(code(args), Some(0), "tumbler {args:?}");
    }
}

/// The exit-code table and the flags it mentions are in `run --help`.
#[test]
fn run_help_documents_every_exit_code() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tumbler"))
        .args(["run", "--help"])
        .output()
        .expect("tumbler run --help");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["--grace", "revoke", "78", "126", "127", "128+N", "SIGKILL"] {
        assert!(text.contains(needle), "run --help lacks {needle}:\n{text}");
    }
}
