//! Real Redis servers (`redis-server` from Debian), one or many independent instances.
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use testkit::redis::{Redis, RedisOptions};
//! let r = Redis::start().await?;                  // redis://127.0.0.1:<port>
//! let secured = Redis::start_with(RedisOptions {
//!     password: Some("s3cret".into()),
//!     ..Default::default()
//! }).await?;
//! let masters = Redis::start_many(5).await?;       // for Redlock
//! r.pause()?;                                      // SIGSTOP: stops answering
//! r.resume()?;
//! r.restart().await?;                              // same port, empty data set
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::join::join_all;
use crate::process::{ServerProcess, Spec};
use crate::ready::{retry_on_port_clash, start_timeout, wait_ready};
use crate::resp::{Reply, RespConn};
use crate::workdir::WorkDir;

/// How long a Redis start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How to configure a Redis server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`: the password of the `default` user.
    pub password: Option<String>,
    /// An extra ACL user `(name, password)` allowed everything (`on >pass ~* &* +@all`).
    pub acl_user: Option<(String, String)>,
    /// More `redis-server` arguments, e.g. `["--notify-keyspace-events", "KEA"]`.
    pub extra_args: Vec<String>,
    /// A Redis Cluster node: `--cluster-enabled yes`, with its cluster bus on a port of its
    /// own from the kit's allocator (`--cluster-port`, see [`Redis::cluster_bus_port`]). Left
    /// to Redis, the bus takes the client port + 10000, which nobody reserved and another
    /// test process may hold.
    pub cluster: bool,
    /// Runs the server on this movable wall clock (default: the real one); see
    /// [`crate::clock::WallClock`].
    pub wall_clock: Option<std::sync::Arc<crate::clock::WallClock>>,
}

/// A server's replication role, from `INFO replication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// It is a master (else a replica).
    pub master: bool,
    /// As a replica: its link to its master is up (in sync).
    pub linked: bool,
}

impl Replication {
    /// A master, or a replica in sync with its master.
    pub fn in_sync(&self) -> bool {
        self.master || self.linked
    }
}

/// A running `redis-server` on 127.0.0.1 without persistence, in its own temporary folder.
///
/// Dropping it kills the server (SIGKILL) and waits for it to exit. All methods take `&self`,
/// so a handle can be shared in an `Arc`.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    /// The cluster bus port of a cluster node.
    bus_port: Option<u16>,
    opts: RedisOptions,
    proc: ServerProcess,
    // Declared last: dropped after the process is killed.
    _dir: WorkDir,
}

impl Redis {
    /// Starts a Redis server with no password and waits until it answers `PING`.
    pub async fn start() -> Result<Redis> {
        Redis::start_with(RedisOptions::default()).await
    }

    /// Starts a Redis server configured by `opts` and waits until it answers `PING`
    /// (after `AUTH` when credentials are configured).
    pub async fn start_with(opts: RedisOptions) -> Result<Redis> {
        retry_on_port_clash(|| Redis::start_once(opts.clone())).await
    }

    /// Starts `n` independent Redis servers concurrently (e.g. the masters of a Redlock test).
    pub async fn start_many(n: usize) -> Result<Vec<Redis>> {
        Redis::start_many_with(n, RedisOptions::default()).await
    }

    /// Starts `n` independent Redis servers, each configured by `opts`.
    pub async fn start_many_with(n: usize, opts: RedisOptions) -> Result<Vec<Redis>> {
        let starts = (0..n).map(|_| Redis::start_with(opts.clone()));
        let mut out = Vec::with_capacity(n);
        for r in join_all(starts).await {
            out.push(r?);
        }
        Ok(out)
    }

    async fn start_once(opts: RedisOptions) -> Result<Redis> {
        let program = crate::bins::redis_server()?;
        let port = crate::ports::try_free_port()?;
        let dir = WorkDir::new("redis")?;
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--logfile".into(),
            String::new(),
            "--protected-mode".into(),
            "no".into(),
        ];
        if let Some(pw) = &opts.password {
            args.extend(["--requirepass".into(), pw.clone()]);
        }
        if let Some((user, pw)) = &opts.acl_user {
            args.extend([
                "--user".into(),
                user.clone(),
                "on".into(),
                format!(">{pw}"),
                "~*".into(),
                "&*".into(),
                "+@all".into(),
            ]);
        }
        let bus_port = if opts.cluster {
            let bus = crate::ports::try_free_port()?;
            args.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-port".into(),
                bus.to_string(),
            ]);
            Some(bus)
        } else {
            None
        };
        args.extend(opts.extra_args.iter().cloned());
        let spec = Spec {
            name: format!(
                "redis-server on 127.0.0.1:{port} (folder {})",
                dir.path().display()
            ),
            program,
            args: args.into_iter().map(Into::into).collect(),
            cwd: dir.path().to_path_buf(),
            log: dir.path().join("redis.log"),
            env: opts
                .wall_clock
                .as_ref()
                .map(|c| c.env())
                .unwrap_or_default(),
        };
        let redis = Redis {
            port,
            bus_port,
            opts,
            proc: ServerProcess::spawn(spec)?,
            _dir: dir,
        };
        redis.wait_ready().await?;
        Ok(redis)
    }

    async fn wait_ready(&self) -> Result<()> {
        wait_ready(&self.proc, start_timeout(START_TIMEOUT), || async {
            match self.ping().await {
                Ok(()) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Connects, authenticates (if configured) and sends `PING`; `Ok` if `PONG` came back.
    /// No timeout of its own: a paused server makes this wait.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.connect().await?;
        match c.cmd(&["PING"]).await? {
            Reply::Simple(s) if s == "PONG" => Ok(()),
            other => Err(Error::protocol(
                format!("PING to {}", self.proc.name()),
                format!("{other:?}"),
            )),
        }
    }

    /// Opens a [`RespConn`] and authenticates with the configured credentials
    /// (the ACL user if set, else the password).
    pub async fn connect(&self) -> Result<RespConn> {
        let mut c = RespConn::connect(self.addr()).await?;
        let auth: Option<Vec<&str>> = match (&self.opts.acl_user, &self.opts.password) {
            (Some((u, p)), _) => Some(vec!["AUTH", u, p]),
            (None, Some(p)) => Some(vec!["AUTH", p]),
            (None, None) => None,
        };
        if let Some(args) = auth {
            match c.cmd(&args).await? {
                Reply::Simple(s) if s == "OK" => {}
                other => {
                    return Err(Error::protocol(
                        format!("AUTH to {}", self.proc.name()),
                        format!("{other:?}"),
                    ))
                }
            }
        }
        Ok(c)
    }

    /// Runs one command on a fresh authenticated connection and returns the reply.
    pub async fn cmd(&self, args: &[&str]) -> Result<Reply> {
        self.connect().await?.cmd(args).await
    }

    /// What `INFO replication` says of this server's role.
    pub async fn replication(&self) -> Result<Replication> {
        let info = self
            .cmd(&["INFO", "replication"])
            .await?
            .into_text("INFO replication")?;
        Ok(Replication {
            master: info.contains("role:master"),
            linked: info.contains("master_link_status:up"),
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster bus port of a node started with [`RedisOptions::cluster`].
    pub fn cluster_bus_port(&self) -> Option<u16> {
        self.bus_port
    }

    /// `redis://127.0.0.1:<port>`, with `user:password@` (ACL user) or `:password@`
    /// (`requirepass`) when credentials are configured; both percent-encoded.
    pub fn url(&self) -> String {
        let plain = format!("redis://127.0.0.1:{}", self.port);
        let Ok(mut url) = url::Url::parse(&plain) else {
            return plain;
        };
        let ok = match (&self.opts.acl_user, &self.opts.password) {
            (Some((u, p)), _) => url.set_username(u).is_ok() && url.set_password(Some(p)).is_ok(),
            (None, Some(p)) => url.set_password(Some(p)).is_ok(),
            (None, None) => true,
        };
        if ok {
            url.to_string().trim_end_matches('/').to_string()
        } else {
            plain
        }
    }

    /// The options the server was started with.
    pub fn options(&self) -> &RedisOptions {
        &self.opts
    }

    /// The server's process id, `None` after [`Redis::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Does nothing if it is not running.
    pub async fn kill(&self) {
        self.proc.kill_async().await;
    }

    /// Stops the server with SIGSTOP: connections stay open but nothing is answered.
    pub fn pause(&self) -> Result<()> {
        self.proc.pause()
    }

    /// Continues a paused server (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.proc.resume()
    }

    /// Kills the server if it runs and starts it again on the same port, with an empty data set
    /// (as a Redis without persistence comes back after a crash); waits until it answers.
    pub async fn restart(&self) -> Result<()> {
        self.proc.kill_async().await;
        self.proc.start()?;
        self.wait_ready().await
    }
}
