//! Server-side request counters, read before and after a scenario to show how many requests
//! each acquisition (and hand-off) costs the store.
//!
//! - Redis: `INFO commandstats`, the sum of `calls=`. Redis counts the commands a Lua script
//!   runs as well, so a script that makes three calls counts four.
//! - ZooKeeper: the `mntr` four-letter word, `zk_packets_received`, summed over the hosts.
//! - etcd: `/metrics`, the sum of `grpc_server_msg_received_total`, over the hosts.
//! - Consul: `/v1/agent/metrics` of tumbler's Consul test server (`tumbler.http.requests`); a
//!   real Consul reports interval metrics only, so none is shown for it.

use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Something that can say how many requests a store has served so far.
#[async_trait]
pub trait RequestCounter: Send + Sync {
    async fn total(&self) -> Result<u64, String>;
}

/// The counter for a store URL, if the store has one we can read.
pub fn for_url(url: &str) -> Option<Box<dyn RequestCounter>> {
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
        "etcd" => Some(Box::new(HttpMetric {
            hosts,
            path: "/metrics",
            sum_prefix: "grpc_server_msg_received_total",
        })),
        "consul" => Some(Box::new(HttpMetric {
            hosts,
            path: "/v1/agent/metrics?format=prometheus",
            sum_prefix: "tumbler_http_requests",
        })),
        _ => None,
    }
}

struct RedisInfo {
    urls: Vec<String>,
}

#[async_trait]
impl RequestCounter for RedisInfo {
    async fn total(&self) -> Result<u64, String> {
        let mut total = 0;
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
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            total += sum_redis_calls(&info);
        }
        Ok(total)
    }
}

fn sum_redis_calls(info: &str) -> u64 {
    info.lines()
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

struct ZkMntr {
    hosts: Vec<String>,
}

#[async_trait]
impl RequestCounter for ZkMntr {
    async fn total(&self) -> Result<u64, String> {
        let mut total = 0;
        for host in &self.hosts {
            let text = exchange(host, b"mntr").await?;
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("zk_packets_received"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    format!("{host}: no zk_packets_received in mntr (is 4lw mntr allowed?)")
                })?;
        }
        Ok(total)
    }
}

struct HttpMetric {
    hosts: Vec<String>,
    path: &'static str,
    sum_prefix: &'static str,
}

#[async_trait]
impl RequestCounter for HttpMetric {
    async fn total(&self) -> Result<u64, String> {
        let mut total = 0.0;
        for host in &self.hosts {
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
                self.path
            );
            let text = exchange(host, request.as_bytes()).await?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            total += sum_prometheus(body, self.sum_prefix);
        }
        Ok(total as u64)
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
            "# Commandstats\r\ncmdstat_set:calls=10,usec=5\r\ncmdstat_evalsha:calls=32,usec=1\r\n";
        assert_eq!(sum_redis_calls(info), 42);
        let prom = "# HELP x\ngrpc_server_msg_received_total{grpc_method=\"Range\"} 5\ngrpc_server_msg_received_total{grpc_method=\"Txn\"} 7\ngrpc_server_msg_received_totally 100\n";
        assert_eq!(sum_prometheus(prom, "grpc_server_msg_received_total"), 12.0);
    }

    #[test]
    fn picks_counter_by_scheme() {
        assert!(for_url("redis://127.0.0.1:6379?ttl=5s").is_some());
        assert!(for_url("zk://a:1,b:2/chroot").is_some());
        assert!(for_url("memory://x").is_none());
    }
}
