//! A real Redis Cluster: three masters, each with one replica, on loopback ports.
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use testkit::redis_cluster::RedisCluster;
//! let cluster = RedisCluster::start().await?;       // 3 masters + 3 replicas, all slots served
//! let seeds = cluster.seed_hosts();                 // "127.0.0.1:p1,127.0.0.1:p2,…"
//! let slot = cluster.slot_of("jobs/nightly").await?;
//! let master = cluster.master_of(slot).await?;      // index into nodes()
//! cluster.kill_master(master).await?;               // SIGKILL; its replica takes over
//! # Ok(()) }
//! ```
//!
//! The cluster is built with `CLUSTER ADDSLOTSRANGE`, `CLUSTER MEET` and `CLUSTER REPLICATE`
//! (what `redis-cli --cluster create … --cluster-replicas 1` does), with a short node timeout
//! (1 s) so that a killed master's replica is promoted within a few seconds.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::redis::{Redis, RedisOptions};
use crate::resp::Reply;

/// How many masters (and replicas) the cluster has.
const MASTERS: usize = 3;
/// The number of hash slots of every Redis Cluster.
const SLOTS: u32 = 16384;
/// `cluster-node-timeout`: how long a master may be unreachable before its replica fails over.
const NODE_TIMEOUT_MS: u64 = 1000;
/// How long forming the cluster, or a failover, may take.
const SETTLE: Duration = Duration::from_secs(30);

/// A running 6-node Redis Cluster. Dropping it kills every node.
#[derive(Debug)]
pub struct RedisCluster {
    /// Nodes 0–2 started as masters of slots 0–5460, 5461–10922 and 10923–16383; node 3+i
    /// started as the replica of node i. Roles change on failover: ask [`RedisCluster::role`].
    nodes: Vec<Redis>,
}

/// A node's current role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves slots.
    Master,
    /// Replicates a master.
    Replica,
}

impl RedisCluster {
    /// Starts six nodes, forms the cluster, and waits until every slot is served and every
    /// replica is in sync.
    pub async fn start() -> Result<RedisCluster> {
        let opts = RedisOptions {
            cluster: true,
            extra_args: [
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &NODE_TIMEOUT_MS.to_string(),
                // Replicas may serve as soon as they are promoted, whatever their lag.
                "--cluster-replica-validity-factor",
                "0",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            ..Default::default()
        };
        let nodes = Redis::start_many_with(MASTERS * 2, opts).await?;
        let cluster = RedisCluster { nodes };
        cluster.form().await?;
        Ok(cluster)
    }

    async fn form(&self) -> Result<()> {
        let per = SLOTS / MASTERS as u32;
        for (i, master) in self.nodes[..MASTERS].iter().enumerate() {
            let first = per * i as u32;
            let last = if i == MASTERS - 1 {
                SLOTS - 1
            } else {
                per * (i as u32 + 1) - 1
            };
            master
                .cmd(&[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ])
                .await?
                .expect_ok("CLUSTER ADDSLOTSRANGE")?;
        }
        let first = &self.nodes[0];
        for other in &self.nodes[1..] {
            let port = other.port().to_string();
            let bus = other
                .cluster_bus_port()
                .map(|p| p.to_string())
                .unwrap_or_default();
            first
                .cmd(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus])
                .await?
                .expect_ok("CLUSTER MEET")?;
        }
        self.wait("every node to know all six", || async {
            for node in &self.nodes {
                let known = node
                    .cmd(&["CLUSTER", "NODES"])
                    .await?
                    .into_text("CLUSTER INFO/NODES")?;
                if known.lines().count() < self.nodes.len() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
        for i in 0..MASTERS {
            let id = self.node_id(i).await?;
            self.nodes[MASTERS + i]
                .cmd(&["CLUSTER", "REPLICATE", &id])
                .await?
                .expect_ok("CLUSTER REPLICATE")?;
        }
        self.wait_healthy().await
    }

    /// Waits until every running node says `cluster_state:ok` and every running replica's
    /// link to its master is up.
    pub async fn wait_healthy(&self) -> Result<()> {
        self.wait("the cluster to serve every slot", || async {
            for node in self.running() {
                let info = node
                    .cmd(&["CLUSTER", "INFO"])
                    .await?
                    .into_text("CLUSTER INFO/NODES")?;
                if !info.contains("cluster_state:ok") {
                    return Ok(false);
                }
                if !node.replication().await?.in_sync() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
    }

    async fn wait<F, Fut>(&self, what: &str, check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        crate::ready::settle(
            || {
                format!(
                    "Redis Cluster on ports {}: waiting for {what}",
                    self.ports()
                )
            },
            SETTLE,
            check,
        )
        .await
    }

    /// Every node, masters first as started (see [`RedisCluster::role`] for what each is now).
    pub fn nodes(&self) -> &[Redis] {
        &self.nodes
    }

    /// The nodes that run (not killed).
    fn running(&self) -> impl Iterator<Item = &Redis> {
        self.nodes.iter().filter(|n| n.pid().is_some())
    }

    fn ports(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.port().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `127.0.0.1:p,…` for every node: the seed list of a cluster client.
    pub fn seed_hosts(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s cluster node id.
    pub async fn node_id(&self, i: usize) -> Result<String> {
        self.node(i)?
            .cmd(&["CLUSTER", "MYID"])
            .await?
            .into_text("CLUSTER MYID")
    }

    fn node(&self, i: usize) -> Result<&Redis> {
        self.nodes.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "cluster node {i} does not exist (it has {})",
                self.nodes.len()
            ))
        })
    }

    /// Node `i`'s role now.
    pub async fn role(&self, i: usize) -> Result<Role> {
        Ok(if self.node(i)?.replication().await?.master {
            Role::Master
        } else {
            Role::Replica
        })
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`: hash tags included).
    pub async fn slot_of(&self, key: &str) -> Result<u16> {
        let node = self.running().next().ok_or_else(|| Error::NotRunning {
            what: format!("every node of the Redis Cluster on ports {}", self.ports()),
        })?;
        match node.cmd(&["CLUSTER", "KEYSLOT", key]).await? {
            Reply::Int(slot) => u16::try_from(slot)
                .map_err(|_| Error::protocol("CLUSTER KEYSLOT", format!("slot {slot}"))),
            other => Err(Error::protocol("CLUSTER KEYSLOT", format!("{other:?}"))),
        }
    }

    /// The index of the running node that is master of `slot` now.
    pub async fn master_of(&self, slot: u16) -> Result<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.pid().is_none() || self.role(i).await? != Role::Master {
                continue;
            }
            let id = self.node_id(i).await?;
            let shards = node
                .cmd(&["CLUSTER", "NODES"])
                .await?
                .into_text("CLUSTER INFO/NODES")?;
            let mine = shards
                .lines()
                .find(|line| line.starts_with(&id))
                .map(serves(slot))
                .unwrap_or(false);
            if mine {
                return Ok(i);
            }
        }
        Err(Error::protocol(
            format!("finding the master of slot {slot}"),
            "no running master serves it",
        ))
    }

    /// Kills master `i` (SIGKILL) and waits until its replica has taken over and the cluster
    /// serves every slot again.
    pub async fn kill_master(&self, i: usize) -> Result<()> {
        if self.role(i).await? != Role::Master {
            return Err(Error::InvalidArgument(format!(
                "cluster node {i} is not a master now"
            )));
        }
        self.node(i)?.kill().await;
        self.wait_healthy().await
    }

    /// Has the replica `i` take over from its master (`CLUSTER FAILOVER`, coordinated: no
    /// write is lost) and waits until it is master.
    pub async fn failover(&self, i: usize) -> Result<()> {
        self.node(i)?
            .cmd(&["CLUSTER", "FAILOVER"])
            .await?
            .expect_ok("CLUSTER FAILOVER")?;
        self.wait("the replica to become master", || async {
            Ok(self.role(i).await? == Role::Master)
        })
        .await?;
        self.wait_healthy().await
    }

    /// Restarts a killed node with its cluster configuration (it rejoins, as a replica if it
    /// was a master that failed over) and waits until the cluster is healthy.
    pub async fn restart(&self, i: usize) -> Result<()> {
        self.node(i)?.restart().await?;
        self.wait_healthy().await
    }
}

/// Whether a `CLUSTER NODES` line lists `slot` among its slots.
fn serves(slot: u16) -> impl Fn(&str) -> bool {
    move |line| {
        line.split_whitespace().skip(8).any(|range| {
            let mut ends = range.splitn(2, '-');
            let first = ends.next().and_then(|s| s.parse::<u16>().ok());
            let last = ends.next().and_then(|s| s.parse::<u16>().ok()).or(first);
            matches!((first, last), (Some(a), Some(b)) if a <= slot && slot <= b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_slot_ranges() {
        let line = "abc 127.0.0.1:1@2 myself,master - 0 0 1 connected 0-5460 7000";
        assert!(serves(0)(line));
        assert!(serves(5460)(line));
        assert!(!serves(5461)(line));
        assert!(serves(7000)(line));
        let replica = "def 127.0.0.1:3@4 slave abc 0 0 1 connected";
        assert!(!serves(0)(replica));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forms_and_fails_over() {
        let cluster = RedisCluster::start().await.expect("start a Redis Cluster");
        let slot = cluster.slot_of("jobs/nightly").await.expect("slot");
        let tagged = cluster.slot_of("{jobs/nightly}:queue").await.expect("slot");
        assert_eq!(slot, tagged, "a hash tag puts companions in the key's slot");
        let master = cluster.master_of(slot).await.expect("master");
        assert!(master < MASTERS, "a started master serves it");
        cluster.kill_master(master).await.expect("kill the master");
        let now = cluster.master_of(slot).await.expect("new master");
        assert_eq!(now, master + MASTERS, "its replica took over");
        cluster
            .restart(master)
            .await
            .expect("restart the old master");
        assert_eq!(cluster.role(master).await.expect("role"), Role::Replica);
        cluster
            .failover(master)
            .await
            .expect("coordinated failover back");
        assert_eq!(cluster.master_of(slot).await.expect("master"), master);
    }
}
