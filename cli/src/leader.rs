//! `tumbler leader`: who leads an election, once or as it changes.

use std::time::{Duration, Instant};

use serde::Serialize;
use tumbler_locks::params::format_duration;
use tumbler_locks::{LeaderInfo, LockName, SharedBackend};

/// How long `--watch` waits between attempts to reach a store that refused it.
const RETRY_SPACING: Duration = Duration::from_millis(250);

#[derive(Serialize)]
struct LeaderJson<'a> {
    name: &'a str,
    /// `null` when nobody leads.
    leader: Option<LeaderInfoJson>,
}

#[derive(Serialize)]
struct LeaderInfoJson {
    value: String,
    term: u64,
    id: String,
}

/// `VALUE (term T, id ID)`, the value as UTF-8 (other bytes shown as U+FFFD).
pub fn describe(leader: &LeaderInfo) -> String {
    format!(
        "{} (term {}, id {})",
        String::from_utf8_lossy(&leader.value),
        leader.term,
        leader.id
    )
}

/// One line (text or a JSON object) on who leads `name`.
fn line(name: &LockName, leader: Option<&LeaderInfo>, json: bool) -> Result<String, String> {
    if json {
        let out = LeaderJson {
            name: name.as_str(),
            leader: leader.map(|l| LeaderInfoJson {
                value: String::from_utf8_lossy(&l.value).into_owned(),
                term: l.term,
                id: l.id.clone(),
            }),
        };
        return serde_json::to_string(&out).map_err(|e| e.to_string());
    }
    Ok(match leader {
        Some(leader) => format!("{name}: {}", describe(leader)),
        None => format!("{name}: nobody leads"),
    })
}

/// Prints who leads `name` now.
pub async fn leader(locks: SharedBackend, name: &str, json: bool) -> Result<(), String> {
    let election = locks.election(name).map_err(|e| e.to_string())?;
    let leader = election.leader().await.map_err(|e| e.to_string())?;
    println!("{}", line(election.name(), leader.as_ref(), json)?);
    Ok(())
}

/// Prints who leads `name` now, then one line per change, until interrupted (the caller stops
/// it) or the store has not answered for its request timeout since it was lost: each loss is
/// reported on stderr and following resumes when the store answers again (a change missed
/// meanwhile is printed then); a store that stays away ends it with an error.
pub async fn watch(locks: SharedBackend, name: &str, json: bool) -> Result<(), String> {
    let election = locks.election(name).map_err(|e| e.to_string())?;
    let name = election.name().clone();
    let patience = locks.capabilities().request_timeout;
    let mut observer = election.observe();
    let mut printed: Option<Option<LeaderInfo>> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        match observer.next().await {
            Ok(leader) => {
                if failing_since.take().is_some() {
                    eprintln!("tumbler: the store answers again; following {name}");
                }
                if printed.as_ref() != Some(&leader) {
                    println!("{}", line(&name, leader.as_ref(), json)?);
                    printed = Some(leader);
                }
            }
            Err(e)
                if matches!(e, tumbler_locks::Error::Connection { .. })
                    || matches!(e, tumbler_locks::Error::Timeout { .. }) =>
            {
                let since = *failing_since.get_or_insert_with(|| {
                    eprintln!(
                        "tumbler: following {name}: {e}; retrying for up to {} (the store's \
                         request timeout)",
                        format_duration(patience)
                    );
                    Instant::now()
                });
                if since.elapsed() >= patience {
                    return Err(format!(
                        "following {name}: the store did not answer again within {}: {e}",
                        format_duration(patience)
                    ));
                }
                tokio::time::sleep(RETRY_SPACING).await;
                // A fresh observer reads the leader first: a change made meanwhile is seen.
                observer = election.observe();
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
