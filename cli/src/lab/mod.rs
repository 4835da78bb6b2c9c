//! `tumbler lab`: one workload, the same faults, every store, one table.

mod cell;
mod deploy;
mod report;
mod resources;
pub mod worker;

use std::path::PathBuf;

pub use deploy::{Fault, Store};

/// What `tumbler lab` was asked to do.
pub struct LabArgs {
    pub stores: Vec<Store>,
    pub faults: Vec<Fault>,
    pub out: PathBuf,
    pub json: bool,
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
            "unknown fault; use crash, paused, partition, restart or leader-kill".to_owned()
        })
}

/// Runs every applicable cell and writes the reports.
pub async fn run(args: LabArgs) -> Result<(), String> {
    let mut results = Vec::new();
    for store in &args.stores {
        for fault in &args.faults {
            if !deploy::applies(*store, *fault) {
                continue;
            }
            if !args.json {
                eprintln!("lab: {} / {}", store.name(), fault.name());
            }
            let result = cell::run(*store, *fault)
                .await
                .map_err(|e| format!("{} / {}: {e}", store.name(), fault.name()))?;
            results.push(result);
        }
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("creating {}: {e}", args.out.display()))?;
    let md = report::markdown(&results);
    let html = report::html(&results);
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    for (file, text) in [("lab.md", &md), ("lab.html", &html), ("lab.json", &json)] {
        let path = args.out.join(file);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        println!("{}", report::table(&results));
        println!(
            "reports: {0}/lab.md, {0}/lab.html (timelines), {0}/lab.json",
            args.out.display()
        );
    }
    let stale: u64 = results.iter().map(|c| c.fenced_stale_accepted).sum();
    if stale > 0 {
        return Err(format!(
            "the fenced resource accepted {stale} stale write(s): fencing tokens went backwards"
        ));
    }
    Ok(())
}
