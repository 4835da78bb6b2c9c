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

    /// How `--store` names it.
    pub fn flag(&self) -> &'static str {
        match self {
            Store::Redis => "redis",
            Store::NaiveRedis => "naive-redis",
            Store::Redlock => "redlock",
            Store::Zk => "zk",
            Store::Etcd => "etcd",
            Store::Consul => "consul",
        }
    }

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
    /// Every server of the store is stopped (SIGSTOP) past the TTL, then continued.
    StoreStall,
    /// The holder's link to the store delays every byte by 3/4 of the TTL each way (a
    /// renewal's answer comes 1.5 TTL after it was sent), past the TTL, then heals.
    SlowNetwork,
    /// A waiter is killed while it waits; then the holder is killed, and a new waiter's wait
    /// shows how long the dead waiter kept the free lock unusable.
    WaiterCrash,
    /// The holder's server (a follower of a 3-node ZooKeeper ensemble or etcd cluster, the
    /// only one the holder knows) is cut off from the other two, past the TTL; the rival talks
    /// to the majority.
    MinorityPartition,
    /// The server's clock jumps forward 10 TTLs (ZooKeeper under libfaketime, Redis under
    /// testkit's wall clock library): Redis expires the holder's key at once and ZooKeeper its
    /// session (unless a ping reaches it first), which no client-side drift bound covers; only
    /// fencing catches the old holder's writes.
    ClockJump,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::Crash,
        Fault::Pause,
        Fault::Partition,
        Fault::Restart,
        Fault::LeaderKill,
        Fault::StoreStall,
        Fault::SlowNetwork,
        Fault::WaiterCrash,
        Fault::MinorityPartition,
        Fault::ClockJump,
    ];

    /// How `--fault` names it.
    pub fn flag(&self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Pause => "paused",
            Fault::Partition => "partition",
            Fault::Restart => "restart",
            Fault::LeaderKill => "leader-kill",
            Fault::StoreStall => "store-stalled",
            Fault::SlowNetwork => "slow-network",
            Fault::WaiterCrash => "waiter-crash",
            Fault::MinorityPartition => "minority-partition",
            Fault::ClockJump => "clock-jump",
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Fault::Crash => "holder crash",
            Fault::Pause => "holder paused",
            Fault::Partition => "partition",
            Fault::Restart => "store restart",
            Fault::LeaderKill => "leader kill",
            Fault::StoreStall => "store stalled",
            Fault::SlowNetwork => "slow network",
            Fault::WaiterCrash => "waiter crash",
            Fault::MinorityPartition => "minority partition",
            Fault::ClockJump => "clock jump",
        }
    }

    /// Whether the fault lasts (2 × TTL) and is then lifted.
    pub fn is_lifted(&self) -> bool {
        matches!(
            self,
            Fault::Pause
                | Fault::Partition
                | Fault::StoreStall
                | Fault::SlowNetwork
                | Fault::MinorityPartition
        )
    }
}

/// The lock TTL / session timeout the lab configures on every store.
pub const TTL: Duration = Duration::from_secs(2);

enum Servers {
    Redis(testkit::redis::Redis),
    RedisMany(Vec<testkit::redis::Redis>),
    Zk(testkit::zk::ZooKeeper),
    ZkEnsemble(testkit::zk::ZkEnsemble),
    Etcd(testkit::etcd::Etcd),
    EtcdCluster(testkit::etcd::EtcdCluster),
    Consul(testkit::consul::ConsulServer),
}

impl Servers {
    /// Stops (`true`) or continues (`false`) every server.
    fn stall(&self, stopped: bool) -> Result<(), String> {
        let servers: Vec<&dyn testkit::Pausable> = match self {
            Servers::Redis(r) => vec![r],
            Servers::RedisMany(many) => many.iter().map(|r| r as _).collect(),
            Servers::Zk(zk) => vec![zk],
            Servers::ZkEnsemble(ens) => ens.nodes().iter().map(|n| n as _).collect(),
            Servers::Etcd(etcd) => vec![etcd],
            Servers::EtcdCluster(c) => c.members().iter().map(|m| m as _).collect(),
            Servers::Consul(consul) => vec![consul],
        };
        servers
            .into_iter()
            .try_for_each(|s| if stopped { s.pause() } else { s.resume() })
            .map_err(|e| e.to_string())
    }
}

/// Running servers for one cell.
pub struct Deployment {
    servers: Servers,
    proxy: Option<FaultProxy>,
    pub victim_url: String,
    pub rival_url: String,
    /// The ensemble member a minority partition cuts off (the victim's server).
    isolated: Option<usize>,
    /// The server's movable clock, for a clock jump.
    clock: Option<std::sync::Arc<dyn testkit::clock::MovableClock>>,
}

/// Whether `fault` applies to `store` at all.
pub fn applies(store: Store, fault: Fault) -> bool {
    match fault {
        Fault::Restart => matches!(store, Store::Redis | Store::NaiveRedis | Store::Redlock),
        Fault::LeaderKill => matches!(store, Store::Zk | Store::Etcd),
        Fault::MinorityPartition => matches!(store, Store::Zk | Store::Etcd),
        // libfaketime moves the JVM's clocks; testkit's wall clock library moves Redis's
        // (Debian's redis-server does not start under libfaketime). Go (etcd) reads the clock
        // without the C library, so neither can move it.
        Fault::ClockJump => matches!(store, Store::Zk | Store::Redis | Store::NaiveRedis),
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
            (Store::Redis | Store::NaiveRedis, Fault::ClockJump) => {
                let clock = std::sync::Arc::new(testkit::clock::WallClock::new().map_err(e)?);
                let r = testkit::redis::Redis::start_with(testkit::redis::RedisOptions {
                    wall_clock: Some(clock.clone()),
                    ..Default::default()
                })
                .await
                .map_err(e)?;
                let query = if store == Store::NaiveRedis {
                    format!("{query}&restart_delay=0s")
                } else {
                    query
                };
                let url = url("redis", &[r.addr().to_string()], &query);
                return Ok(Deployment {
                    servers: Servers::Redis(r),
                    proxy: None,
                    victim_url: url.clone(),
                    rival_url: url,
                    isolated: None,
                    clock: Some(clock),
                });
            }
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
            (Store::Zk, Fault::MinorityPartition) => {
                let ens = testkit::zk::ZkEnsemble::start_partitionable(3)
                    .await
                    .map_err(e)?;
                let leader = ens.leader().await.map_err(e)?;
                let members = (0..3).map(|i| ens.node(i).addr().to_string()).collect();
                return Ok(Deployment::minority(
                    Servers::ZkEnsemble(ens),
                    "zk",
                    members,
                    leader,
                    &query,
                ));
            }
            (Store::Zk, Fault::ClockJump) => {
                let clock = std::sync::Arc::new(testkit::clock::FakeClock::new().map_err(e)?);
                let zk = testkit::zk::ZooKeeper::start_with(testkit::zk::ZkOptions {
                    clock: Some(clock.clone()),
                    ..Default::default()
                })
                .await
                .map_err(e)?;
                let url = url("zk", &[zk.addr().to_string()], &query);
                return Ok(Deployment {
                    servers: Servers::Zk(zk),
                    proxy: None,
                    victim_url: url.clone(),
                    rival_url: url,
                    isolated: None,
                    clock: Some(clock),
                });
            }
            (Store::Zk, Fault::LeaderKill) => {
                let ens = testkit::zk::ZkEnsemble::start(3).await.map_err(e)?;
                let hosts = ens.nodes().iter().map(|n| n.addr().to_string()).collect();
                (Servers::ZkEnsemble(ens), hosts, "zk", query)
            }
            (Store::Zk, _) => {
                let zk = testkit::zk::ZooKeeper::start().await.map_err(e)?;
                let hosts = vec![zk.addr().to_string()];
                (Servers::Zk(zk), hosts, "zk", query)
            }
            (Store::Etcd, Fault::MinorityPartition) => {
                let cluster = testkit::etcd::EtcdCluster::start_partitionable(3)
                    .await
                    .map_err(e)?;
                let leader = cluster.leader().await.map_err(e)?;
                let members = (0..3)
                    .map(|i| cluster.member(i).addr().to_string())
                    .collect();
                return Ok(Deployment::minority(
                    Servers::EtcdCluster(cluster),
                    "etcd",
                    members,
                    leader,
                    &query,
                ));
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
                (Servers::Etcd(etcd), hosts, "etcd", query)
            }
            (Store::Consul, _) => {
                let options = testkit::consul::ConsulServerOptions::default()
                    .with_min_session_ttl(Duration::from_secs(1));
                let consul = testkit::consul::ConsulServer::start_with(options)
                    .await
                    .map_err(|e| e.to_string())?;
                let hosts = vec![consul.http_addr()];
                (
                    Servers::Consul(consul),
                    hosts,
                    "consul",
                    format!("{query}&lock_delay=1s"),
                )
            }
        };
        let rival_url = url(scheme, &hosts, &query);
        let (proxy, victim_url) = if matches!(fault, Fault::Partition | Fault::SlowNetwork) {
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
            isolated: None,
            clock: None,
        })
    }

    /// A minority partition's deployment on a 3-member ensemble or cluster whose client
    /// addresses are `members` and whose leader is `leader`: the victim knows only a follower
    /// (the one that will be cut off), the rival only the other two.
    fn minority(
        servers: Servers,
        scheme: &str,
        members: Vec<String>,
        leader: usize,
        query: &str,
    ) -> Deployment {
        let lonely = (leader + 1) % members.len();
        let victim_url = url(scheme, &members[lonely..=lonely], query);
        let majority: Vec<String> = members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != lonely)
            .map(|(_, m)| m.clone())
            .collect();
        Deployment {
            servers,
            proxy: None,
            victim_url,
            rival_url: url(scheme, &majority, query),
            isolated: Some(lonely),
            clock: None,
        }
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
            (Fault::StoreStall, servers) => servers.stall(true),
            (Fault::ClockJump, _) => match &self.clock {
                Some(clock) => clock.jump(TTL * 10).map_err(e),
                None => Err("this store runs on the real clock".into()),
            },
            (Fault::MinorityPartition, Servers::ZkEnsemble(ens)) => match self.isolated {
                Some(i) => ens.isolate(i).map_err(e),
                None => Err("no ensemble member to cut off".into()),
            },
            (Fault::MinorityPartition, Servers::EtcdCluster(cluster)) => match self.isolated {
                Some(i) => cluster.isolate(i).map_err(e),
                None => Err("no cluster member to cut off".into()),
            },
            (Fault::SlowNetwork, _) => {
                if let Some(proxy) = &self.proxy {
                    proxy.set_mode(ProxyMode::Latency(TTL * 3 / 4));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Ends a partition, a slow link or a store stall.
    pub fn heal(&self) {
        if let Some(proxy) = &self.proxy {
            proxy.set_mode(ProxyMode::Pass);
        }
        if let Err(error) = self.servers.stall(false) {
            eprintln!("lab: continuing the store: {error}");
        }
        let rejoined = match (self.isolated, &self.servers) {
            (Some(i), Servers::ZkEnsemble(ens)) => ens.rejoin(i),
            (Some(i), Servers::EtcdCluster(cluster)) => cluster.rejoin(i),
            _ => Ok(()),
        };
        if let Err(error) = rejoined {
            eprintln!("lab: ending the minority partition: {error}");
        }
    }
}
