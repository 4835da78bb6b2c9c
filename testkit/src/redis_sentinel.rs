//! A real Redis Sentinel deployment: one master, two replicas, three sentinels (quorum 2).
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use testkit::redis_sentinel::RedisSentinel;
//! let deployment = RedisSentinel::start().await?;
//! let url = format!("redis+sentinel://{}/{}", deployment.sentinel_hosts(), deployment.master_name());
//! let before = deployment.master().await?;      // index into servers()
//! deployment.failover().await?;                 // SENTINEL FAILOVER: a replica is promoted
//! deployment.kill_master().await?;              // SIGKILL the master; sentinels promote another
//! # Ok(()) }
//! ```
//!
//! Sentinels judge a master down after 1 s without answers, so a killed master is replaced
//! within a few seconds.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::join::join_all;
use crate::process::{ServerProcess, Spec};
use crate::ready::{retry_on_port_clash, start_timeout, wait_ready};
use crate::redis::{Redis, RedisOptions};
use crate::resp::{Reply, RespConn};
use crate::workdir::WorkDir;

/// The name the sentinels monitor the master under.
const MASTER_NAME: &str = "tumbler";
/// How long the deployment may take to form, or a failover to complete.
const SETTLE: Duration = Duration::from_secs(30);

/// A running master, two replicas and three sentinels. Dropping it kills them all.
#[derive(Debug)]
pub struct RedisSentinel {
    /// Server 0 started as the master, 1 and 2 as its replicas; roles change on failover.
    servers: Vec<Redis>,
    sentinels: Vec<Sentinel>,
}

impl RedisSentinel {
    /// Starts the servers and the sentinels and waits until every sentinel knows the master,
    /// both replicas and the other two sentinels.
    pub async fn start() -> Result<RedisSentinel> {
        let master = Redis::start().await?;
        let replica = RedisOptions {
            extra_args: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port().to_string(),
            ],
            ..Default::default()
        };
        let replicas = Redis::start_many_with(2, replica).await?;
        let master_port = master.port();
        let mut servers = vec![master];
        servers.extend(replicas);
        let starts = (0..3).map(|_| Sentinel::start(master_port));
        let mut sentinels = Vec::new();
        for sentinel in join_all(starts).await {
            sentinels.push(sentinel?);
        }
        let deployment = RedisSentinel { servers, sentinels };
        deployment
            .wait(
                "every sentinel to know the master, 2 replicas and 2 sentinels",
                || deployment.formed(),
            )
            .await?;
        Ok(deployment)
    }

    async fn formed(&self) -> Result<bool> {
        for sentinel in &self.sentinels {
            let replicas = sentinel.cmd(&["SENTINEL", "REPLICAS", MASTER_NAME]).await?;
            let others = sentinel
                .cmd(&["SENTINEL", "SENTINELS", MASTER_NAME])
                .await?;
            if array_len(&replicas) < 2 || array_len(&others) < 2 {
                return Ok(false);
            }
        }
        for server in &self.servers[1..] {
            if !server.replication().await?.linked {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The master name to give a Sentinel client.
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// `127.0.0.1:p,…` of the three sentinels.
    pub fn sentinel_hosts(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| s.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The data servers (master and replicas).
    pub fn servers(&self) -> &[Redis] {
        &self.servers
    }

    /// The index of the server the sentinels name as master now.
    pub async fn master(&self) -> Result<usize> {
        let mut last = String::from("no sentinel answered");
        for sentinel in &self.sentinels {
            match sentinel
                .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                .await
            {
                Ok(Reply::Array(Some(addr))) => {
                    let port = addr
                        .get(1)
                        .and_then(Reply::as_str)
                        .and_then(|p| p.parse().ok());
                    if let Some(i) = self.servers.iter().position(|s| Some(s.port()) == port) {
                        return Ok(i);
                    }
                    last = format!("the sentinel names {addr:?}, not one of ours");
                }
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::protocol("asking the sentinels for the master", last))
    }

    /// Has the sentinels promote a replica (`SENTINEL FAILOVER`) and waits until the new
    /// master serves writes. Returns its index.
    pub async fn failover(&self) -> Result<usize> {
        let before = self.master().await?;
        match self.sentinels[0]
            .cmd(&["SENTINEL", "FAILOVER", MASTER_NAME])
            .await?
        {
            Reply::Simple(s) if s == "OK" => {}
            other => return Err(Error::protocol("SENTINEL FAILOVER", format!("{other:?}"))),
        }
        self.wait_new_master(before).await
    }

    /// Kills the master (SIGKILL) and waits until the sentinels have promoted a replica that
    /// serves writes. Returns the new master's index.
    pub async fn kill_master(&self) -> Result<usize> {
        let before = self.master().await?;
        self.servers[before].kill().await;
        self.wait_new_master(before).await
    }

    async fn wait_new_master(&self, before: usize) -> Result<usize> {
        let promoted = std::sync::Mutex::new(None);
        let promoted_ref = &promoted;
        self.wait("a replica to be promoted", || async move {
            let now = self.master().await?;
            if now == before {
                return Ok(false);
            }
            let master = self.servers[now].replication().await?.master;
            *promoted_ref.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
            Ok(master)
        })
        .await?;
        let promoted = *promoted.lock().unwrap_or_else(|p| p.into_inner());
        promoted.ok_or_else(|| Error::protocol("waiting for a failover", "no new master"))
    }

    async fn wait<F, Fut>(&self, what: &str, check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        crate::ready::settle(
            || {
                format!(
                    "Redis Sentinel (sentinels {}): waiting for {what}",
                    self.sentinel_hosts()
                )
            },
            SETTLE,
            check,
        )
        .await
    }
}

/// One `redis-server --sentinel`.
#[derive(Debug)]
struct Sentinel {
    port: u16,
    proc: ServerProcess,
    _dir: WorkDir,
}

impl Sentinel {
    async fn start(master_port: u16) -> Result<Sentinel> {
        retry_on_port_clash(|| Sentinel::start_once(master_port)).await
    }

    async fn start_once(master_port: u16) -> Result<Sentinel> {
        let program = crate::bins::redis_server()?;
        let port = crate::ports::try_free_port()?;
        let dir = WorkDir::new("redis-sentinel")?;
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.path().display()
        );
        std::fs::write(&conf, text)
            .map_err(|e| Error::io(format!("writing {}", conf.display()), e))?;
        let spec = Spec {
            name: format!(
                "redis sentinel on 127.0.0.1:{port} (folder {})",
                dir.path().display()
            ),
            program,
            args: vec![conf.into_os_string(), "--sentinel".into()],
            cwd: dir.path().to_path_buf(),
            log: dir.path().join("sentinel.log"),
            env: Vec::new(),
        };
        let sentinel = Sentinel {
            port,
            proc: ServerProcess::spawn(spec)?,
            _dir: dir,
        };
        wait_ready(&sentinel.proc, start_timeout(SETTLE), || async {
            match sentinel
                .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                .await
            {
                Ok(Reply::Array(Some(_))) => Ok(()),
                Ok(other) => Err(format!("{other:?}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        Ok(sentinel)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    async fn cmd(&self, args: &[&str]) -> Result<Reply> {
        RespConn::connect(self.addr()).await?.cmd(args).await
    }
}

fn array_len(reply: &Reply) -> usize {
    match reply {
        Reply::Array(Some(items)) => items.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forms_and_fails_over() {
        let deployment = RedisSentinel::start().await.expect("start Redis Sentinel");
        assert_eq!(deployment.master().await.expect("master"), 0);
        let promoted = deployment.failover().await.expect("failover");
        assert_ne!(promoted, 0, "a replica was promoted");
        let again = deployment.kill_master().await.expect("kill the master");
        assert_ne!(again, promoted, "another server was promoted");
        let replication = deployment.servers()[again]
            .replication()
            .await
            .expect("INFO replication");
        assert!(replication.master, "{replication:?}");
    }
}
