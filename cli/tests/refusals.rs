//! `tumbler lab` and `tumbler bench` refuse what they cannot run before starting anything: a
//! selection with no cell, a report folder they cannot write, a zero duration, nothing to
//! measure. Each refusal exits with the usage code (77) and says what to give instead; and
//! durations in messages read `0s`, never `0ns`.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{scratch, tumbler, wait_for_file, Holder, BUSY, ERROR};

/// Runs the binary without a store URL in the environment.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tumbler"))
        .args(args)
        .env_remove("TUMBLER_URL")
        .output()
        .expect("run tumbler")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each (store, fault) pair that has no lab cell is refused with what the store does run,
/// where it used to print an empty table and exit 0.
#[test]
fn lab_refuses_a_store_and_fault_with_no_cell() {
    let out_dir = scratch("lab-no-cell");
    let out_arg = out_dir.join("report");
    let out_arg = out_arg.to_str().expect("a UTF-8 temp path");
    for (store, fault, runs) in [
        ("naive-redis", "crash", "restart"),
        ("redlock", "leader-kill", "restart"),
        ("zk", "restart", "crash, paused, partition, leader-kill"),
    ] {
        let out = run(&["lab", "--store", store, "--fault", fault, "--out", out_arg]);
        let text = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(ERROR),
            "lab {store}/{fault}: {text}"
        );
        assert!(
            text.contains(&format!(
                "--store {store} cannot be put through --fault {fault}"
            )) && text.contains(runs),
            "lab {store}/{fault}: {text}"
        );
        assert!(out.stdout.is_empty(), "lab {store}/{fault} printed a table");
        assert!(
            !out_dir.join("report").exists(),
            "reports written for nothing"
        );
    }
    let _ = std::fs::remove_dir_all(out_dir);
}

/// An `--out` the lab cannot write to is refused before the first cell starts, not after the
/// last one ran.
#[test]
fn lab_refuses_an_unwritable_out_before_any_cell() {
    let out = run(&[
        "lab", "--store", "redis", "--fault", "crash", "--out", "/proc/x",
    ]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(ERROR), "{text}");
    assert!(text.contains("--out /proc/x: cannot write there"), "{text}");
    assert!(!text.contains("lab: redis"), "a cell ran first: {text}");
}

/// `--duration 0s` measures nothing: refused (it used to report 0 ops and exit 0), and the
/// message prints the duration as given.
#[test]
fn bench_refuses_a_zero_duration() {
    let out = run(&[
        "bench",
        "--target",
        "memory://refusals",
        "--scenario",
        "single",
        "--duration",
        "0s",
    ]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(ERROR), "{text}");
    assert!(text.contains("--duration 0s"), "{text}");
    assert!(
        out.stdout.is_empty(),
        "it measured: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// With nothing to measure, the error names the flag that exists (`--target`), not `--url`.
#[test]
fn bench_without_a_target_names_the_target_flag() {
    let out = run(&["bench"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(ERROR), "{text}");
    assert!(text.contains("--target URL"), "{text}");
    assert!(!text.contains("--url"), "{text}");
}

/// An unknown `--local` store is a usage error before any server starts (it used to start
/// the stores named before it first).
#[test]
fn bench_refuses_an_unknown_local_store() {
    let out = run(&["bench", "--local", "redis,mysql"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(ERROR), "{text}");
    assert!(
        text.contains("mysql") && text.contains("possible values"),
        "{text}"
    );
}

/// A `--svg` folder that cannot be written is refused before anything is measured.
#[test]
fn bench_refuses_an_unwritable_svg_folder_before_measuring() {
    let out = run(&[
        "bench",
        "--target",
        "memory://refusals-svg",
        "--scenario",
        "single",
        "--duration",
        "200ms",
        "--svg",
        "/proc/x",
    ]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(ERROR), "{text}");
    assert!(text.contains("--svg /proc/x: cannot write there"), "{text}");
    assert!(out.stdout.is_empty(), "it measured first");
}

/// `run --timeout 0s` against a held lock says it waited `0s` (Rust's `Debug` says `0ns`).
#[tokio::test]
async fn a_zero_timeout_is_printed_as_0s() {
    let (_redis, url) = support::stores::redis().await;
    let dir = scratch("zero-timeout");
    let (held, go) = (dir.join("held"), dir.join("go"));
    let mut holder = Holder::start(&url, "cli/zero", &held, &go);
    wait_for_file(&held, Duration::from_secs(30)).await;
    let out = tumbler(&url)
        .args(["run", "--timeout", "0s", "cli/zero", "--", "true"])
        .output()
        .await
        .expect("run tumbler");
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(BUSY), "{text}");
    assert!(text.contains("not acquired within 0s:"), "{text}");
    assert_eq!(holder.finish(Duration::from_secs(30)).await, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// An installed tumbler says where `lab` and `bench --local` get their servers.
#[test]
fn lab_and_bench_help_say_where_servers_come_from() {
    for sub in ["lab", "bench"] {
        let out = run(&[sub, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        for needle in [
            "cargo install",
            "TESTKIT_REDIS_SERVER",
            "$PATH",
            "Consul is a protocol",
        ] {
            assert!(
                help.contains(needle),
                "{sub} --help lacks {needle:?}:\n{help}"
            );
        }
    }
}
