//! Elections on one server: who leads, proclaiming a new value, following the leadership.
//!
//! A campaign is an acquisition of [`tumbler_core::LockKind::Leader`] through the normal
//! acquire path ([`crate::single`]); the scripts that grant, hand over, renew and end a
//! leadership keep its record (`{K}#tumbler:leader`) with it and announce every change on the
//! channel of that name (layout: crate docs, "Elections").

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tumbler_core::{Error, LeaderInfo, LockKind, LockName, Result};

use crate::error::{bad_reply, for_name, BACKEND};
use crate::hold::Registry;
use crate::keys::Keys;
use crate::node::Node;
use crate::reply;
use crate::scripts;

/// The longest value a campaign or a proclaim may advertise on Redis: 512 KiB. Redis would take
/// up to 512 MB, but every value travels in the scripts that grant and hand over a leadership
/// and in every read of the leader, which all share the backend's one connection: larger
/// values belong in the store the leader serves, with a pointer to them in the value.
pub const MAX_VALUE_LEN: usize = 512 * 1024;

/// The leader as one read found it, with how long its hold lives unless renewed.
struct Reading {
    leader: Option<LeaderInfo>,
    expires_in: Option<Duration>,
}

/// The current leader of `name`, or `None`.
pub(crate) async fn leader(node: &Arc<Node>, name: &LockName) -> Result<Option<LeaderInfo>> {
    let keys = node.settings.keys(name);
    Ok(read(node, &keys, name).await?.leader)
}

/// Waits until the leader of `name` differs from `seen`, and returns it: woken by the
/// `leader` announcements on the election's channel, and reading again when the leader's hold
/// would expire (a crashed leader's key expires without a word) and at least every quarter of
/// the request timeout (so a server that stopped answering is an error within about one
/// request timeout). Cancel safe: dropping the future only unregisters its listener.
pub(crate) async fn leader_changed(
    node: &Arc<Node>,
    registry: &Registry,
    name: &LockName,
    seen: Option<&LeaderInfo>,
) -> Result<Option<LeaderInfo>> {
    let keys = node.settings.keys(name);
    let member = format!("follower:{}", node.settings.new_id());
    // Listen first, then read: a change after the read cannot be missed.
    let listener = node.add_waiter(&keys.leader, &member);
    let probe = node.settings.request_timeout / 4;
    loop {
        if registry.is_closing() {
            return Err(Error::Closed { backend: BACKEND });
        }
        node.ensure_subscribed(&keys.leader).await?;
        let reading = read(node, &keys, name).await?;
        if reading.leader.as_ref() != seen {
            return Ok(reading.leader);
        }
        let pause = reading
            .expires_in
            .map_or(probe, |left| (left + Duration::from_millis(1)).min(probe));
        tokio::select! {
            _ = listener.woken() => {}
            _ = registry.closing() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Replaces what the leadership held as `owner` advertises, if the lock key still holds it.
pub(crate) async fn proclaim(
    node: &Arc<Node>,
    keys: &Keys,
    name: &LockName,
    owner: &str,
    value: &[u8],
) -> Result<()> {
    let (gen, reply) = node
        .eval_bytes_on(
            "proclaiming a leader's value",
            &scripts::PROCLAIM,
            &[&keys.lock, &keys.leader],
            &[owner.as_bytes(), value],
        )
        .await
        .map_err(for_name(name))?;
    if !reply::flag("proclaim", &reply)? {
        return Err(Error::NotOwner { name: name.clone() });
    }
    node.confirm_replicas(gen, "the proclaimed value").await
}

/// One run of the read script (the lock key and the leader record together).
async fn read(node: &Arc<Node>, keys: &Keys, name: &LockName) -> Result<Reading> {
    let reply = node
        .eval(
            "reading an election's leader",
            &scripts::READ_LEADER,
            &[&keys.lock, &keys.leader],
            &[],
        )
        .await
        .map_err(for_name(name))?;
    let bad = || bad_reply("leader", &reply);
    let items = reply::items(&reply).ok_or_else(bad)?;
    match items {
        [code] if reply::int(code) == Some(0) => Ok(Reading {
            leader: None,
            expires_in: None,
        }),
        [code, held] if reply::int(code) == Some(-3) => Err(crate::single::kind_conflict(
            name,
            LockKind::Leader,
            &reply::text(held).ok_or_else(bad)?,
        )),
        [code, value, term, id, pttl] if reply::int(code) == Some(1) => {
            let Value::BulkString(value) = value else {
                return Err(bad());
            };
            let term = reply::int(term)
                .and_then(|t| u64::try_from(t).ok())
                .ok_or_else(bad)?;
            let id = reply::text(id).ok_or_else(bad)?;
            let expires_in = reply::int(pttl)
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis);
            Ok(Reading {
                leader: Some(LeaderInfo {
                    value: value.clone(),
                    term,
                    id,
                }),
                expires_in,
            })
        }
        _ => Err(bad()),
    }
}
