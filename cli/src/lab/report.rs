//! Lab output: a terminal table, a Markdown table, a JSON record of every trial, and an HTML
//! report with, per cell, the timeline of its worst trial and the spread of all its trials.

use std::fmt::Write as _;

use serde::Serialize;

use crate::markup::escape;

use super::cell::{CellResult, EventKind, Who};
use super::trials::{CellSummary, Spread, Verdict};

/// A whole lab run.
#[derive(Debug, Clone, Serialize)]
pub struct Lab {
    /// The seed every trial's timing was drawn from (`--seed` replays it).
    pub seed: u64,
    /// Trials per cell.
    pub trials: u32,
    pub cells: Vec<CellSummary>,
}

const HEADERS: [&str; 10] = [
    "store",
    "fault",
    "trials",
    "unfenced overlaps",
    "fenced rejects",
    "stale accepted",
    "usable again after",
    "lost() lead",
    "verdict",
    "note",
];

/// `median (min–max)` of a spread, or one value when there was one trial.
fn spread_text(spread: Option<Spread>, signed: bool, none: &str) -> String {
    let ms = |v: f64| {
        if signed {
            format!("{v:+.0} ms")
        } else {
            format!("{v:.0} ms")
        }
    };
    match spread {
        None => none.to_owned(),
        Some(s) if s.count == 1 => ms(s.median),
        Some(s) => format!("{} ({}…{})", ms(s.median), ms(s.min), ms(s.max)),
    }
}

/// One row per cell.
pub fn rows(lab: &Lab) -> Vec<[String; 10]> {
    lab.cells
        .iter()
        .map(|c| {
            let trials = c.trials.len();
            let overlaps = if c.unfenced_violations == 0 || trials == 1 {
                c.unfenced_violations.to_string()
            } else {
                format!(
                    "{} (in {} of {trials})",
                    c.unfenced_violations, c.trials_with_overlaps
                )
            };
            let mut recovery = spread_text(c.recovery_ms, false, "never");
            if c.never_recovered > 0 && c.recovery_ms.is_some() {
                let _ = write!(recovery, ", never in {}", c.never_recovered);
            }
            let verdict = match &c.verdict {
                Verdict::Kept => "kept".to_owned(),
                Verdict::Expected(_) => "expected: only fencing stops these".to_owned(),
                Verdict::Broken(why) => format!("BROKEN: {why}"),
            };
            let note = c.worst_trial().map(|t| t.note.clone()).unwrap_or_default();
            [
                c.store.to_owned(),
                c.fault.to_owned(),
                trials.to_string(),
                overlaps,
                c.fenced_rejected.to_string(),
                c.fenced_stale_accepted.to_string(),
                recovery,
                spread_text(c.lost_lead_ms, true, "n/a"),
                verdict,
                note,
            ]
        })
        .collect()
}

/// The terminal table, with the seed.
pub fn table(lab: &Lab) -> String {
    let rows = rows(lab);
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!("seed {} ({} trial(s) per cell)\n", lab.seed, lab.trials);
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

/// The Markdown table, with the command that replays it.
pub fn markdown(lab: &Lab) -> String {
    let mut out = format!(
        "`tumbler lab --trials {} --seed {}`\n\n| {} |\n|{}\n",
        lab.trials,
        lab.seed,
        HEADERS.join(" | "),
        "---|".repeat(HEADERS.len())
    );
    for row in rows(lab) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// The HTML report: the table, how to read it, and per store the worst trial of each cell as
/// a timeline and every trial's recovery as a strip.
pub fn html(lab: &Lab) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tumbler lab</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>\
         <h1>tumbler lab</h1>",
    );
    let _ = write!(
        out,
        "<p>Seed {} with {} trial(s) per cell: <code>tumbler lab --trials {} --seed {}</code> \
         replays it.</p>",
        lab.seed, lab.trials, lab.trials, lab.seed
    );
    out.push_str(&html_table(lab));
    out.push_str(
        "<p><b>How to read it.</b> Each row is one store under one fault, run as many trials; \
         each trial draws from the seed when the fault comes after the victim's grant (often \
         at once, before any renewal). A victim process holds the lock and writes every 20 ms \
         to two resources; a rival process waits for the same lock. <i>Unfenced overlaps</i> \
         counts writes the victim made after the rival held the lock (what an unfenced \
         resource would suffer). <i>Fenced rejects</i> counts writes the fencing-aware \
         resource refused because their token was lower than one it had seen; <i>stale \
         accepted</i> must be 0. Times are the median (minimum…maximum) over the trials. \
         <i>lost() lead</i> is how long before the rival's acquisition the victim's lost() \
         fired (negative: after). The <i>verdict</i> compares the cell with what the store \
         promises.</p>",
    );
    let mut stores: Vec<&str> = lab.cells.iter().map(|c| c.store).collect();
    stores.dedup();
    for store in stores {
        let cells: Vec<&CellSummary> = lab.cells.iter().filter(|c| c.store == store).collect();
        let worst: Vec<&CellResult> = cells.iter().filter_map(|c| c.worst_trial()).collect();
        let _ = write!(
            out,
            "<h2>{}</h2><p>The worst trial of each cell:</p>{}<p>Every trial: fault to the \
             rival's grant.</p>{}",
            escape(store),
            timeline(&worst),
            recovery_strip(&cells)
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn html_table(lab: &Lab) -> String {
    let mut out = String::from("<table><tr>");
    for h in HEADERS {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for row in rows(lab) {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// Tick marks and labels every `step` ms along `0..span` ms, at `y`.
fn time_axis(x: impl Fn(f64) -> f64, span: f64, y: f64) -> String {
    let step = [100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0]
        .into_iter()
        .find(|s| span / s <= 12.0)
        .unwrap_or(20000.0);
    let mut svg = format!(
        "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#999\"/>",
        x(0.0),
        x(span)
    );
    let mut at = 0.0;
    while at <= span {
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{y}\" y2=\"{1}\" stroke=\"#999\"/>\
             <text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\" fill=\"#555\">{3} ms</text>",
            x(at),
            y + 4.0,
            y + 15.0,
            at
        );
        at += step;
    }
    svg
}

/// One lane per cell: a dot per trial at its recovery time (a cross at the end: never).
fn recovery_strip(cells: &[&CellSummary]) -> String {
    let width = 1000.0;
    let left = 150.0;
    let lane = 18.0;
    let height = 30.0 + cells.len() as f64 * lane;
    let span = cells
        .iter()
        .flat_map(|c| c.trials.iter().filter_map(|t| t.recovery_ms))
        .fold(1000.0_f64, f64::max);
    let x = |ms: f64| left + (width - left - 30.0) * ms / span;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    for (i, cell) in cells.iter().enumerate() {
        let y = 10.0 + i as f64 * lane;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{}\">{}</text>",
            y + 10.0,
            escape(cell.fault)
        );
        for trial in &cell.trials {
            match trial.recovery_ms {
                Some(ms) => {
                    let _ = write!(
                        svg,
                        "<circle cx=\"{:.1}\" cy=\"{}\" r=\"3\" fill=\"#4e79a7\" opacity=\"0.7\"/>",
                        x(ms),
                        y + 6.0
                    );
                }
                None => {
                    let _ = write!(
                        svg,
                        "<text x=\"{:.1}\" y=\"{}\" fill=\"#b00\">×</text>",
                        x(span) + 6.0,
                        y + 10.0
                    );
                }
            }
        }
    }
    svg.push_str(&time_axis(x, span, 14.0 + cells.len() as f64 * lane));
    svg.push_str("</svg>");
    svg
}

/// An SVG with two lanes (victim, rival) per cell: holds as bars, writes as ticks (red when
/// stale), `lost()` as a black diamond, the fault as a dashed line.
pub fn timeline(cells: &[&CellResult]) -> String {
    let width = 1000.0;
    let left = 150.0;
    let lane = 16.0;
    let block = lane * 2.0 + 26.0;
    let height = 44.0 + cells.len() as f64 * block;
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
    svg.push_str(&time_axis(x, span, height - 26.0));
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::cell::Event;
    use crate::lab::deploy::{Fault, Store};
    use crate::lab::trials::TrialPlan;

    fn trial(n: u32, overlaps: u64, recovery: Option<f64>) -> CellResult {
        CellResult {
            store: "redis",
            fault: "store restart",
            plan: TrialPlan {
                trial: n,
                settle_ms: 0,
            },
            unfenced_violations: overlaps,
            fenced_rejected: overlaps,
            fenced_stale_accepted: 0,
            recovery_ms: recovery,
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

    fn lab(store: Store) -> Lab {
        let trials = vec![
            trial(0, 0, Some(12.0)),
            trial(1, 3, Some(30.0)),
            trial(2, 0, None),
        ];
        Lab {
            seed: 42,
            trials: 3,
            cells: vec![CellSummary::of(store, Fault::Restart, trials)],
        }
    }

    #[test]
    fn tables_and_reports_show_every_trial() {
        let naive = lab(Store::NaiveRedis);
        let text = table(&naive);
        assert!(text.contains("seed 42"), "{text}");
        assert!(text.contains("3 (in 1 of 3)"), "{text}");
        assert!(text.contains("21 ms (12 ms…30 ms), never in 1"), "{text}");
        assert!(text.contains("expected: only fencing"), "{text}");
        assert_eq!(
            naive.cells[0].worst, 1,
            "the trial with overlaps is the worst"
        );
        let md = markdown(&naive);
        assert!(md.contains("--trials 3 --seed 42"), "{md}");
        assert_eq!(md.lines().filter(|l| l.starts_with('|')).count(), 3, "{md}");
        let page = html(&naive);
        assert!(page.contains("<svg") && page.contains("#e15759") && page.contains("<polygon"));
        assert!(
            page.contains("<circle") && page.contains("×"),
            "every trial's dot"
        );
        assert!(page.contains(" ms</text>"), "a time axis");
        let careful = lab(Store::Redis);
        assert!(
            table(&careful).contains("BROKEN"),
            "overlaps on a careful client break a promise"
        );
    }
}
