//! Promise 10: the suite can fail. Runs every case on every mutant and prints which cases kill
//! which mutant; fails if any mutant survives.

use std::collections::BTreeMap;
use std::time::Duration;

use conformance::mutants::Mutant;
use conformance::runner::{report_line, run_case_within, Outcome};

/// A case on a mutant that takes longer than this counts as killed (a hang is a failure).
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mutant_is_killed() {
    let mut runs = Vec::new();
    let only = std::env::var("MUTANT").ok();
    for mutant in Mutant::ALL
        .into_iter()
        .filter(|m| only.as_deref().is_none_or(|o| o == m.name()))
    {
        runs.push(tokio::spawn(async move {
            let cases = conformance::cases::all();
            let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
            let mut tasks = Vec::new();
            for case in cases {
                // A fresh store per case: some cases restart the store.
                let harness = mutant.harness();
                let permits = permits.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    (case.name, run_case_within(harness, &case, LIMIT).await)
                }));
            }
            let mut killers = Vec::new();
            for task in tasks {
                if let Ok((name, Outcome::Failed(message))) = task.await {
                    killers.push((name, message));
                }
            }
            (mutant, killers)
        }));
    }
    let mut table: BTreeMap<&'static str, Vec<(&'static str, String)>> = BTreeMap::new();
    for run in runs {
        let (mutant, killers) = run.await.expect("mutant run panicked");
        table.insert(mutant.name(), killers);
    }

    report_line("mutant → cases that caught it");
    let mut survivors = Vec::new();
    for (mutant, killers) in &table {
        if killers.is_empty() {
            survivors.push(*mutant);
            report_line(&format!("  {mutant:<22} SURVIVED"));
        } else {
            let names: Vec<&str> = killers.iter().map(|(n, _)| *n).collect();
            report_line(&format!("  {mutant:<22} killed by {}", names.join(", ")));
            let (first, why) = &killers[0];
            report_line(&format!("  {:<22}   e.g. {first}: {why}", ""));
        }
    }
    // Which cases are the only ones to catch some mutant: removing one lets that mutant live.
    report_line("cases that alone catch a mutant:");
    for (mutant, killers) in &table {
        if let [(only, _)] = killers.as_slice() {
            report_line(&format!("  {only} is the only case that catches {mutant}"));
        }
    }
    assert!(
        survivors.is_empty(),
        "mutants survived the suite: {survivors:?}"
    );
}
