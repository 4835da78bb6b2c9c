//! Redis Cluster: which master serves which hash slot, and which of the backend's shards a
//! lock's keys go to.
//!
//! A cluster backend keeps one [`crate::node::Node`] per shard (a master and its replicas), as
//! found at connect. Every key of one lock hashes to the lock key's slot (see [`crate::keys`]),
//! so a lock lives on one shard and every script of it runs there, as on a single server. A
//! shard's node asks the cluster which master serves the shard's first slot whenever it needs
//! a new connection (after a failover broke the old one, or a `MOVED` reply), like a Sentinel
//! node asks the sentinels. A `MOVED` reply also records the slot's new owner, so that later
//! requests on that slot go to the shard that serves it now (after resharding).

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use tumbler_core::{Error, Result};

use crate::error::BACKEND;

/// The number of hash slots of every Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`: of the text between its first `{` and the next `}` when that is not
/// empty (a hash tag), else of the whole key.
pub(crate) fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16(hashed) % SLOTS
}

/// A key that hashes into `first..=last` (found by trying `{tumbler-shard-N}` tags), for what
/// belongs to a whole shard rather than to one lock (its restart epoch).
pub(crate) fn key_in(first: u16, last: u16, what: &str) -> String {
    (0u32..)
        .map(|n| format!("{{tumbler-shard-{n}}}#tumbler:{what}"))
        .find(|key| (first..=last).contains(&key_slot(key)))
        .unwrap_or_else(|| format!("{{tumbler-shard}}#tumbler:{what}"))
}

/// One range of slots and the master serving it, from `CLUSTER SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl SlotRange {
    /// `host:port` of its master.
    pub(crate) fn master(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Reads a `CLUSTER SLOTS` reply; `None` for a reply of another shape. A master announced
/// without an address (an empty host, as Redis does when it does not know its own) is taken
/// at the address the reply came from (`asked_host`).
pub(crate) fn parse_slots(reply: &redis::Value, asked_host: &str) -> Option<Vec<SlotRange>> {
    use redis::Value;
    let Value::Array(ranges) = reply else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(n) => Some(*n),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    };
    ranges
        .iter()
        .map(|range| {
            let Value::Array(parts) = range else {
                return None;
            };
            let first = u16::try_from(int(parts.first()?)?).ok()?;
            let last = u16::try_from(int(parts.get(1)?)?).ok()?;
            let Value::Array(master) = parts.get(2)? else {
                return None;
            };
            let host = text(master.first()?)?;
            let port = u16::try_from(int(master.get(1)?)?).ok()?;
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            (first <= last && last < SLOTS).then_some(SlotRange {
                first,
                last,
                host,
                port,
            })
        })
        .collect()
}

/// Asks the servers behind `clients`, one after the other, for the cluster's slot map;
/// the first full answer wins. `addr` names the cluster in errors.
///
/// Errors: [`Error::InvalidArgument`] when a server answers that it is not a cluster node (the
/// URL should be `redis://`), or the slots are not all served (the cluster is not formed or
/// lost a shard); [`Error::Auth`] for refused credentials; [`Error::Connection`] or
/// [`Error::Timeout`] when none answers.
pub(crate) async fn slot_map(
    clients: &[redis::Client],
    addr: &str,
    timeout: Duration,
) -> Result<Vec<SlotRange>> {
    let mut failures = Vec::new();
    for client in clients {
        let host = match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
                host.clone()
            }
            _ => String::new(),
        };
        let at = client.get_connection_info().addr().to_string();
        let asked = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<redis::Value>(&mut conn)
                .await
        };
        let reply = match tokio::time::timeout(timeout, asked).await {
            Err(_) => {
                failures.push(format!("{at}: no answer within {timeout:?}"));
                continue;
            }
            Ok(Err(error)) if says_not_cluster(&error) => {
                return Err(Error::invalid(
                    "redis+cluster URL",
                    format!(
                        "{at} is not a Redis Cluster node ({error}); use redis://{at} for a single server, or list the cluster's nodes"
                    ),
                ));
            }
            Ok(Err(error)) => {
                let mapped = crate::error::map(&at, "asking for the cluster's slots", error);
                if matches!(mapped, Error::Auth { .. }) {
                    return Err(mapped);
                }
                failures.push(crate::error::detail(&mapped));
                continue;
            }
            Ok(Ok(reply)) => reply,
        };
        let Some(mut ranges) = parse_slots(&reply, &host) else {
            failures.push(format!("{at}: an unreadable CLUSTER SLOTS reply"));
            continue;
        };
        ranges.sort_by_key(|r| r.first);
        let served: u32 = ranges
            .iter()
            .map(|r| u32::from(r.last) - u32::from(r.first) + 1)
            .sum();
        if served < u32::from(SLOTS) {
            return Err(Error::invalid(
                "redis+cluster URL",
                format!(
                    "the cluster at {at} serves {served} of {SLOTS} hash slots (not formed yet, or a shard has no master); fix the cluster (redis-cli --cluster check {at}) and connect again"
                ),
            ));
        }
        return Ok(ranges);
    }
    Err(Error::connection(
        BACKEND,
        addr,
        format!(
            "no cluster node answered CLUSTER SLOTS: {}",
            failures.join("; ")
        ),
    ))
}

/// Whether `error` says the server runs without cluster support.
fn says_not_cluster(error: &redis::RedisError) -> bool {
    error
        .detail()
        .is_some_and(|d| d.contains("cluster support disabled"))
        || error.to_string().contains("cluster support disabled")
}

/// Which shard serves which slot: the ranges found at connect, corrected by `MOVED` replies.
#[derive(Debug)]
pub(crate) struct Routes {
    /// `(first, last, shard)`, sorted by `first`.
    ranges: Vec<(u16, u16, usize)>,
    /// Slots a `MOVED` reply named a new master for: slot → `host:port`.
    moved: StdMutex<HashMap<u16, String>>,
}

impl Routes {
    /// Routes for `ranges`, each shard given by the index of its master in `masters`.
    pub(crate) fn new(ranges: &[SlotRange], masters: &[String]) -> Routes {
        let ranges = ranges
            .iter()
            .filter_map(|r| {
                let shard = masters.iter().position(|m| *m == r.master())?;
                Some((r.first, r.last, shard))
            })
            .collect();
        Routes {
            ranges,
            moved: StdMutex::new(HashMap::new()),
        }
    }

    /// The shard for `slot`: the one whose master a `MOVED` named for it, if `current` (each
    /// shard's current master) knows that master; else the one that served it at connect.
    pub(crate) fn shard_of(&self, slot: u16, current: impl Fn(usize) -> Option<String>) -> usize {
        let moved = self
            .moved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .cloned();
        if let Some(addr) = moved {
            let shards = self.ranges.iter().map(|r| r.2).max().map_or(0, |m| m + 1);
            if let Some(shard) = (0..shards).find(|&s| current(s).as_deref() == Some(&addr)) {
                return shard;
            }
        }
        self.ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map_or(0, |r| r.2)
    }

    /// Records a `MOVED slot host:port` reply.
    pub(crate) fn note_moved(&self, slot: u16, addr: String) {
        self.moved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, addr);
    }
}

/// The slot and address of a `MOVED` error (`MOVED 3999 127.0.0.1:6381`).
pub(crate) fn moved_to(error: &redis::RedisError) -> Option<(u16, String)> {
    if error.code() != Some("MOVED") {
        return None;
    }
    let detail = error.detail()?;
    let mut parts = detail.split_whitespace();
    let slot = parts.next()?.parse().ok()?;
    let addr = parts.next()?.to_owned();
    Some((slot, addr))
}

/// Whether `error` is one of the replies a cluster gives while slots move or a shard fails
/// over (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`): transient, the request may be retried.
pub(crate) fn is_redirect(error: &redis::RedisError) -> bool {
    matches!(
        error.code(),
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
        assert_eq!(
            key_slot("jobs/nightly"),
            key_slot("{jobs/nightly}#tumbler:queue")
        );
    }

    #[test]
    fn a_shard_key_lands_in_its_range() {
        for (first, last) in [(0, 5460), (5461, 10922), (10923, 16383), (100, 100)] {
            let key = key_in(first, last, "epoch");
            assert!((first..=last).contains(&key_slot(&key)), "{key}");
        }
    }

    #[test]
    fn moved_slots_follow_their_new_master() {
        let ranges = [
            SlotRange {
                first: 0,
                last: 8191,
                host: "h".into(),
                port: 1,
            },
            SlotRange {
                first: 8192,
                last: 16383,
                host: "h".into(),
                port: 2,
            },
        ];
        let routes = Routes::new(&ranges, &["h:1".into(), "h:2".into()]);
        let current = |s: usize| Some(format!("h:{}", s + 1));
        assert_eq!(routes.shard_of(5, current), 0);
        assert_eq!(routes.shard_of(9000, current), 1);
        routes.note_moved(5, "h:2".into());
        assert_eq!(routes.shard_of(5, current), 1);
        // A master the backend has no shard for: the slot stays where it was.
        routes.note_moved(6, "h:9".into());
        assert_eq!(routes.shard_of(6, current), 0);
    }
}
