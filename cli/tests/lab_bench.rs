//! `tumbler lab` and `tumbler bench` end to end: the lab catches what it looks for (a naive
//! client's stale writes, all refused by the fenced resource) and the bench measures.

use std::process::Command;

fn tumbler() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tumbler"));
    cmd.env_remove("TUMBLER_URL");
    cmd
}

#[test]
fn lab_catches_a_naive_clients_stale_writes_and_fencing_refuses_them() {
    let out_dir = std::env::temp_dir().join(format!("tumbler-lab-test-{}", std::process::id()));
    let out = tumbler()
        .args([
            "lab",
            "--json",
            "--store",
            "naive-redis,redis",
            "--fault",
            "restart",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .expect("run tumbler lab");
    assert!(
        out.status.success(),
        "lab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cells: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lab JSON");
    let cells = cells.as_array().expect("an array of cells");
    assert_eq!(cells.len(), 2, "{cells:?}");
    let naive = &cells[0];
    assert_eq!(naive["store"], "naive redis client");
    let overlaps = naive["unfenced_violations"].as_u64().unwrap_or(0);
    assert!(
        overlaps > 0,
        "the naive client's stale writes were not seen: {naive}"
    );
    assert_eq!(naive["fenced_rejected"].as_u64(), Some(overlaps), "{naive}");
    for cell in cells {
        assert_eq!(cell["fenced_stale_accepted"].as_u64(), Some(0), "{cell}");
    }
    let ours = &cells[1];
    assert_eq!(ours["unfenced_violations"].as_u64(), Some(0), "{ours}");
    for file in ["lab.md", "lab.html", "lab.json"] {
        let text = std::fs::read_to_string(out_dir.join(file)).expect(file);
        assert!(text.contains("naive redis client"), "{file}");
    }
    let html = std::fs::read_to_string(out_dir.join("lab.html")).expect("lab.html");
    assert!(html.contains("<svg") && html.contains("store restart"));
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
