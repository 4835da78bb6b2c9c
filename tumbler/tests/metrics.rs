//! The metrics example, run as a user would: it serves Prometheus' page after one lock cycle,
//! and the page shows that cycle (issue 17: "a test scrapes its page after a lock cycle").

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `target/<profile>/examples/metrics`, built by `cargo test` next to this test's binary.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    profile.join("examples").join("metrics")
}

fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("read the page");
    page
}

/// The value of the first sample line of `metric` whose labels contain every one of `labels`.
fn sample(page: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|line| line.starts_with(metric))
        .filter(|line| labels.iter().all(|l| line.contains(l)))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[test]
fn example_serves_the_lock_cycle() {
    let port = testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(example())
        .args([addr.as_str(), "memory://"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the metrics example: `cargo test -p tumbler-locks` builds it (a `--test metrics` filter alone does not; then `cargo build -p tumbler-locks --example metrics` first)");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read the example's output");
    assert!(
        first.starts_with("ready"),
        "the example did not get ready: {first:?}"
    );
    let page = scrape(&addr);
    drop(child.stdin.take());
    let status = child.wait().expect("the example's exit");
    assert!(status.success(), "the example failed: {status}");

    let mutex = ["store=\"memory\"", "primitive=\"mutex\""];
    let acquired = [&mutex[..], &["outcome=\"acquired\""]].concat();
    let busy = [&mutex[..], &["outcome=\"busy\""]].concat();
    assert_eq!(
        sample(&page, "tumbler_acquisitions_total", &acquired),
        Some(2.0),
        "two grants (the holder's and the waiter's) in:\n{page}"
    );
    assert_eq!(
        sample(&page, "tumbler_acquisitions_total", &busy),
        Some(1.0),
        "one busy try in:\n{page}"
    );
    let cancelled = [&mutex[..], &["outcome=\"cancelled\""]].concat();
    assert_eq!(
        sample(&page, "tumbler_acquisitions_total", &cancelled),
        Some(1.0),
        "one cancelled wait in:\n{page}"
    );
    assert_eq!(
        sample(&page, "tumbler_hold_seconds_count", &mutex),
        Some(2.0),
        "two holds ended in:\n{page}"
    );
    assert_eq!(
        sample(&page, "tumbler_handoff_seconds_count", &mutex),
        Some(1.0),
        "one hand-off to the waiter in:\n{page}"
    );
    assert_eq!(
        sample(&page, "tumbler_waiters", &mutex),
        Some(0.0),
        "no waiter left in:\n{page}"
    );
    assert!(
        page.contains("# HELP tumbler_acquisitions_total"),
        "the metrics are described:\n{page}"
    );
}
