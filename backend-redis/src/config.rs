//! [`RedisConfig`]: where the Redis servers are, how to log in, and the lock timing.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lockcore::{Error, Result};

/// The shortest lock TTL accepted.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// The longest lock TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The default lock TTL (the watchdog extends it every third of it).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// One Redis server: address, database and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisNode {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) tls: bool,
}

impl RedisNode {
    /// A server at `host:port`, database 0, no credentials, no TLS.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RedisNode {
            host: host.into(),
            port,
            db: 0,
            username: None,
            password: None,
            tls: false,
        }
    }

    /// Logs in as ACL user `username` with `password` (`AUTH username password`).
    pub fn user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Logs in with `password` only (`requirepass`, the `default` user).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.username = None;
        self.password = Some(password.into());
        self
    }

    /// Uses database `db` (`SELECT db`).
    pub fn db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// Connects with TLS (`rediss://`).
    pub fn tls(mut self, yes: bool) -> Self {
        self.tls = yes;
        self
    }

    /// `redis://host:port/db` (or `rediss://`), without credentials: for messages.
    pub fn display_addr(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.db == 0 {
            format!("{scheme}://{host}:{}", self.port)
        } else {
            format!("{scheme}://{host}:{}/{}", self.port, self.db)
        }
    }
}

impl fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNode")
            .field("addr", &self.display_addr())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// How to reach Redis and how locks behave there. Build one, then [`RedisConfig::connect`].
///
/// ```no_run
/// # async fn demo() -> lockcore::Result<()> {
/// use std::time::Duration;
/// use backend_redis::{RedisConfig, RedisNode};
///
/// let locks = RedisConfig::single(RedisNode::new("127.0.0.1", 6379).user("app", "s3cret"))
///     .ttl(Duration::from_secs(10))
///     .prefix("myapp:")
///     .connect()
///     .await?;
/// let guard = locks.mutex("jobs/nightly")?.lock().await?;
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisConfig {
    pub(crate) nodes: Vec<RedisNode>,
    pub(crate) redlock: bool,
    pub(crate) ttl: Duration,
    pub(crate) drift: Option<Duration>,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) retry_delay: Duration,
    pub(crate) restart_delay: Option<Duration>,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) tls_insecure: bool,
}

impl RedisConfig {
    /// One Redis server (a primary, possibly with replicas behind it).
    pub fn single(node: RedisNode) -> Self {
        Self::with_nodes(vec![node], false)
    }

    /// Redlock over independent masters: a lock is held when a majority of them granted it
    /// within its validity. Only mutexes are offered in this mode (see the crate docs).
    pub fn redlock(nodes: Vec<RedisNode>) -> Self {
        Self::with_nodes(nodes, true)
    }

    fn with_nodes(nodes: Vec<RedisNode>, redlock: bool) -> Self {
        RedisConfig {
            nodes,
            redlock,
            ttl: DEFAULT_TTL,
            drift: None,
            prefix: String::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
            retry_delay: Duration::from_millis(50),
            restart_delay: None,
            tls_ca: None,
            tls_insecure: false,
        }
    }

    /// Parses a `redis://`, `rediss://`, `redis+redlock://` or `rediss+redlock://` URL (see the
    /// crate docs for the grammar).
    pub fn from_url(url: &str) -> Result<Self> {
        crate::url::parse(url)
    }

    /// The lock TTL: how long a hold outlives its last renewal (default 30 s). The watchdog
    /// renews every third of it; a crashed holder's lock is free again within it.
    /// Must be within [`MIN_TTL`]..=[`MAX_TTL`] (checked at connect).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock-drift allowance: a hold counts as lost this long before its TTL would run out
    /// on the server (default `ttl / 50 + 5 ms`). Must be below half the TTL.
    pub fn drift(mut self, drift: Duration) -> Self {
        self.drift = Some(drift);
        self
    }

    /// A prefix for every key (default empty, so a lock named `a/b` is the key `a/b`, as with
    /// redis-py's `Lock("a/b")`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request may take (default `min(ttl / 4, 5 s)`).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Redlock only: the longest random pause before retrying after a split vote (default
    /// 50 ms).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// After a server restart that lost its data, no lock is granted until this long after the
    /// restart (default: the TTL), so that holds the server forgot have run out on their
    /// holders' clocks first. `Duration::ZERO` turns this off.
    pub fn restart_delay(mut self, delay: Duration) -> Self {
        self.restart_delay = Some(delay);
        self
    }

    /// TLS: trust the CA certificates in this PEM file instead of the system's.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// TLS: do not verify the server's certificate (tests only).
    pub fn tls_insecure(mut self, yes: bool) -> Self {
        self.tls_insecure = yes;
        self
    }

    /// Connects and returns the backend as `Arc<dyn LockBackend>`.
    pub async fn connect(self) -> Result<lockcore::SharedBackend> {
        Ok(self.connect_backend().await?)
    }

    /// Connects and returns the concrete backend (for its admin calls).
    pub async fn connect_backend(self) -> Result<std::sync::Arc<crate::RedisBackend>> {
        crate::backend::RedisBackend::connect(self).await
    }

    /// The configured lock TTL.
    pub fn lock_ttl(&self) -> Duration {
        self.ttl
    }

    /// Checks every setting; returns the settings the backend runs with.
    pub(crate) fn validate(&self) -> Result<Settings> {
        if self.nodes.is_empty() {
            return Err(Error::invalid(
                "redis servers",
                "no server given; name at least one host",
            ));
        }
        if !self.redlock && self.nodes.len() > 1 {
            return Err(Error::invalid(
                "redis servers",
                format!(
                    "{} servers given for a single-server backend; use redis+redlock:// (RedisConfig::redlock) for several independent masters",
                    self.nodes.len()
                ),
            ));
        }
        if !(MIN_TTL..=MAX_TTL).contains(&self.ttl) {
            return Err(Error::invalid(
                "ttl",
                format!(
                    "{:?} is out of range; use {MIN_TTL:?} to {MAX_TTL:?}",
                    self.ttl
                ),
            ));
        }
        let drift = self
            .drift
            .unwrap_or(self.ttl / 50 + Duration::from_millis(5));
        if drift * 2 >= self.ttl {
            return Err(Error::invalid(
                "drift",
                format!(
                    "{drift:?} is not below half the ttl {:?}; use a smaller drift or a longer ttl",
                    self.ttl
                ),
            ));
        }
        let request_timeout = self
            .request_timeout
            .unwrap_or_else(|| (self.ttl / 4).min(Duration::from_secs(5)));
        for (what, value) in [
            ("request_timeout", request_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(3600) {
                return Err(Error::invalid(
                    what,
                    format!("{value:?} is out of range; use more than 0 and at most 1h"),
                ));
            }
        }
        if self.retry_delay > Duration::from_secs(60) {
            return Err(Error::invalid(
                "retry_delay",
                format!("{:?} is out of range; use at most 60s", self.retry_delay),
            ));
        }
        let restart_delay = self.restart_delay.unwrap_or(self.ttl);
        if restart_delay > MAX_TTL {
            return Err(Error::invalid(
                "restart_delay",
                format!("{restart_delay:?} is out of range; use at most {MAX_TTL:?}"),
            ));
        }
        if self.prefix.len() > 200 || self.prefix.contains(char::is_whitespace) {
            return Err(Error::invalid(
                "prefix",
                format!(
                    "{:?} must be at most 200 bytes without whitespace",
                    self.prefix
                ),
            ));
        }
        for node in &self.nodes {
            if node.host.is_empty() {
                return Err(Error::invalid("redis host", "empty host name"));
            }
            if node.port == 0 {
                return Err(Error::invalid(
                    "redis port",
                    format!("port 0 of {}; use the server's port", node.host),
                ));
            }
            if node.tls && !cfg!(feature = "tls") {
                return Err(Error::invalid(
                    "redis URL scheme",
                    "TLS (rediss://) needs the `tls` feature of backend-redis",
                ));
            }
        }
        Ok(Settings {
            ttl: self.ttl,
            drift,
            prefix: self.prefix.clone(),
            connect_timeout: self.connect_timeout,
            request_timeout,
            retry_delay: self.retry_delay,
            restart_delay,
        })
    }
}

/// The validated timing and naming settings every part of the backend reads.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) ttl: Duration,
    pub(crate) drift: Duration,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_delay: Duration,
    pub(crate) restart_delay: Duration,
}

impl Settings {
    /// How long a hold is vouched for after the renewal sent at `sent`.
    pub(crate) fn validity(&self) -> Duration {
        self.ttl - self.drift
    }

    /// How often the watchdog renews.
    pub(crate) fn renew_period(&self) -> Duration {
        self.ttl / 3
    }

    /// How long a waiter's queue entry lives without a refresh.
    pub(crate) fn waiter_ttl(&self) -> Duration {
        self.ttl
    }

    /// The longest a waiter sleeps between attempts when no notification comes.
    pub(crate) fn waiter_refresh(&self) -> Duration {
        self.ttl / 3
    }
}

/// Whole milliseconds, at least 1, as the scripts take them.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
