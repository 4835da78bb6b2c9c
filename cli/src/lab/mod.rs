//! `tumbler lab`: one workload, the same faults, every store, one table.

mod cell;
mod deploy;
mod report;
mod resources;
mod trials;
pub mod worker;

use std::path::PathBuf;

pub use deploy::{Fault, Store};

/// What `tumbler lab` was asked to do.
pub struct LabArgs {
    /// The stores named with `--store`; empty: every store.
    pub stores: Vec<Store>,
    /// The faults named with `--fault`; empty: every fault.
    pub faults: Vec<Fault>,
    pub out: PathBuf,
    pub json: bool,
    /// Trials per cell (at least 1).
    pub trials: u32,
    /// The seed the trials' timings are drawn from; `None`: drawn from the clock (and printed).
    pub seed: Option<u64>,
}

/// Parses a store name.
pub fn parse_store(text: &str) -> Result<Store, String> {
    Store::ALL
        .into_iter()
        .find(|s| {
            s.name() == text
                || (text == "zk" && *s == Store::Zk)
                || (text == "naive-redis" && *s == Store::NaiveRedis)
        })
        .ok_or_else(|| {
            format!(
                "unknown store {text:?}; use redis, naive-redis, redlock, zookeeper (zk), etcd or consul"
            )
        })
}

/// Parses a fault name.
pub fn parse_fault(text: &str) -> Result<Fault, String> {
    let wanted = text.replace('-', " ");
    Fault::ALL
        .into_iter()
        .find(|f| f.name() == wanted || f.name().split(' ').nth(1) == Some(wanted.as_str()))
        .ok_or_else(|| {
            "unknown fault; use crash, paused, partition, restart, leader-kill, store-stalled, \
             slow-network, waiter-crash, minority-partition or clock-jump"
                .to_owned()
        })
}

/// The cells to run: every applicable pair of the stores and faults asked for.
///
/// What is not named defaults to everything that applies. What is named must be used: a store
/// none of whose named faults applies to it, or a fault that applies to none of the named
/// stores, is refused (with what would apply) instead of giving an empty table.
pub fn plan(stores: &[Store], faults: &[Fault]) -> Result<Vec<(Store, Fault)>, String> {
    let all_stores = stores.is_empty();
    let all_faults = faults.is_empty();
    let stores = if all_stores { &Store::ALL[..] } else { stores };
    let faults = if all_faults { &Fault::ALL[..] } else { faults };
    let flags = |faults: Vec<Fault>| -> String {
        faults
            .iter()
            .map(Fault::flag)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Only when both are named can a named one be left out: every store runs some fault, and
    // every fault runs on some store.
    if !all_stores && !all_faults {
        for store in stores {
            if !faults.iter().any(|f| deploy::applies(*store, *f)) {
                let runs = Fault::ALL
                    .into_iter()
                    .filter(|f| deploy::applies(*store, *f));
                return Err(format!(
                    "--store {} cannot be put through --fault {}: the faults it runs are {}",
                    store.flag(),
                    flags(faults.to_vec()),
                    flags(runs.collect())
                ));
            }
        }
        for fault in faults {
            if !stores.iter().any(|s| deploy::applies(*s, *fault)) {
                let runs: Vec<&str> = Store::ALL
                    .into_iter()
                    .filter(|s| deploy::applies(*s, *fault))
                    .map(|s| s.flag())
                    .collect();
                return Err(format!(
                    "--fault {} applies to none of the stores given (--store {}); it runs on {}",
                    fault.flag(),
                    stores.iter().map(Store::flag).collect::<Vec<_>>().join(","),
                    runs.join(", ")
                ));
            }
        }
    }
    let mut cells = Vec::new();
    for store in stores {
        for fault in faults {
            if deploy::applies(*store, *fault) && !cells.contains(&(*store, *fault)) {
                cells.push((*store, *fault));
            }
        }
    }
    Ok(cells)
}

/// Runs every applicable cell `trials` times and writes the reports. Refuses a selection
/// with nothing to run and an unwritable `--out` before starting anything.
pub async fn run(args: LabArgs) -> Result<(), String> {
    if args.trials == 0 {
        return Err("--trials must be at least 1".into());
    }
    let planned = plan(&args.stores, &args.faults)?;
    crate::out_dir::writable("--out", &args.out)?;
    let seed = args.seed.unwrap_or_else(clock_seed);
    if !args.json {
        eprintln!(
            "lab: seed {seed}, {} trial(s) per cell (replay with --seed {seed})",
            args.trials
        );
    }
    let mut cells = Vec::new();
    for (store, fault) in planned {
        let mut results = Vec::new();
        for trial in 0..args.trials {
            let plan = trials::plan(seed, store, fault, trial);
            if !args.json {
                eprintln!(
                    "lab: {} / {} trial {}/{} (fault {} ms after the grant)",
                    store.name(),
                    fault.name(),
                    trial + 1,
                    args.trials,
                    plan.settle_ms
                );
            }
            let result = cell::run(store, fault, plan).await.map_err(|e| {
                format!(
                    "{} / {} trial {}: {e}",
                    store.name(),
                    fault.name(),
                    trial + 1
                )
            })?;
            results.push(result);
        }
        cells.push(trials::CellSummary::of(store, fault, results));
    }
    let lab = report::Lab {
        seed,
        trials: args.trials,
        cells,
    };
    let md = report::markdown(&lab);
    let html = report::html(&lab);
    let json = serde_json::to_string_pretty(&lab).map_err(|e| e.to_string())?;
    for (file, text) in [("lab.md", &md), ("lab.html", &html), ("lab.json", &json)] {
        let path = args.out.join(file);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        println!("{}", report::table(&lab));
        println!(
            "reports: {0}/lab.md, {0}/lab.html (timelines), {0}/lab.json",
            args.out.display()
        );
    }
    let broken: Vec<String> = lab
        .cells
        .iter()
        .filter_map(|c| match &c.verdict {
            trials::Verdict::Broken(why) => Some(format!("{} / {}: {why}", c.store, c.fault)),
            _ => None,
        })
        .collect();
    if !broken.is_empty() {
        return Err(format!(
            "a promise broke (seed {seed}): {}",
            broken.join("; ")
        ));
    }
    Ok(())
}

/// A seed from the clock, for runs that did not give one.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_every_applicable_cell() {
        let cells = plan(&[], &[]).expect("the default plan");
        assert!(cells.contains(&(Store::Zk, Fault::LeaderKill)));
        assert!(cells.contains(&(Store::NaiveRedis, Fault::Restart)));
        assert!(!cells.contains(&(Store::Zk, Fault::Restart)));
        let zk = plan(&[Store::Zk], &[]).expect("zk with every fault that applies");
        assert!(zk.iter().all(|(store, _)| *store == Store::Zk) && zk.len() == 9);
    }

    #[test]
    fn a_named_store_or_fault_that_runs_nowhere_is_refused() {
        let e = plan(&[Store::NaiveRedis], &[Fault::Crash]).unwrap_err();
        assert!(
            e.contains("--store naive-redis") && e.contains("restart"),
            "{e}"
        );
        let e = plan(&[Store::Redlock], &[Fault::LeaderKill]).unwrap_err();
        assert!(e.contains("--store redlock"), "{e}");
        let e = plan(&[Store::Zk], &[Fault::Restart]).unwrap_err();
        assert!(
            e.contains("crash, paused, partition, leader-kill, store-stalled"),
            "{e}"
        );
        let e = plan(&[], &[Fault::Restart, Fault::Crash]);
        assert!(
            e.is_ok(),
            "unnamed stores default to those that apply: {e:?}"
        );
        let e = plan(&[Store::Redis, Store::Zk], &[Fault::Restart]).unwrap_err();
        assert!(e.contains("--store zk"), "{e}");
    }
}
