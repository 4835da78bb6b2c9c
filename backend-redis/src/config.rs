//! [`RedisConfig`]: where the Redis servers are, how to log in, and the lock timing.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tumbler_core::params::format_duration as fd;
use tumbler_core::{Error, Result};

/// The shortest lock TTL accepted.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// The longest lock TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The default lock TTL (the watchdog extends it every third of it).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// The longest a waiter's queue entry outlives its last refresh: a waiter that vanished
/// (killed, cut off) stops blocking others within this long, whatever the lock TTL.
pub const MAX_WAITER_TTL: Duration = Duration::from_secs(3);

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
/// # async fn demo() -> tumbler_core::Result<()> {
/// use std::time::Duration;
/// use tumbler_redis::{RedisConfig, RedisNode};
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
    /// Sentinel mode: `nodes` are the sentinels, this names the master and how to log in.
    pub(crate) sentinel: Option<SentinelSpec>,
    /// Redis Cluster: `nodes` are seeds, asked for the slot map.
    pub(crate) cluster: bool,
    pub(crate) min_replicas: u32,
    pub(crate) min_replicas_timeout: Option<Duration>,
}

/// What a Sentinel deployment needs beyond the sentinels' addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SentinelSpec {
    /// The name the sentinels monitor the master under (`sentinel monitor NAME ...`).
    pub(crate) master_name: String,
    /// How to log in to the master: database and credentials (its address is unused).
    pub(crate) master: RedisNode,
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

    /// Through Redis Sentinel: `sentinels` are the sentinels' addresses (with the sentinels'
    /// own credentials, if they need any), `master_name` the name they monitor the master
    /// under. The backend asks the sentinels for the master at connect and again whenever the
    /// connection breaks or the server it reaches turns out to be a replica (after a
    /// failover), so that every primitive of a single server keeps working across failovers.
    /// Log in to the master with [`RedisConfig::master_user`] / [`RedisConfig::master_password`],
    /// choose its database with [`RedisConfig::master_db`].
    pub fn sentinel(sentinels: Vec<RedisNode>, master_name: impl Into<String>) -> Self {
        let mut config = Self::with_nodes(sentinels, false);
        config.sentinel = Some(SentinelSpec {
            master_name: master_name.into(),
            master: RedisNode::new("", 0),
        });
        config
    }

    /// A Redis Cluster: `seeds` are some of its nodes (one is enough; list more in case it is
    /// down), asked for the slot map at connect and whenever a shard's master must be found
    /// again. Every lock lives on the shard that serves its key's slot, with every primitive of
    /// a single server; a failover or a moved slot is a transient [`Error::Connection`] that
    /// waiting acquisitions ride out. Each seed carries the login and TLS setting used for
    /// every node of the cluster; the database must be 0 (the only one a cluster has).
    pub fn cluster(seeds: Vec<RedisNode>) -> Self {
        let mut config = Self::with_nodes(seeds, false);
        config.cluster = true;
        config
    }

    /// Sentinel mode: logs in to the master (and the replicas it fails over to) as ACL user
    /// `username`. Ignored in the other modes, where each [`RedisNode`] carries its login.
    pub fn master_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        if let Some(spec) = self.sentinel.as_mut() {
            spec.master =
                std::mem::replace(&mut spec.master, RedisNode::new("", 0)).user(username, password);
        }
        self
    }

    /// Sentinel mode: logs in to the master with `password` only (`requirepass`).
    pub fn master_password(mut self, password: impl Into<String>) -> Self {
        if let Some(spec) = self.sentinel.as_mut() {
            spec.master =
                std::mem::replace(&mut spec.master, RedisNode::new("", 0)).password(password);
        }
        self
    }

    /// Sentinel mode: uses database `db` on the master (`SELECT db`).
    pub fn master_db(mut self, db: i64) -> Self {
        if let Some(spec) = self.sentinel.as_mut() {
            spec.master.db = db;
        }
        self
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
            sentinel: None,
            cluster: false,
            min_replicas: 0,
            min_replicas_timeout: None,
        }
    }

    /// The lock TTL: how long a hold outlives its last renewal (default 30 s). The watchdog
    /// renews every third of it; a crashed holder's lock is free again within it.
    /// Must be within [`MIN_TTL`]..=[`MAX_TTL`] (checked at connect).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock-drift allowance: a hold counts as lost this long before its TTL would run out
    /// on the server (default `ttl / 100 + 2 ms`, [`tumbler_core::keeper::Validity::redis_drift`]).
    /// Must be below half the TTL.
    pub fn drift(mut self, drift: Duration) -> Self {
        self.drift = Some(drift);
        self
    }

    /// A prefix for every key (default empty, so a lock named `a/b` is the key `a/b`, as with
    /// redis-py's `Lock("a/b")`). A prefix with a Redis Cluster hash tag (`{app}:`) puts every
    /// lock of the prefix in one slot; one with a `}` that closes no non-empty `{...}` tag is
    /// refused at connect ([`tumbler_core::Error::InvalidArgument`]), since a lock's keys could then
    /// land in different slots.
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

    /// Replica acknowledgement: a grant or a renewal counts only once `WAIT n timeout`
    /// confirms that `n` replicas of the server received it (default 0: no waiting, and no
    /// extra command). A grant the replicas did not confirm within
    /// [`RedisConfig::min_replicas_timeout`] is undone (released) and the acquisition fails
    /// with [`tumbler_core::Error::Connection`] (transient; its source is a
    /// [`crate::ReplicasMissing`] with `n` and how many did acknowledge); a renewal they did
    /// not confirm counts as failed, so the keeper retries and `lost()` fires with
    /// `RenewalFailed` once the hold's validity runs out. At connect, a server with fewer than
    /// `n` connected replicas is [`tumbler_core::Error::InvalidArgument`] on `min_replicas`,
    /// saying how many it has.
    ///
    /// # What it does not promise
    ///
    /// Redis replication is asynchronous and `WAIT` is not consensus: it tells that `n`
    /// replicas received the write, not that they persisted it or that a failover will promote
    /// one of them. Per the Redis documentation of `WAIT`, a failover can still lose an
    /// acknowledged write in rare cases (a promoted replica that had not received it, a
    /// replica restarted without persistence). It narrows the window in which a failover
    /// forgets a hold; it does not close it. Not offered with Redlock (refused at connect).
    ///
    /// `WAIT` blocks the backend's shared connection until it returns, so while replicas lag,
    /// each grant and renewal can delay the backend's other requests by up to the timeout.
    pub fn min_replicas(mut self, n: u32) -> Self {
        self.min_replicas = n;
        self
    }

    /// How long a `WAIT` for [`RedisConfig::min_replicas`] may take (default half the request
    /// timeout; it must be below the request timeout).
    pub fn min_replicas_timeout(mut self, timeout: Duration) -> Self {
        self.min_replicas_timeout = Some(timeout);
        self
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
        if self.cluster {
            if let Some(node) = self.nodes.iter().find(|n| n.db != 0) {
                return Err(Error::invalid(
                    "redis database",
                    format!(
                        "database {} of {}: a Redis Cluster has only database 0; leave the /DB out",
                        node.db,
                        node.display_addr()
                    ),
                ));
            }
        }
        if !self.redlock && self.sentinel.is_none() && !self.cluster && self.nodes.len() > 1 {
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
                    "{} is out of range; use {} to {}",
                    fd(self.ttl),
                    fd(MIN_TTL),
                    fd(MAX_TTL)
                ),
            ));
        }
        let drift = self
            .drift
            .unwrap_or_else(|| tumbler_core::keeper::Validity::redis_drift(self.ttl));
        if drift * 2 >= self.ttl {
            return Err(Error::invalid(
                "drift",
                format!(
                    "{} is not below half the ttl {}; use a smaller drift or a longer ttl",
                    fd(drift),
                    fd(self.ttl)
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
                    format!(
                        "{} is out of range; use more than 0 and at most 1h",
                        fd(value)
                    ),
                ));
            }
        }
        if self.retry_delay > Duration::from_secs(60) {
            return Err(Error::invalid(
                "retry_delay",
                format!("{} is out of range; use at most 60s", fd(self.retry_delay)),
            ));
        }
        let restart_delay = self.restart_delay.unwrap_or(self.ttl);
        if restart_delay > MAX_TTL {
            return Err(Error::invalid(
                "restart_delay",
                format!(
                    "{} is out of range; use at most {}",
                    fd(restart_delay),
                    fd(MAX_TTL)
                ),
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
        crate::keys::check_prefix(&self.prefix).map_err(|why| Error::invalid("prefix", why))?;
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
        if let Some(spec) = &self.sentinel {
            let name = &spec.master_name;
            if name.is_empty()
                || name.len() > 200
                || name.contains(|c: char| c.is_whitespace() || c == '/')
            {
                return Err(Error::invalid(
                    "redis+sentinel master name",
                    format!(
                        "{name:?} is not a master name; write the name the sentinels monitor (`sentinel monitor NAME ...`) as the URL path: redis+sentinel://S1:26379,S2:26379/NAME"
                    ),
                ));
            }
            if self.nodes.iter().any(|n| n.tls) {
                return Err(Error::invalid(
                    "redis URL scheme",
                    "TLS through Sentinel (rediss+sentinel://) is not supported yet; use redis+sentinel://",
                ));
            }
            if spec.master.db < 0 {
                return Err(Error::invalid(
                    "redis database",
                    "a negative database number; use 0 or more",
                ));
            }
        }
        let min_replicas_timeout = self.min_replicas_timeout.unwrap_or(request_timeout / 2);
        if self.min_replicas > 0 {
            if self.redlock {
                return Err(Error::invalid(
                    "min_replicas",
                    "not supported with Redlock (redis+redlock://); leave it out, or use redis:// or redis+sentinel:// with replicas",
                ));
            }
            if self.min_replicas > 1000 {
                return Err(Error::invalid(
                    "min_replicas",
                    format!("{} is out of range; use at most 1000", self.min_replicas),
                ));
            }
            if min_replicas_timeout.is_zero() || min_replicas_timeout >= request_timeout {
                return Err(Error::invalid(
                    "min_replicas_timeout",
                    format!(
                        "{min_replicas_timeout:?} must be more than 0 and below the request_timeout {request_timeout:?}; use e.g. {:?}",
                        request_timeout / 2
                    ),
                ));
            }
        }
        if self.redlock || self.sentinel.is_some() || self.cluster {
            let what = if self.redlock {
                ("redis+redlock masters", "Redlock needs independent masters")
            } else if self.cluster {
                ("redis+cluster nodes", "a node listed twice is a typo")
            } else {
                (
                    "redis+sentinel sentinels",
                    "a sentinel listed twice is a typo",
                )
            };
            for (i, later) in self.nodes.iter().enumerate() {
                if let Some(first) = self.nodes[..i].iter().find(|n| {
                    n.port == later.port && tumbler_core::url::same_host(&n.host, &later.host)
                }) {
                    return Err(Error::invalid(
                        what.0,
                        format!(
                            "{} and {} are the same server; {}, so list each one once",
                            first.display_addr(),
                            later.display_addr(),
                            what.1
                        ),
                    ));
                }
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
            min_replicas: self.min_replicas,
            min_replicas_timeout,
            client: crate::keys::client_id(),
            cluster: self.cluster,
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
    /// Replicas that must acknowledge every grant and renewal (`WAIT`); 0: none.
    pub(crate) min_replicas: u32,
    /// How long such a `WAIT` may take.
    pub(crate) min_replicas_timeout: Duration,
    /// This backend instance's client id (see [`crate::keys::client_id`]).
    pub(crate) client: String,
    /// Redis Cluster mode: every key of a script in the lock's slot (the restart epoch too).
    pub(crate) cluster: bool,
}

impl Settings {
    /// The keys of `name` for this client.
    pub(crate) fn keys(&self, name: &tumbler_core::LockName) -> crate::keys::Keys {
        crate::keys::Keys::new(&self.prefix, &self.client, name, self.cluster)
    }

    /// A new acquisition id of this client.
    pub(crate) fn new_id(&self) -> String {
        crate::keys::new_id(&self.client)
    }

    /// How long a hold is vouched for after the request that granted or renewed it was sent:
    /// `ttl - drift` (the formula lives in [`tumbler_core::keeper::Validity::redis`]).
    pub(crate) fn validity(&self) -> tumbler_core::keeper::Validity {
        tumbler_core::keeper::Validity::redis(self.ttl, self.drift)
    }

    /// How often a hold's keeper renews it.
    pub(crate) fn renew_period(&self) -> Duration {
        self.ttl / 3
    }

    /// How long a waiter's queue entry lives without a refresh: the longest a waiter that
    /// vanished (killed, cut off) keeps others waiting, [`MAX_WAITER_TTL`] at most whatever the
    /// lock TTL.
    pub(crate) fn waiter_ttl(&self) -> Duration {
        // Half a second of the bound is left for the survivors to notice.
        self.ttl.min(MAX_WAITER_TTL - Duration::from_millis(500))
    }

    /// The longest a waiter sleeps between attempts when no notification comes; each attempt
    /// also refreshes its queue entry.
    pub(crate) fn waiter_refresh(&self) -> Duration {
        self.waiter_ttl() / 3
    }
}

/// Whole milliseconds, at least 1, as the scripts take them.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_that_would_split_slots_is_refused() {
        for url in ["redis://h?prefix=app%7D", "redis://h?prefix=%7B%7D"] {
            match RedisConfig::from_url(url).unwrap().validate() {
                Err(Error::InvalidArgument { what, problem }) => {
                    assert_eq!(what, "prefix");
                    assert!(problem.contains("hash tag"), "{problem}");
                }
                other => panic!("{url}: expected InvalidArgument, got {other:?}"),
            }
        }
        let tagged = RedisConfig::from_url("redis://h?prefix=%7Bapp%7D:").unwrap();
        assert_eq!(tagged.validate().unwrap().prefix, "{app}:");
    }

    #[test]
    fn out_of_range_durations_are_written_as_in_urls() {
        for (url, said) in [
            ("redis://h?ttl=0s", "0s is out of range; use 100ms to 24h"),
            (
                "redis://h?ttl=2s&drift=1500ms",
                "1.5s is not below half the ttl 2s",
            ),
            ("redis://h?request_timeout=2h", "2h is out of range"),
        ] {
            match RedisConfig::from_url(url).unwrap().validate() {
                Err(Error::InvalidArgument { problem, .. }) => {
                    assert!(problem.contains(said), "{url}: {problem}")
                }
                other => panic!("{url}: expected InvalidArgument, got {other:?}"),
            }
        }
    }
}
