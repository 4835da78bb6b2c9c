//! `tumbler bench` on a local etcd: the Go concurrency.Mutex peer is built and measured side by
//! side, and both rows say what the server delivered per acquisition.

use std::process::Command;

#[test]
fn bench_measures_go_mutex_and_what_etcd_delivers() {
    let out = Command::new(env!("CARGO_BIN_EXE_tumbler"))
        .env_remove("TUMBLER_URL")
        .args([
            "bench",
            "--local",
            "etcd",
            "--scenario",
            "contend-8",
            "--duration",
            "1s",
            "--json",
        ])
        .output()
        .expect("run tumbler bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
    let rows = rows.as_array().expect("an array of rows");
    let row = |subject: &str| {
        rows.iter()
            .find(|r| r["subject"] == subject)
            .unwrap_or_else(|| panic!("no {subject} row: {rows:?}"))
    };
    let events = |row: &serde_json::Value| {
        row["delivered_per_op"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["what"] == "watch_events"))
            .and_then(|d| d["per_op"].as_f64())
            .unwrap_or_else(|| panic!("no watch events per op: {row}"))
    };
    for subject in ["etcd/go-mutex", "etcd"] {
        let r = row(subject);
        assert!(r["skipped"].is_null(), "{r}");
        assert!(r["ops"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(r["requests_per_op"].as_f64().is_some(), "{r}");
        assert!(events(r) > 0.0, "{r}");
    }
    // Each release reaches its own instance and the waiter behind it, not all 8 contenders.
    let ours = events(row("etcd"));
    assert!(
        ours <= 3.0,
        "{ours:.1} events per acquisition at 8 contenders"
    );
}
