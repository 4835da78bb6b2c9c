//! Server-side counters, read before and after a scenario: how many requests each acquisition
//! costs the store, and what the store delivers for it (the part that grows when every waiter
//! hears of every release).
//!
//! | store | requests | delivered |
//! |---|---|---|
//! | Redis | `INFO commandstats`, the sum of `calls=` (a script's own commands count too) | `INFO stats` `total_net_output_bytes` (kB), and `PUBLISH`/`SPUBLISH` calls (pub/sub messages sent; each reaches every subscriber of its channel, which Redis 7.0 does not count) |
//! | ZooKeeper | `mntr` `zk_packets_received`, summed over the hosts | `mntr` `zk_sum_node_{created,deleted,changed,children}_watch_count`: watch notifications sent |
//! | etcd | `/metrics` `grpc_server_msg_received_total`, summed over the hosts | `/metrics` `etcd_debugging_mvcc_events_total`: events sent to watchers |
//! | Consul | `/v1/agent/metrics` of tumbler's Consul test server (`tumbler_http_requests`) | blocking queries answered, read from the test server when `--local consul` runs it in this process |
//!
//! A real Consul reports interval metrics only, so neither is shown for it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a store delivers, one counter of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Redis: bytes written to clients.
    OutputBytes,
    /// Redis: pub/sub messages published.
    Publishes,
    /// etcd: events sent to watchers.
    WatchEvents,
    /// ZooKeeper: watch notifications sent.
    WatchNotifications,
    /// Consul: blocking queries answered.
    BlockingAnswers,
}

impl Delivery {
    /// A short form of `per_op` for the table: `1.2kB`, `3.0pub`, `2.0ev`, `1.0ntf`, `1.0ans`.
    pub fn short(self, per_op: f64) -> String {
        match self {
            Delivery::OutputBytes => format!("{:.1}kB", per_op / 1000.0),
            Delivery::Publishes => format!("{per_op:.1}pub"),
            Delivery::WatchEvents => format!("{per_op:.1}ev"),
            Delivery::WatchNotifications => format!("{per_op:.1}ntf"),
            Delivery::BlockingAnswers => format!("{per_op:.1}ans"),
        }
    }
}

/// One delivery counter per acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerOp {
    pub what: Delivery,
    pub per_op: f64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub requests: Option<u64>,
    pub delivered: Vec<(Delivery, u64)>,
}

impl Snapshot {
    /// Requests per operation between `before` and `self`.
    pub fn requests_per_op(&self, before: &Snapshot, ops: u64) -> Option<f64> {
        match (before.requests, self.requests) {
            (Some(b), Some(a)) if ops > 0 && a >= b => Some((a - b) as f64 / ops as f64),
            _ => None,
        }
    }

    /// Each delivery counter per operation between `before` and `self`.
    pub fn delivered_per_op(&self, before: &Snapshot, ops: u64) -> Vec<PerOp> {
        if ops == 0 {
            return Vec::new();
        }
        self.delivered
            .iter()
            .filter_map(|(what, after)| {
                let (_, b) = before.delivered.iter().find(|(w, _)| w == what)?;
                (after >= b).then(|| PerOp {
                    what: *what,
                    per_op: (after - b) as f64 / ops as f64,
                })
            })
            .collect()
    }
}

/// Something that can read a store's counters.
#[async_trait]
pub trait ServerStats: Send + Sync {
    async fn snapshot(&self) -> Result<Snapshot, String>;
}

/// Reads the counters of a Consul test server running in this process.
pub type LocalConsul = Arc<testkit::consul::ConsulServer>;

/// The counters for a store URL, if the store has some we can read. `consul` is the test
/// server behind the URL when this process runs it.
pub fn for_url(url: &str, consul: Option<LocalConsul>) -> Option<Box<dyn ServerStats>> {
    let (scheme, rest) = url.split_once("://")?;
    let without_query = rest.split('?').next().unwrap_or(rest);
    let authority = without_query.split('/').next().unwrap_or(without_query);
    let hosts_part = authority.rsplit('@').next().unwrap_or(authority);
    let hosts: Vec<String> = hosts_part.split(',').map(str::to_owned).collect();
    match scheme {
        "redis" => Some(Box::new(RedisInfo {
            urls: vec![format!("redis://{without_query}")],
        })),
        "redis+redlock" => {
            let creds = authority
                .rsplit_once('@')
                .map(|(c, _)| format!("{c}@"))
                .unwrap_or_default();
            Some(Box::new(RedisInfo {
                urls: hosts
                    .iter()
                    .map(|h| format!("redis://{creds}{h}"))
                    .collect(),
            }))
        }
        "zk" | "zookeeper" => Some(Box::new(ZkMntr { hosts })),
        "etcd" => Some(Box::new(HttpMetrics {
            hosts,
            path: "/metrics",
            requests: "grpc_server_msg_received_total",
            delivered: Some(("etcd_debugging_mvcc_events_total", Delivery::WatchEvents)),
            consul: None,
        })),
        "consul" => Some(Box::new(HttpMetrics {
            hosts,
            path: "/v1/agent/metrics?format=prometheus",
            requests: "tumbler_http_requests",
            delivered: None,
            consul,
        })),
        _ => None,
    }
}

struct RedisInfo {
    urls: Vec<String>,
}

#[async_trait]
impl ServerStats for RedisInfo {
    async fn snapshot(&self) -> Result<Snapshot, String> {
        let (mut requests, mut bytes, mut publishes) = (0, 0, 0);
        for url in &self.urls {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut conn = tokio::time::timeout(
                Duration::from_secs(5),
                client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| e.to_string())?;
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .arg("stats")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            requests += sum_redis_calls(&info);
            publishes += redis_calls_of(&info, &["publish", "spublish"]);
            bytes += info_field(&info, "total_net_output_bytes")
                .ok_or_else(|| format!("{url}: no total_net_output_bytes in INFO stats"))?;
        }
        Ok(Snapshot {
            requests: Some(requests),
            delivered: vec![
                (Delivery::OutputBytes, bytes),
                (Delivery::Publishes, publishes),
            ],
        })
    }
}

fn sum_redis_calls(info: &str) -> u64 {
    info.lines()
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// The `calls=` of the named commands (`cmdstat_<name>:calls=…`).
fn redis_calls_of(info: &str, commands: &[&str]) -> u64 {
    info.lines()
        .filter_map(|line| {
            let (command, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            commands.contains(&command).then_some(rest)
        })
        .filter_map(|rest| rest.strip_prefix("calls=")?.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// A `field:value` line of `INFO`.
fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

struct ZkMntr {
    hosts: Vec<String>,
}

/// The `mntr` sums of watchers triggered, by event type (ZooKeeper 3.6 and later).
const ZK_WATCH_SUMS: [&str; 4] = [
    "zk_sum_node_created_watch_count",
    "zk_sum_node_deleted_watch_count",
    "zk_sum_node_changed_watch_count",
    "zk_sum_node_children_watch_count",
];

#[async_trait]
impl ServerStats for ZkMntr {
    async fn snapshot(&self) -> Result<Snapshot, String> {
        let (mut requests, mut notifications) = (0, Some(0));
        for host in &self.hosts {
            let text = exchange(host, b"mntr").await?;
            requests += mntr_value(&text, "zk_packets_received").ok_or_else(|| {
                format!("{host}: no zk_packets_received in mntr (is 4lw mntr allowed?)")
            })?;
            notifications = zk_notifications(&text).and_then(|n| Some(n + notifications?));
        }
        Ok(Snapshot {
            requests: Some(requests),
            delivered: notifications
                .map(|n| vec![(Delivery::WatchNotifications, n)])
                .unwrap_or_default(),
        })
    }
}

fn mntr_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(char::is_whitespace)?;
        // Summaries may print as decimals (`12.0`).
        (name == key).then(|| value.trim().parse::<f64>().ok().map(|v| v as u64))?
    })
}

/// Watch notifications sent so far, if this ZooKeeper reports them.
fn zk_notifications(text: &str) -> Option<u64> {
    ZK_WATCH_SUMS
        .iter()
        .map(|key| mntr_value(text, key))
        .sum::<Option<u64>>()
}

struct HttpMetrics {
    hosts: Vec<String>,
    path: &'static str,
    requests: &'static str,
    delivered: Option<(&'static str, Delivery)>,
    consul: Option<LocalConsul>,
}

#[async_trait]
impl ServerStats for HttpMetrics {
    async fn snapshot(&self) -> Result<Snapshot, String> {
        let (mut requests, mut delivered) = (0.0, 0.0);
        for host in &self.hosts {
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
                self.path
            );
            let text = exchange(host, request.as_bytes()).await?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            requests += sum_prometheus(body, self.requests);
            if let Some((family, _)) = self.delivered {
                delivered += sum_prometheus(body, family);
            }
        }
        let mut snapshot = Snapshot {
            requests: Some(requests as u64),
            delivered: Vec::new(),
        };
        if let Some((_, what)) = self.delivered {
            snapshot.delivered.push((what, delivered as u64));
        }
        if let Some(consul) = &self.consul {
            snapshot
                .delivered
                .push((Delivery::BlockingAnswers, consul.counters().blocking));
        }
        Ok(snapshot)
    }
}

/// Sums every sample of a Prometheus metric family.
fn sum_prometheus(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// Sends `request` to `host` and reads the whole answer.
async fn exchange(host: &str, request: &[u8]) -> Result<String, String> {
    let work = async {
        let mut stream = TcpStream::connect(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let mut out = Vec::new();
        stream
            .read_to_end(&mut out)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| format!("{host}: timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters() {
        let info =
            "# Commandstats\r\ncmdstat_set:calls=10,usec=5\r\ncmdstat_evalsha:calls=32,usec=1\r\ncmdstat_publish:calls=3,usec=1\r\n# Stats\r\ntotal_net_output_bytes:12345\r\n";
        assert_eq!(sum_redis_calls(info), 45);
        assert_eq!(redis_calls_of(info, &["publish", "spublish"]), 3);
        assert_eq!(info_field(info, "total_net_output_bytes"), Some(12345));
        let prom = "# HELP x\ngrpc_server_msg_received_total{grpc_method=\"Range\"} 5\ngrpc_server_msg_received_total{grpc_method=\"Txn\"} 7\ngrpc_server_msg_received_totally 100\netcd_debugging_mvcc_events_total 640\n";
        assert_eq!(sum_prometheus(prom, "grpc_server_msg_received_total"), 12.0);
        assert_eq!(
            sum_prometheus(prom, "etcd_debugging_mvcc_events_total"),
            640.0
        );
        let mntr = "zk_version\t3.8.0\nzk_packets_received\t70\nzk_sum_node_created_watch_count\t1\nzk_sum_node_deleted_watch_count\t40\nzk_sum_node_changed_watch_count\t2.0\nzk_sum_node_children_watch_count\t0\n";
        assert_eq!(mntr_value(mntr, "zk_packets_received"), Some(70));
        assert_eq!(zk_notifications(mntr), Some(43));
        assert_eq!(zk_notifications("zk_packets_received\t70\n"), None);
    }

    #[test]
    fn per_op_differences() {
        let before = Snapshot {
            requests: Some(100),
            delivered: vec![(Delivery::WatchEvents, 10)],
        };
        let after = Snapshot {
            requests: Some(300),
            delivered: vec![(Delivery::WatchEvents, 210)],
        };
        assert_eq!(after.requests_per_op(&before, 100), Some(2.0));
        assert_eq!(
            after.delivered_per_op(&before, 100),
            vec![PerOp {
                what: Delivery::WatchEvents,
                per_op: 2.0
            }]
        );
        assert!(after.delivered_per_op(&before, 0).is_empty());
        assert_eq!(Delivery::OutputBytes.short(1234.0), "1.2kB");
        assert_eq!(Delivery::WatchEvents.short(8.0), "8.0ev");
    }

    #[test]
    fn picks_counter_by_scheme() {
        assert!(for_url("redis://127.0.0.1:6379?ttl=5s", None).is_some());
        assert!(for_url("zk://a:1,b:2/chroot", None).is_some());
        assert!(for_url("etcd://a:1", None).is_some());
        assert!(for_url("memory://x", None).is_none());
    }
}
