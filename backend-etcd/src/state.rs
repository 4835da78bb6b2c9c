//! `state()` and `request_revoke()`: read a lock's keys and tell holders from waiters.

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use lockcore::{HoldMode, HolderInfo, LockName, LockState, Result};

use crate::inner::{range_at, Inner};
use crate::keys::{classify, holder_id, parse_permits, KeyRole, DOWNGRADED};

/// One holder: what `state` reports, and the key `request_revoke` marks.
struct Holder {
    info: HolderInfo,
    key: Vec<u8>,
    revision: i64,
}

/// Who holds `name` and how many wait.
pub(crate) async fn state(inner: &Inner, name: &LockName) -> Result<LockState> {
    let (holders, waiters) = read(inner, name).await?;
    Ok(LockState {
        name: name.clone(),
        holders: holders.into_iter().map(|h| h.info).collect(),
        waiters: Some(waiters),
    })
}

/// Asks every holder of `name` to let go: rewrites each holder's key in place (same value,
/// same lease, same create revision), which its monitor sees as a revocation request. Keys of
/// other clients (e.g. `etcdctl lock`) are rewritten too, harmlessly.
pub(crate) async fn request_revoke(inner: &Inner, name: &LockName) -> Result<usize> {
    let (holders, _) = read(inner, name).await?;
    let mut asked = 0;
    for holder in holders {
        let touch = TxnOp::put(
            holder.key.clone(),
            Vec::new(),
            Some(PutOptions::new().with_ignore_value().with_ignore_lease()),
        );
        let txn = Txn::new()
            .when([Compare::create_revision(
                holder.key,
                CompareOp::Equal,
                holder.revision,
            )])
            .and_then([touch]);
        let response = inner
            .txn(&format!("revocation request on {name}"), txn)
            .await?;
        if response.succeeded() {
            asked += 1;
        }
    }
    Ok(asked)
}

/// Reads the lock's keys and applies each primitive's ownership rule.
async fn read(inner: &Inner, name: &LockName) -> Result<(Vec<Holder>, usize)> {
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
fn analyze(prefix: &str, keys: &[KeyValue]) -> (Vec<Holder>, usize) {
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
        holders.push(Holder {
            info: HolderInfo {
                id: holder_id(id).to_owned(),
                mode,
                token: u64::try_from(kv.create_revision()).ok(),
            },
            key: kv.key().to_vec(),
            revision: kv.create_revision(),
        });
    }
    (holders, waiters)
}
