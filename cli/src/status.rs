//! `tumbler status` and `tumbler revoke`.

use serde::Serialize;
use tumbler_locks::{HoldMode, LockState, SharedBackend};

use crate::recovery::Recovery;

#[derive(Serialize)]
struct StatusJson<'a> {
    name: &'a str,
    held: bool,
    holders: Vec<HolderJson>,
    waiters: Option<usize>,
    /// While the store grants nothing after a restart: how much longer, in milliseconds.
    recovering_ms: Option<u64>,
    /// What holds grants back and what sets it, when `recovering_ms` is set.
    recovering: Option<String>,
}

#[derive(Serialize)]
struct HolderJson {
    id: String,
    mode: String,
    permits: Option<u32>,
    token: Option<u64>,
}

fn mode(mode: &HoldMode) -> (String, Option<u32>) {
    match mode {
        HoldMode::Exclusive => ("exclusive".into(), None),
        HoldMode::Read => ("read".into(), None),
        HoldMode::Write => ("write".into(), None),
        HoldMode::Permits(n) => ("permits".into(), Some(*n)),
        HoldMode::Leader => ("leader".into(), None),
    }
}

/// Prints the state of `name`, as text or JSON, and whether the store grants locks at all
/// right now (a Redis restart delay).
pub async fn status(locks: SharedBackend, name: &str, json: bool) -> Result<(), String> {
    let state: LockState = locks.state(name).await.map_err(|e| e.to_string())?;
    let recovery = Recovery::check(&locks).await;
    if json {
        let out = StatusJson {
            name: state.name.as_str(),
            held: state.is_held(),
            holders: state
                .holders
                .iter()
                .map(|h| {
                    let (mode, permits) = mode(&h.mode);
                    HolderJson {
                        id: h.id.clone(),
                        mode,
                        permits,
                        token: h.token,
                    }
                })
                .collect(),
            waiters: state.waiters,
            recovering_ms: recovery
                .as_ref()
                .map(|r| u64::try_from(r.remaining.as_millis()).unwrap_or(u64::MAX)),
            recovering: recovery.as_ref().map(Recovery::describe),
        };
        let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "{}: {}",
        state.name,
        if state.is_held() { "held" } else { "free" }
    );
    for holder in &state.holders {
        let (mode, permits) = mode(&holder.mode);
        let permits = permits.map(|n| format!(" x{n}")).unwrap_or_default();
        let token = holder
            .token
            .map(|t| format!(", token {t}"))
            .unwrap_or_default();
        println!("  holder {} ({mode}{permits}{token})", holder.id);
    }
    match state.waiters {
        Some(n) => println!("  waiters: {n}"),
        None => println!("  waiters: unknown (this store cannot list them)"),
    }
    if let Some(recovery) = recovery {
        println!("  no grants yet: {}", recovery.describe());
    }
    Ok(())
}

/// Asks the holders of `name` to release it.
pub async fn revoke(locks: SharedBackend, name: &str) -> Result<(), String> {
    let notified = locks
        .request_revoke(name)
        .await
        .map_err(|e| e.to_string())?;
    println!("asked {notified} holder(s) of {name} to release it");
    Ok(())
}
