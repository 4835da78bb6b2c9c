//! A leader's proclaim: the new value goes into its LeaderLatch node, where Curator's
//! `getLeader().getId()` and our `leader()` read it.

use tumbler_core::{Error, Result};
use zookeeper_client as zk;

use super::{HoldKind, Status, ZkHeld};
use crate::error::convert_for;
use crate::nodes::read;

/// Writes `value` into the leader's node, only while the node exists (a setData on a deleted
/// node fails, so nothing is written once the leadership is gone; while it exists it is the
/// lowest candidate, since no lower sequence can be created later).
///
/// The write fires the data watch of the candidate right behind: tumbler's re-arms it, but
/// Curator's LeaderLatch only acts on a deletion, so a LeaderLatch waiting there misses the
/// hand-off until it reconnects (see `ZkBackend`).
pub(super) async fn proclaim(held: &mut ZkHeld, value: &[u8]) -> Result<()> {
    if held.kind != HoldKind::Leader {
        return Err(Error::invalid(
            "proclaim",
            "only a leadership (from Election::campaign) can proclaim a value",
        ));
    }
    if held.status != Status::Held {
        return Err(held.not_owner());
    }
    let session = held.shared.session.clone();
    if let Some(reason) = session.retired_reason() {
        return Err(match reason {
            tumbler_core::LostReason::SessionExpired => Error::SessionExpired {
                name: held.shared.name.clone(),
            },
            _ => held.not_owner(),
        });
    }
    let node = held.shared.nodes[0].clone();
    let started = tokio::time::Instant::now();
    // Writing the same value twice is harmless, so a write whose reply was lost is sent again
    // while the session lives.
    let written = read(&session, |client| {
        let node = node.clone();
        async move { client.set_data(&node, value, None).await }
    })
    .await;
    match written {
        Ok(_) => Ok(()),
        Err(zk::Error::NoNode) => Err(held.not_owner()),
        Err(zk::Error::ClientClosed | zk::Error::AuthFailed) => Err(held.not_owner()),
        Err(error) => Err(convert_for(
            error,
            &held.env.addr,
            &held.shared.name,
            &format!("proclaim in {}", held.shared.name),
            started,
        )),
    }
}
