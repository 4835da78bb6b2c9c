//! Lab output: a terminal table, a Markdown table, and an HTML report with SVG timelines.

use std::fmt::Write as _;

use crate::markup::escape;

use super::cell::{CellResult, EventKind, Who};

/// One row per cell.
pub fn rows(results: &[CellResult]) -> Vec<[String; 8]> {
    results
        .iter()
        .map(|c| {
            [
                c.store.to_owned(),
                c.fault.to_owned(),
                c.unfenced_violations.to_string(),
                c.fenced_rejected.to_string(),
                c.fenced_stale_accepted.to_string(),
                c.recovery_ms
                    .map(|ms| format!("{:.0} ms", ms))
                    .unwrap_or_else(|| "never".into()),
                c.lost_lead_ms
                    .map(|ms| format!("{ms:+.0} ms"))
                    .unwrap_or_else(|| "n/a".into()),
                c.note.clone(),
            ]
        })
        .collect()
}

const HEADERS: [&str; 8] = [
    "store",
    "fault",
    "unfenced overlaps",
    "fenced rejects",
    "stale accepted",
    "usable again after",
    "lost() lead",
    "note",
];

/// The terminal table.
pub fn table(results: &[CellResult]) -> String {
    let rows = rows(results);
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(out, "{}", line(&HEADERS.map(String::from)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    out
}

/// The Markdown table.
pub fn markdown(results: &[CellResult]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        HEADERS.join(" | "),
        "---|".repeat(HEADERS.len())
    );
    for row in rows(results) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// The HTML report: the table, how to read it, and one SVG timeline per store.
pub fn html(results: &[CellResult]) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tumbler lab</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>\
         <h1>tumbler lab</h1>",
    );
    out.push_str(&markdown_to_html_table(results));
    out.push_str(
        "<p><b>How to read it.</b> Each row is one store under one fault. A victim process holds \
         the lock and writes every 20 ms to two resources; a rival process waits for the same \
         lock. <i>Unfenced overlaps</i> counts writes the victim made after the rival held the \
         lock (what an unfenced resource would suffer). <i>Fenced rejects</i> counts writes the \
         fencing-aware resource refused because their token was lower than one it had seen; \
         <i>stale accepted</i> must be 0. <i>lost() lead</i> is how long before the rival's \
         acquisition the victim's lost() fired (negative: after).</p>",
    );
    let mut stores: Vec<&str> = results.iter().map(|c| c.store).collect();
    stores.dedup();
    for store in stores {
        let cells: Vec<&CellResult> = results.iter().filter(|c| c.store == store).collect();
        let _ = write!(out, "<h2>{store}</h2>{}", timeline(&cells));
    }
    out.push_str("</body></html>\n");
    out
}

fn markdown_to_html_table(results: &[CellResult]) -> String {
    let mut out = String::from("<table><tr>");
    for h in HEADERS {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for row in rows(results) {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// An SVG with two lanes (victim, rival) per cell: holds as bars, writes as ticks (red when
/// stale), `lost()` as a black diamond, the fault as a dashed line.
pub fn timeline(cells: &[&CellResult]) -> String {
    let width = 1000.0;
    let left = 150.0;
    let lane = 16.0;
    let block = lane * 2.0 + 26.0;
    let height = 20.0 + cells.len() as f64 * block;
    let span = cells.iter().map(|c| c.end_ms).fold(1.0_f64, f64::max);
    let x = |ms: f64| left + (width - left - 20.0) * ms / span;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    for (i, cell) in cells.iter().enumerate() {
        let top = 10.0 + i as f64 * block;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{}\" font-weight=\"bold\">{}</text>",
            top + 12.0,
            escape(cell.fault)
        );
        for (lane_index, who) in [Who::Victim, Who::Rival].into_iter().enumerate() {
            let y = top + 16.0 + lane_index as f64 * lane;
            let _ = write!(svg, "<text x=\"4\" y=\"{}\">{:?}</text>", y + 11.0, who);
            let acquired = cell.events.iter().find_map(|e| match e.kind {
                EventKind::Acquired { .. } if e.who == who => Some(e.at_ms),
                _ => None,
            });
            let ended = cell
                .events
                .iter()
                .filter(|e| e.who == who)
                .filter(|e| matches!(e.kind, EventKind::Write { .. } | EventKind::Lost { .. }))
                .map(|e| e.at_ms)
                .fold(acquired.unwrap_or(0.0), f64::max);
            if let Some(start) = acquired {
                let color = if who == Who::Victim {
                    "#4e79a7"
                } else {
                    "#59a14f"
                };
                let _ = write!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\" opacity=\"0.35\"/>",
                    x(start),
                    (x(ended) - x(start)).max(1.0),
                    lane - 3.0
                );
            }
            for e in cell.events.iter().filter(|e| e.who == who) {
                match &e.kind {
                    EventKind::Write {
                        stale, fenced_ok, ..
                    } => {
                        let color = match (stale, fenced_ok) {
                            (true, true) => "#b00",
                            (true, false) => "#e15759",
                            _ => "#333",
                        };
                        let _ = write!(
                            svg,
                            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{color}\"/>",
                            x(e.at_ms),
                            y,
                            y + lane - 3.0
                        );
                    }
                    EventKind::Lost { .. } => {
                        let cx = x(e.at_ms);
                        let cy = y + (lane - 3.0) / 2.0;
                        let _ = write!(
                            svg,
                            "<polygon points=\"{:.1},{cy} {cx:.1},{:.1} {:.1},{cy} {cx:.1},{:.1}\" fill=\"black\"/>",
                            cx - 5.0,
                            cy - 6.0,
                            cx + 5.0,
                            cy + 6.0
                        );
                    }
                    _ => {}
                }
            }
        }
        let fx = x(cell.fault_at_ms);
        let _ = write!(
            svg,
            "<line x1=\"{fx:.1}\" x2=\"{fx:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#e15759\" stroke-dasharray=\"4,3\"/>",
            top + 14.0,
            top + 16.0 + lane * 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::cell::Event;

    fn cell() -> CellResult {
        CellResult {
            store: "redis",
            fault: "store restart",
            unfenced_violations: 3,
            fenced_rejected: 3,
            fenced_stale_accepted: 0,
            recovery_ms: Some(12.0),
            lost_lead_ms: Some(-600.0),
            fault_at_ms: 400.0,
            end_ms: 2000.0,
            events: vec![
                Event {
                    at_ms: 10.0,
                    who: Who::Victim,
                    kind: EventKind::Acquired { token: 1 },
                },
                Event {
                    at_ms: 420.0,
                    who: Who::Rival,
                    kind: EventKind::Acquired { token: 2 },
                },
                Event {
                    at_ms: 430.0,
                    who: Who::Victim,
                    kind: EventKind::Write {
                        token: 1,
                        fenced_ok: false,
                        stale: true,
                    },
                },
                Event {
                    at_ms: 1000.0,
                    who: Who::Victim,
                    kind: EventKind::Lost { reason: "x".into() },
                },
            ],
            note: String::new(),
        }
    }

    #[test]
    fn tables_and_timeline_show_the_cell() {
        let results = vec![cell()];
        let text = table(&results);
        assert!(
            text.contains("store restart") && text.contains("-600 ms"),
            "{text}"
        );
        let md = markdown(&results);
        assert_eq!(md.lines().count(), 3, "{md}");
        let page = html(&results);
        assert!(page.contains("<svg") && page.contains("#e15759") && page.contains("<polygon"));
    }
}
