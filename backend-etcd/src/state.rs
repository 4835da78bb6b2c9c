//! `state()` and `request_revoke()`: read a lock's keys and tell holders from waiters.

use etcd_client::{GetOptions, PutOptions, Txn, TxnOp};
use tumbler_core::{HolderInfo, LockName, LockState, Result};

use crate::instance::{range_at, Instance};
use crate::queue::Queue;

/// Who holds `name` and how many wait. Keys of nested names are not counted; foreign keys
/// under the name give `Conflict`.
pub(crate) async fn state(inner: &Instance, name: &LockName) -> Result<LockState> {
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
pub(crate) async fn request_revoke(inner: &Instance, name: &LockName) -> Result<usize> {
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
async fn read(inner: &Instance, name: &LockName) -> Result<(Vec<HolderInfo>, usize)> {
    let prefix = inner.layout.lock_prefix(name);
    let txn = Txn::new().and_then([TxnOp::get(
        prefix.as_str(),
        Some(GetOptions::new().with_prefix()),
    )]);
    let response = inner.txn(&format!("state of {name}"), txn).await?;
    let queue = Queue::read(name, &prefix, range_at(&response, 0))?;
    Ok(queue.holders())
}
