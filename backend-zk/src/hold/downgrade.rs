//! The atomic write-to-read downgrade: the read node takes the write node's place in the queue
//! (same sequence), created and the write node deleted in one transaction.

use std::sync::atomic::Ordering;

use tumbler_core::{Error, Hold, Result};
use uuid::Uuid;
use zookeeper_client as zk;

use super::{grant, HoldKind, Status, ZkHeld};
use crate::error::{convert, limited, outcome_unknown};
use crate::layout::{join, node_prefix, Marker};

/// Turns the write hold `held` into a read hold; on failure the write hold is kept.
pub(super) async fn downgrade(held: &mut ZkHeld) -> Result<Hold> {
    let HoldKind::Write { dir } = held.kind.clone() else {
        return Err(Error::invalid(
            "downgrade",
            "only the write side of a read-write lock can be downgraded",
        ));
    };
    if held.status != Status::Held || held.shared.notifier().is_lost() {
        return Err(held.not_owner());
    }
    let session = held.shared.session.clone();
    let limit = session.request_limit();
    let write_path = held.shared.nodes[0].clone();
    // The read node takes the write node's place in the queue: same sequence, created and
    // the write node deleted in one transaction (Curator's downgrade ordering).
    let seq = write_path
        .rsplit_once(Marker::Write.text())
        .map(|(_, seq)| seq.to_owned())
        .ok_or_else(|| {
            Error::backend(
                crate::error::BACKEND,
                format!(
                    "write node {write_path} has no {} marker",
                    Marker::Write.text()
                ),
            )
        })?;
    let read_path = join(
        &dir,
        &format!("{}{seq}", node_prefix(&Uuid::new_v4(), Marker::Read)),
    );
    let addr = held.env.addr.clone();
    let what = format!("downgrade of {}", held.shared.name);
    let client = session.client().map_err(|e| convert(e, &addr, &what))?;
    held.shared.releasing.store(true, Ordering::SeqCst);
    let committed = {
        let mut multi = client.new_multi_writer();
        let options = held.env.acl.options(zk::CreateMode::Ephemeral);
        let staged = multi
            .add_create(&read_path, &[], &options)
            .and_then(|()| multi.add_delete(&write_path, None));
        match staged {
            Ok(()) => {
                limited(limit, async {
                    multi.commit().await.map_err(zk::Error::from)
                })
                .await
            }
            Err(error) => Err(error),
        }
    };
    let czxid = match committed {
        Ok(results) => match results.first() {
            Some(zk::MultiWriteResult::Create { stat, .. }) if !stat.is_invalid() => {
                Some(stat.czxid)
            }
            _ => None,
        },
        Err(error) if outcome_unknown(&error) => None,
        Err(zk::Error::NoNode) => {
            held.shared.releasing.store(false, Ordering::SeqCst);
            return Err(held.not_owner());
        }
        Err(error) => {
            held.shared.releasing.store(false, Ordering::SeqCst);
            return Err(convert(error, &addr, &what));
        }
    };
    let czxid = match czxid {
        Some(czxid) => czxid,
        // Unknown outcome or no stat: the read node tells whether the transaction happened.
        None => {
            let found = async {
                limited(limit, client.sync(&dir)).await?;
                limited(limit, client.check_stat(&read_path)).await
            }
            .await;
            match found {
                Ok(Some(stat)) => stat.czxid,
                Ok(None) => {
                    held.shared.releasing.store(false, Ordering::SeqCst);
                    return Err(Error::connection(
                        crate::error::BACKEND,
                        &*addr,
                        format!(
                            "{what}: the transaction did not happen; the write lock is still held"
                        ),
                    ));
                }
                Err(error) => {
                    held.shared.releasing.store(false, Ordering::SeqCst);
                    return Err(convert(error, &addr, &what));
                }
            }
        }
    };
    drop(client);
    held.stop_watching();
    held.status = Status::Released;
    Ok(grant(
        &held.env,
        session,
        &held.shared.name,
        vec![read_path],
        czxid,
        HoldKind::Plain,
    ))
}
