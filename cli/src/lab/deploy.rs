//! The servers one lab cell needs, started fresh through testkit, and the faults it injects.

use std::time::Duration;

use testkit::proxy::{FaultProxy, ProxyMode};

/// The stores the lab compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Redis,
    /// A naive client on Redis: no restart protection (`restart_delay=0`) and a holder that
    /// ignores `lost()`, like most Redis lock libraries. The control row: it shows what the lab
    /// catches when a client is not careful.
    NaiveRedis,
    Redlock,
    Zk,
    Etcd,
    Consul,
}

impl Store {
    /// Whether the victim ignores `lost()`.
    pub fn careless(&self) -> bool {
        *self == Store::NaiveRedis
    }

    pub const ALL: [Store; 6] = [
        Store::Redis,
        Store::NaiveRedis,
        Store::Redlock,
        Store::Zk,
        Store::Etcd,
        Store::Consul,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Store::Redis => "redis",
            Store::NaiveRedis => "naive redis client",
            Store::Redlock => "redlock",
            Store::Zk => "zookeeper",
            Store::Etcd => "etcd",
            Store::Consul => "consul",
        }
    }
}

/// The faults the lab injects into the holder's world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The holder process is killed (SIGKILL).
    Crash,
    /// The holder process is stopped (SIGSTOP) past its TTL, then continued.
    Pause,
    /// The holder's connection to the store is black-holed past its TTL, then healed.
    Partition,
    /// The store restarts without persistence (Redis; for Redlock one of three masters).
    Restart,
    /// The leader of a 3-node ZooKeeper ensemble or 3-member etcd cluster is killed.
    LeaderKill,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Crash,
        Fault::Pause,
        Fault::Partition,
        Fault::Restart,
        Fault::LeaderKill,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Fault::Crash => "holder crash",
            Fault::Pause => "holder paused",
            Fault::Partition => "partition",
            Fault::Restart => "store restart",
            Fault::LeaderKill => "leader kill",
        }
    }
}

/// The lock TTL / session timeout the lab configures on every store.
pub const TTL: Duration = Duration::from_secs(2);

enum Servers {
    Redis(testkit::redis::Redis),
    RedisMany(Vec<testkit::redis::Redis>),
    /// Kept only to stop the server when the cell ends.
    Zk {
        _server: testkit::zk::ZooKeeper,
    },
    ZkEnsemble(testkit::zk::ZkEnsemble),
    /// Kept only to stop the server when the cell ends.
    Etcd {
        _server: testkit::etcd::Etcd,
    },
    EtcdCluster(testkit::etcd::EtcdCluster),
    /// Kept only to stop the server when the cell ends.
    Consul {
        _server: testkit::consul::ConsulServer,
    },
}

/// Running servers for one cell.
pub struct Deployment {
    servers: Servers,
    proxy: Option<FaultProxy>,
    pub victim_url: String,
    pub rival_url: String,
}

/// Whether `fault` applies to `store` at all.
pub fn applies(store: Store, fault: Fault) -> bool {
    match fault {
        Fault::Restart => matches!(store, Store::Redis | Store::NaiveRedis | Store::Redlock),
        Fault::LeaderKill => matches!(store, Store::Zk | Store::Etcd),
        _ => !matches!(store, Store::Redlock | Store::NaiveRedis),
    }
}

fn url(scheme: &str, hosts: &[String], query: &str) -> String {
    format!("{scheme}://{}?{query}", hosts.join(","))
}

fn ttl_query() -> String {
    format!("ttl={}ms", TTL.as_millis())
}

impl Deployment {
    /// Starts what `store` needs for `fault`.
    pub async fn start(store: Store, fault: Fault) -> Result<Deployment, String> {
        let e = |e: testkit::Error| e.to_string();
        let query = ttl_query();
        let (servers, hosts, scheme, query) = match (store, fault) {
            (Store::Redis, _) => {
                let r = testkit::redis::Redis::start().await.map_err(e)?;
                let hosts = vec![r.addr().to_string()];
                (Servers::Redis(r), hosts, "redis", query)
            }
            (Store::NaiveRedis, _) => {
                let r = testkit::redis::Redis::start().await.map_err(e)?;
                let hosts = vec![r.addr().to_string()];
                (
                    Servers::Redis(r),
                    hosts,
                    "redis",
                    format!("{query}&restart_delay=0s"),
                )
            }
            (Store::Redlock, _) => {
                let many = testkit::redis::Redis::start_many(3).await.map_err(e)?;
                let hosts = many.iter().map(|r| r.addr().to_string()).collect();
                (Servers::RedisMany(many), hosts, "redis+redlock", query)
            }
            (Store::Zk, Fault::LeaderKill) => {
                let ens = testkit::zk::ZkEnsemble::start(3).await.map_err(e)?;
                let hosts = ens.nodes().iter().map(|n| n.addr().to_string()).collect();
                (Servers::ZkEnsemble(ens), hosts, "zk", query)
            }
            (Store::Zk, _) => {
                let zk = testkit::zk::ZooKeeper::start().await.map_err(e)?;
                let hosts = vec![zk.addr().to_string()];
                (Servers::Zk { _server: zk }, hosts, "zk", query)
            }
            (Store::Etcd, Fault::LeaderKill) => {
                let cluster = testkit::etcd::EtcdCluster::start(3).await.map_err(e)?;
                let hosts = cluster
                    .members()
                    .iter()
                    .map(|m| m.addr().to_string())
                    .collect();
                (Servers::EtcdCluster(cluster), hosts, "etcd", query)
            }
            (Store::Etcd, _) => {
                let etcd = testkit::etcd::Etcd::start().await.map_err(e)?;
                let hosts = vec![etcd.addr().to_string()];
                (Servers::Etcd { _server: etcd }, hosts, "etcd", query)
            }
            (Store::Consul, _) => {
                let options = testkit::consul::ConsulServerOptions::default()
                    .with_min_session_ttl(Duration::from_secs(1));
                let consul = testkit::consul::ConsulServer::start_with(options)
                    .await
                    .map_err(|e| e.to_string())?;
                let hosts = vec![consul.http_addr()];
                (
                    Servers::Consul { _server: consul },
                    hosts,
                    "consul",
                    format!("{query}&lock_delay=1s"),
                )
            }
        };
        let rival_url = url(scheme, &hosts, &query);
        let (proxy, victim_url) = if fault == Fault::Partition {
            let upstream = hosts[0]
                .parse()
                .map_err(|e| format!("bad server address {}: {e}", hosts[0]))?;
            let proxy = FaultProxy::start(upstream).await.map_err(e)?;
            let victim = url(scheme, &[proxy.addr().to_string()], &query);
            (Some(proxy), victim)
        } else {
            (None, rival_url.clone())
        };
        Ok(Deployment {
            servers,
            proxy,
            victim_url,
            rival_url,
        })
    }

    /// Injects a store-side fault (crash and pause act on the holder process instead).
    pub async fn inject(&self, fault: Fault) -> Result<(), String> {
        let e = |e: testkit::Error| e.to_string();
        match (fault, &self.servers) {
            (Fault::Partition, _) => {
                if let Some(proxy) = &self.proxy {
                    // Silent: packets vanish, connections stay open, nothing errors at once.
                    proxy.set_mode(ProxyMode::Blackhole);
                }
                Ok(())
            }
            (Fault::Restart, Servers::Redis(r)) => r.restart().await.map_err(e),
            (Fault::Restart, Servers::RedisMany(many)) => match many.first() {
                Some(r) => r.restart().await.map_err(e),
                None => Err("no Redlock master to restart".into()),
            },
            (Fault::LeaderKill, Servers::ZkEnsemble(ens)) => {
                ens.kill_leader().await.map(|_| ()).map_err(e)
            }
            (Fault::LeaderKill, Servers::EtcdCluster(c)) => {
                c.kill_leader().await.map(|_| ()).map_err(e)
            }
            _ => Ok(()),
        }
    }

    /// Ends a partition.
    pub fn heal(&self) {
        if let Some(proxy) = &self.proxy {
            proxy.set_mode(ProxyMode::Pass);
        }
    }
}
