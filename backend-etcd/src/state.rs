//! `state()` and `request_revoke()`: read a lock's keys and tell holders from waiters.

use etcd_client::{GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use lockcore::{HoldMode, HolderInfo, LockName, LockState, Result};

use crate::inner::{range_at, Inner};
use crate::keys::{classify, holder_id, parse_permits, KeyRole, DOWNGRADED};

/// Who holds `name` and how many wait.
pub(crate) async fn state(inner: &Inner, name: &LockName) -> Result<LockState> {
    let (holders, waiters) = read(inner, name).await?;
    Ok(LockState {
        name: name.clone(),
        holders,
        waiters: Some(waiters),
    })
}

/// Asks every holder of `name` to let go: puts a revocation marker under the lock and deletes
/// it at once; every holder's watcher sees the deletion and fires `revoke_requested()`. (The
/// marker carries this backend's lease, so even a failed delete cannot leave it for good.)
pub(crate) async fn request_revoke(inner: &Inner, name: &LockName) -> Result<usize> {
    let (holders, _) = read(inner, name).await?;
    if holders.is_empty() {
        return Ok(0);
    }
    let session = inner.leases.live(inner.request_timeout).await?;
    let marker = inner
        .layout
        .revoke_marker(name, session.lease(), inner.next_number());
    let put = TxnOp::put(
        marker.as_str(),
        Vec::new(),
        Some(PutOptions::new().with_lease(session.lease())),
    );
    let what = format!("revocation request on {name}");
    inner.txn(&what, Txn::new().and_then([put])).await?;
    let delete = TxnOp::delete(marker.as_str(), None);
    inner.txn(&what, Txn::new().and_then([delete])).await?;
    Ok(holders.len())
}

/// Reads the lock's keys and applies each primitive's ownership rule.
async fn read(inner: &Inner, name: &LockName) -> Result<(Vec<HolderInfo>, usize)> {
    let prefix = inner.layout.lock_prefix(name);
    let all = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend);
    let txn = Txn::new().and_then([TxnOp::get(prefix.as_str(), Some(all))]);
    let response = inner.txn(&format!("state of {name}"), txn).await?;
    let keys = range_at(&response, 0);
    Ok(analyze(&prefix, &keys))
}

/// Splits the keys under a lock (sorted by create revision) into holders and a waiter count.
fn analyze(prefix: &str, keys: &[KeyValue]) -> (Vec<HolderInfo>, usize) {
    let mut holders = Vec::new();
    let mut waiters = 0;
    let mut writer_seen = false;
    let mut permits_taken: u64 = 0;
    for (index, kv) in keys.iter().enumerate() {
        let Some(rest) = kv
            .key()
            .strip_prefix(prefix.as_bytes())
            .and_then(|rest| std::str::from_utf8(rest).ok())
        else {
            continue;
        };
        let Some((role, id)) = classify(rest) else {
            continue;
        };
        let downgraded = role == KeyRole::Write && kv.value() == DOWNGRADED;
        let held = match role {
            // The first contender of all (Go's Mutex rule; a writer waits for everyone).
            KeyRole::Mutex => index == 0,
            KeyRole::Write if !downgraded => index == 0,
            // Readers (and a downgraded writer): no writer before them.
            KeyRole::Read | KeyRole::Write => !writer_seen,
            KeyRole::Permits => match parse_permits(kv.value()) {
                Some((count, limit)) => {
                    permits_taken += u64::from(count);
                    permits_taken <= u64::from(limit)
                }
                None => false,
            },
        };
        if role == KeyRole::Write && !downgraded {
            writer_seen = true;
        }
        if !held {
            waiters += 1;
            continue;
        }
        let mode = match role {
            KeyRole::Mutex => HoldMode::Exclusive,
            KeyRole::Read => HoldMode::Read,
            KeyRole::Write if downgraded => HoldMode::Read,
            KeyRole::Write => HoldMode::Write,
            KeyRole::Permits => {
                HoldMode::Permits(parse_permits(kv.value()).map_or(0, |(count, _)| count))
            }
        };
        holders.push(HolderInfo {
            id: holder_id(id).to_owned(),
            mode,
            token: u64::try_from(kv.create_revision()).ok(),
        });
    }
    (holders, waiters)
}
