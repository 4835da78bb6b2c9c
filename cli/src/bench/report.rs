//! Bench output: a terminal table, JSON, and SVG charts.

use std::fmt::Write as _;

use crate::markup::escape;
use std::path::Path;

use super::scenarios::Measured;
use super::stats::fmt_us;

/// The terminal table: one row per subject and scenario.
pub fn table(results: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<18} {:>7} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8}  delivered/op",
        "store",
        "scenario",
        "clients",
        "ops/s",
        "acq p50",
        "acq p99",
        "acq p999",
        "handoff50",
        "handoff99",
        "req/op",
    );
    for m in results {
        if let Some(why) = &m.skipped {
            let _ = writeln!(out, "{:<18} {:<18} skipped: {why}", m.subject, m.scenario);
            continue;
        }
        let pct = |p: Option<super::stats::Percentiles>,
                   f: fn(&super::stats::Percentiles) -> u64| {
            p.as_ref()
                .map(|p| fmt_us(f(p)))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            out,
            "{:<18} {:<18} {:>7} {:>10.0} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8}  {}{}",
            m.subject,
            m.scenario,
            m.clients,
            m.ops_per_sec,
            pct(m.acquire, |p| p.p50_us),
            pct(m.acquire, |p| p.p99_us),
            pct(m.acquire, |p| p.p999_us),
            pct(m.handoff, |p| p.p50_us),
            pct(m.handoff, |p| p.p99_us),
            m.requests_per_op
                .map(|r| format!("{r:.1}"))
                .unwrap_or_else(|| "-".into()),
            delivered(m),
            if m.errors > 0 {
                format!("  ({} errors)", m.errors)
            } else {
                String::new()
            },
        );
    }
    out
}

/// The delivered-per-acquisition cell: `2.0ev`, `1.1kB 1.0pub`, or `-`.
pub fn delivered(m: &Measured) -> String {
    if m.delivered_per_op.is_empty() {
        return "-".into();
    }
    m.delivered_per_op
        .iter()
        .map(|d| d.what.short(d.per_op))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `throughput.svg` and `latency.svg` into `dir`.
pub fn write_svgs(results: &[Measured], dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let measured: Vec<&Measured> = results.iter().filter(|m| m.skipped.is_none()).collect();
    let throughput = bar_chart(
        "Throughput (acquire+release per second)",
        &measured,
        |m| m.ops_per_sec,
        |v| format!("{v:.0}"),
    );
    let latency = bar_chart(
        "Acquire latency p99 (ms)",
        &measured,
        |m| m.acquire.map(|p| p.p99_us as f64 / 1000.0).unwrap_or(0.0),
        |v| format!("{v:.2}"),
    );
    let mut written = Vec::new();
    for (file, svg) in [("throughput.svg", throughput), ("latency.svg", latency)] {
        let path = dir.join(file);
        std::fs::write(&path, svg)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// A horizontal bar chart with one bar per (subject, scenario).
fn bar_chart(
    title: &str,
    rows: &[&Measured],
    value: impl Fn(&Measured) -> f64,
    label: impl Fn(f64) -> String,
) -> String {
    let width = 900.0;
    let left = 290.0;
    let bar_h = 18.0;
    let gap = 6.0;
    let top = 40.0;
    let height = top + rows.len() as f64 * (bar_h + gap) + 20.0;
    let max = rows
        .iter()
        .map(|m| value(m))
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let palette = [
        "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
    ];
    let mut subjects: Vec<&str> = rows.iter().map(|m| m.subject.as_str()).collect();
    subjects.dedup();
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<text x="10" y="22" font-size="16" font-weight="bold">{}</text>
"#,
        escape(title)
    );
    for (i, m) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let v = value(m);
        let w = (width - left - 90.0) * v / max;
        let color_index = subjects.iter().position(|s| *s == m.subject).unwrap_or(0);
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{} · {}</text>
<rect x="{left}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{}"/>
<text x="{}" y="{}">{}</text>
"#,
            left - 8.0,
            y + 13.0,
            escape(&m.subject),
            escape(&m.scenario),
            palette[color_index % palette.len()],
            left + w + 6.0,
            y + 13.0,
            escape(&label(v)),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(subject: &str, ops: f64) -> Measured {
        Measured {
            subject: subject.into(),
            url: "memory://x".into(),
            scenario: "single".into(),
            clients: 1,
            ops: 10,
            seconds: 1.0,
            ops_per_sec: ops,
            acquire: None,
            handoff: None,
            requests_per_op: Some(2.0),
            delivered_per_op: vec![super::super::server_stats::PerOp {
                what: super::super::server_stats::Delivery::WatchEvents,
                per_op: 2.25,
            }],
            errors: 0,
            skipped: None,
        }
    }

    #[test]
    fn table_and_svg_show_every_row() {
        let rows = vec![sample("memory", 1000.0), sample("redis<", 500.0)];
        let text = table(&rows);
        assert!(
            text.contains("memory")
                && text.contains("1000")
                && text.contains("2.0")
                && text.contains("delivered/op")
                && text.contains("2.2ev"),
            "{text}"
        );
        let dir = std::env::temp_dir().join(format!("tumbler-svg-{}", std::process::id()));
        let files = write_svgs(&rows, &dir).unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.contains("redis&lt;") && svg.contains("<rect"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
