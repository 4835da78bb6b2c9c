//! `tumbler lab` and `tumbler bench` end to end: the lab catches what it looks for (a naive
//! client's stale writes, all refused by the fenced resource) and the bench measures.

use std::process::Command;

fn tumbler() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tumbler"));
    cmd.env_remove("TUMBLER_URL");
    cmd
}

/// Runs `tumbler lab --json ARGS --out <a fresh folder>` and returns the folder and the JSON
/// it printed; fails the test if the lab failed.
fn lab(name: &str, args: &[&str]) -> (std::path::PathBuf, serde_json::Value) {
    let out_dir =
        std::env::temp_dir().join(format!("tumbler-lab-{name}-test-{}", std::process::id()));
    let out = tumbler()
        .args(["lab", "--json"])
        .args(args)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run tumbler lab");
    assert!(
        out.status.success(),
        "lab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lab = serde_json::from_slice(&out.stdout).expect("lab JSON");
    (out_dir, lab)
}

#[test]
fn lab_catches_a_naive_clients_stale_writes_and_fencing_refuses_them() {
    let (out_dir, lab) = lab(
        "naive",
        &[
            "--store",
            "naive-redis",
            "--fault",
            "restart",
            "--trials",
            "2",
            "--seed",
            "5",
        ],
    );
    assert_eq!(lab["seed"], 5, "the seed is recorded");
    let cells = lab["cells"].as_array().expect("an array of cells");
    assert_eq!(cells.len(), 1, "{cells:?}");
    let naive = &cells[0];
    assert_eq!(naive["store"], "naive redis client");
    let trials = naive["trials"].as_array().expect("every trial is recorded");
    assert_eq!(trials.len(), 2, "{naive}");
    let overlaps = naive["unfenced_violations"].as_u64().unwrap_or(0);
    assert!(
        overlaps > 0 && naive["trials_with_overlaps"].as_u64() >= Some(1),
        "the naive client's stale writes were not seen in any trial: {naive}"
    );
    assert_eq!(naive["fenced_rejected"].as_u64(), Some(overlaps), "{naive}");
    assert_eq!(naive["verdict"]["verdict"], "expected", "{naive}");
    for cell in cells {
        assert_eq!(cell["fenced_stale_accepted"].as_u64(), Some(0), "{cell}");
        for trial in cell["trials"].as_array().expect("trials") {
            assert_eq!(trial["fenced_stale_accepted"].as_u64(), Some(0), "{trial}");
        }
    }
    for file in ["lab.md", "lab.html", "lab.json"] {
        let text = std::fs::read_to_string(out_dir.join(file)).expect(file);
        assert!(text.contains("naive redis client"), "{file}");
    }
    let html = std::fs::read_to_string(out_dir.join("lab.html")).expect("lab.html");
    assert!(html.contains("<svg") && html.contains("store restart"));
    assert!(
        html.contains("--seed 5"),
        "the report says how to replay it"
    );
    let _ = std::fs::remove_dir_all(out_dir);
}

#[test]
fn bench_reports_numbers_as_json_and_svg() {
    let svg_dir = std::env::temp_dir().join(format!("tumbler-bench-test-{}", std::process::id()));
    let out = tumbler()
        .args([
            "bench",
            "--target",
            "memory://bench-test",
            "--scenario",
            "single,contend-8,rwlock-read-heavy",
            "--duration",
            "300ms",
            "--json",
            "--svg",
        ])
        .arg(&svg_dir)
        .output()
        .expect("run tumbler bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in rows {
        assert!(row["ops"].as_u64().unwrap_or(0) > 0, "{row}");
        assert!(row["acquire"]["p99_us"].as_u64().is_some(), "{row}");
        assert_eq!(row["errors"].as_u64(), Some(0), "{row}");
    }
    assert!(
        rows[1]["handoff"]["p50_us"].as_u64().is_some(),
        "8 contenders hand off: {}",
        rows[1]
    );
    let svg = std::fs::read_to_string(svg_dir.join("throughput.svg")).expect("throughput.svg");
    assert_eq!(svg.matches("<rect").count(), 3);
    let _ = std::fs::remove_dir_all(svg_dir);
}

#[test]
fn lab_careful_redis_keeps_its_promises_under_every_store_fault() {
    let (out_dir, lab) = lab(
        "faults",
        &[
            "--store",
            "redis",
            "--fault",
            "restart,store-stalled,slow-network,waiter-crash",
            "--seed",
            "3",
        ],
    );
    let cells = lab["cells"].as_array().expect("cells");
    let faults: Vec<&str> = cells.iter().filter_map(|c| c["fault"].as_str()).collect();
    assert_eq!(
        faults,
        [
            "store restart",
            "store stalled",
            "slow network",
            "waiter crash"
        ],
        "{cells:?}"
    );
    for cell in cells {
        assert_eq!(cell["verdict"]["verdict"], "kept", "{cell}");
        assert_eq!(cell["unfenced_violations"].as_u64(), Some(0), "{cell}");
        assert!(
            cell["recovery_ms"]["max"].as_f64().is_some(),
            "the rival got the lock after the fault: {cell}"
        );
    }
    let _ = std::fs::remove_dir_all(out_dir);
}

#[test]
fn lab_zookeeper_minority_partition_and_clock_jump() {
    let (out_dir, lab) = lab(
        "minority",
        &[
            "--store",
            "zk",
            "--fault",
            "minority-partition,clock-jump",
            "--seed",
            "4",
        ],
    );
    let cell = &lab["cells"][0];
    assert_eq!(cell["fault"], "minority partition", "{cell}");
    assert_eq!(cell["verdict"]["verdict"], "kept", "{cell}");
    assert!(
        cell["recovery_ms"]["max"].as_f64().is_some(),
        "the majority granted the lock to the rival: {cell}"
    );
    assert!(
        cell["lost_lead_ms"]["min"]
            .as_f64()
            .is_some_and(|lead| lead > 0.0),
        "the cut-off holder's lost() fired before the rival got the lock: {cell}"
    );
    // A clock jump expires the holder's session early (unless a ping saves it first): the
    // store promises nothing here, fencing must refuse whatever overlaps.
    let jump = &lab["cells"][1];
    assert_eq!(jump["fault"], "clock jump", "{jump}");
    assert_eq!(jump["fenced_stale_accepted"].as_u64(), Some(0), "{jump}");
    assert_ne!(jump["verdict"]["verdict"], "broken", "{jump}");
    assert_eq!(
        jump["unfenced_violations"].as_u64(),
        jump["fenced_rejected"].as_u64(),
        "every overlap was refused by fencing: {jump}"
    );
    let _ = std::fs::remove_dir_all(out_dir);
}

#[test]
fn lab_redis_clock_jump_shows_overlaps_that_only_fencing_stops() {
    let (out_dir, lab) = lab(
        "clock-jump",
        &[
            "--store",
            "redis,naive-redis",
            "--fault",
            "clock-jump",
            "--trials",
            "4",
            "--seed",
            "7",
        ],
    );
    let cells = lab["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 2, "{lab}");
    for cell in cells {
        assert_eq!(cell["fault"], "clock jump", "{cell}");
        // Redis expires the key by its own clock, before any client-side bound says so: the
        // old holder writes on, and only the fenced resource stops it.
        assert!(
            cell["trials_with_overlaps"]
                .as_u64()
                .is_some_and(|n| n >= 1),
            "a 10-TTL jump of the server's clock caused no overlap in any trial: {cell}"
        );
        assert_eq!(cell["fenced_stale_accepted"].as_u64(), Some(0), "{cell}");
        assert_eq!(
            cell["unfenced_violations"].as_u64(),
            cell["fenced_rejected"].as_u64(),
            "every overlap was refused by fencing: {cell}"
        );
        assert_ne!(cell["verdict"]["verdict"], "broken", "{cell}");
    }
    let _ = std::fs::remove_dir_all(out_dir);
}

#[test]
fn lab_etcd_minority_partition() {
    let (out_dir, lab) = lab(
        "etcd-minority",
        &[
            "--store",
            "etcd",
            "--fault",
            "minority-partition",
            "--trials",
            "2",
            "--seed",
            "5",
        ],
    );
    let cell = &lab["cells"][0];
    assert_eq!(cell["store"], "etcd", "{cell}");
    assert_eq!(cell["fault"], "minority partition", "{cell}");
    assert_eq!(cell["verdict"]["verdict"], "kept", "{cell}");
    // The majority grants the lock to the rival once the cut-off holder's lease has expired,
    // and the holder's lost() fires first (its keep-alives get no answer).
    assert!(
        cell["recovery_ms"]["max"].as_f64().is_some(),
        "the majority never granted the lock to the rival: {cell}"
    );
    assert!(
        cell["lost_lead_ms"]["min"]
            .as_f64()
            .is_some_and(|lead| lead > 0.0),
        "the cut-off holder's lost() did not fire before the rival got the lock: {cell}"
    );
    let _ = std::fs::remove_dir_all(out_dir);
}
