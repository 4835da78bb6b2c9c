//! `tumbler bench`: speed of every store, measured the same way, side by side.

mod curator_peer;
mod go_mutex_peer;
mod local;
mod peer_process;
mod progress;
mod report;
mod rslock_peer;
mod scenarios;
mod server_stats;
mod stats;
mod subject;

use std::path::PathBuf;
use std::time::Duration;

pub use scenarios::Scenario;
use scenarios::{measure, Measured};
use subject::Subject;

/// What `tumbler bench` was asked to do.
pub struct BenchArgs {
    pub urls: Vec<String>,
    pub local: Vec<String>,
    pub scenarios: Vec<Scenario>,
    pub duration: Duration,
    pub json: bool,
    pub svg: Option<PathBuf>,
    pub peers: bool,
}

/// The default scenarios (names-10k only when asked for).
pub fn default_scenarios() -> Vec<Scenario> {
    Scenario::ALL
        .into_iter()
        .filter(|s| *s != Scenario::Names(10_000))
        .collect()
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    let local = local::start(&args.local).await?;
    let mut urls: Vec<String> = args.urls.clone();
    urls.extend(local.urls.iter().map(|(_, url)| url.clone()));
    if urls.is_empty() {
        return Err(
            "nothing to measure: give --url URL (repeatable) or --local redis,zk,etcd,consul"
                .into(),
        );
    }
    let progress = progress::Progress::new(!args.json);
    let mut results: Vec<Measured> = Vec::new();
    for url in &urls {
        let mut subjects: Vec<Box<dyn Subject>> = vec![Box::new(subject::Tumbler::new(url).await?)];
        if args.peers {
            if let Some(peer) = rslock_peer::Rslock::new(url) {
                subjects.push(Box::new(peer));
            }
        }
        let stats = server_stats::for_url(url, local.consul_at(url));
        let (curator, go_mutex) = if args.peers {
            (
                curator_peer::Curator::new(url),
                go_mutex_peer::GoMutex::new(url),
            )
        } else {
            (None, None)
        };
        for scenario in &args.scenarios {
            if let Some(curator) = &curator {
                results.extend(
                    curator
                        .measure(*scenario, args.duration, stats.as_deref())
                        .await,
                );
            }
            if let Some(go_mutex) = &go_mutex {
                results.extend(
                    go_mutex
                        .measure(*scenario, args.duration, stats.as_deref())
                        .await,
                );
            }
            for subject in &subjects {
                let m = measure(
                    subject.as_ref(),
                    *scenario,
                    args.duration,
                    stats.as_deref(),
                    &progress,
                )
                .await;
                results.push(m);
            }
        }
    }
    if args.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        println!("{}", report::table(&results));
    }
    if let Some(dir) = &args.svg {
        let files = report::write_svgs(&results, dir).map_err(|e| format!("writing SVGs: {e}"))?;
        eprintln!("charts: {}", files.join(", "));
    }
    Ok(())
}
