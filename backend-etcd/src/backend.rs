//! [`EtcdBackend`]: connecting, and the `LockBackend` implementation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::time::Instant;
use tumbler_core::{
    AcquireRequest, Capabilities, ConnectionEvents, Error, Fencing, Hold, LeaderInfo, LockBackend,
    LockName, LockState, Result,
};

use crate::cleaner::Cleaner;
use crate::config::EtcdConfig;
use crate::error_map::{self, BACKEND};
use crate::instance::Instance;
use crate::keys::Layout;
use crate::lease;
use crate::members::MemberProber;
use crate::retry::retry_until;
use crate::shared_watchers::SharedWatches;
use crate::watch::Watches;

/// How long after a crash the store frees a lock, beyond the TTL: etcd's lessor looks for
/// expired leases every 500 ms, and a new leader extends every lease a little.
const EXPIRY_SLACK: Duration = Duration::from_secs(1);
/// HTTP/2 ping interval and timeout, to notice a dead connection. etcd sends GOAWAY to clients
/// that ping more often than every 5 s, so stay above that.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest value a campaign or proclaim may advertise. etcd refuses requests over
/// `--max-request-bytes` (1.5 MiB, 1,572,864 bytes, by default), and a campaign's first
/// request carries the value twice (the create puts it on the hold lease if nobody is queued,
/// else on the waiting lease, in one transaction), besides the key, the lock's other keys to
/// delete and the framing: 700,000 bytes leaves about 170 KB for those.
pub const MAX_VALUE_LEN: usize = 700_000;
/// The largest answer taken from etcd: the reads of an election's queue carry every
/// candidate's value (tonic's default, 4 MiB, would fail for six of the largest values).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// Locks on an etcd cluster: one lease per instance, Go-compatible mutex keys, fast hand-off.
///
/// Create it with [`crate::connect_url`] or [`EtcdConfig::connect`]; use it through lockcore's
/// handles (`locks.mutex(name)`, `locks.rwlock(name)`, `locks.semaphore(name, n)`), which every
/// `Arc<dyn LockBackend>` offers.
///
/// ```no_run
/// # async fn demo() -> tumbler_core::Result<()> {
/// let locks = tumbler_etcd::connect_url("etcd://127.0.0.1:2379?ttl=10s").await?;
/// let guard = locks.mutex("jobs/nightly")?.lock().await?;
/// // Exclusive with `etcdctl lock jobs/nightly` and Go's concurrency.Mutex, too.
/// println!("fencing token {}", guard.fencing_token());
/// tokio::select! {
///     reason = guard.lost() => eprintln!("stop: {reason}"),
///     _ = async { /* the protected work */ } => {}
/// }
/// guard.release().await?;
/// # Ok(()) }
/// ```
pub struct EtcdBackend {
    inner: Arc<Instance>,
    config: EtcdConfig,
    address: String,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("address", &self.address)
            .field("lease", &self.lease_id())
            .finish_non_exhaustive()
    }
}

impl EtcdConfig {
    /// Connects: logs in, grants the backend's hold and waiting leases and starts their
    /// keep-alives.
    ///
    /// Fails with [`Error::Auth`] on wrong credentials, with [`Error::InvalidArgument`] for a
    /// bad endpoint, and with [`Error::Connection`] or [`Error::Timeout`] when no member
    /// answers within the connect timeout.
    pub async fn connect(self) -> Result<Arc<EtcdBackend>> {
        EtcdBackend::connect(self).await
    }
}

impl EtcdBackend {
    async fn connect(config: EtcdConfig) -> Result<Arc<Self>> {
        let endpoints = config.endpoint_urls()?;
        let address = address(&endpoints, config.prefix());
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        if let Some((user, password)) = &config.credentials {
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.options());
        }
        let client = error_map::call(
            &address,
            || "connect (and log in)".to_owned(),
            config.connect_timeout,
            Client::connect(&endpoints, Some(options.clone())),
        )
        .await?;
        let layout = Layout::new(config.prefix.clone());
        let anchor = format!("{}#tumbler/watch-anchor", layout.prefix());
        // Leases need no permission, keys do: read one now, so that missing or wrong
        // credentials fail here and not at the first lock.
        let deadline = Instant::now() + config.connect_timeout;
        retry_until(deadline, config.connect_timeout / 2, |within| {
            let mut kv = client.kv_client();
            let probe = GetOptions::new().with_count_only();
            let (address, anchor) = (address.clone(), anchor.clone());
            async move {
                let read = kv.get(anchor.as_str(), Some(probe));
                error_map::call(
                    &address,
                    || "a read under the key prefix".to_owned(),
                    within,
                    read,
                )
                .await
            }
        })
        .await
        .map_err(|error| with_hint(error, config.tls.is_some()))?;
        let (leases, keeper) = lease::start(
            client.lease_client(),
            lease::LeaseRole::hold(config.ttl),
            config.connect_timeout,
            config.request_timeout,
            address.clone(),
        )
        .await?;
        let (waiting, waiting_keeper) = lease::start(
            client.lease_client(),
            lease::LeaseRole::waiting(config.ttl),
            config.connect_timeout,
            config.request_timeout,
            address.clone(),
        )
        .await?;
        let cleaner = tokio::time::timeout(
            config.connect_timeout,
            Cleaner::open(endpoints.clone(), options.clone()),
        )
        .await
        .ok()
        .flatten();
        let (watches, mux) = Watches::start(
            client
                .watch_client()
                .max_decoding_message_size(MAX_ANSWER_BYTES),
            anchor,
            config.request_timeout,
        );
        let mut tasks = vec![keeper, waiting_keeper, mux];
        tasks.extend(MemberProber::spawn(&client, &endpoints, &options));
        let inner = Instance::new(
            client
                .kv_client()
                .max_decoding_message_size(MAX_ANSWER_BYTES),
            client.lease_client(),
            layout,
            address.clone(),
            config.request_timeout,
            SharedWatches::new(watches),
            leases,
            waiting,
            cleaner,
            tasks,
        );
        Ok(Arc::new(EtcdBackend {
            inner: Arc::new(inner),
            config,
            address,
        }))
    }

    /// The id of the lease currently backing this instance's keys (it changes when a lease is
    /// lost and replaced). Every key of this instance ends in it, in lowercase hex.
    pub fn lease_id(&self) -> Option<i64> {
        self.inner.leases.current().map(|s| s.lease())
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }
}

/// Adds what to check to a failed first contact.
fn with_hint(error: Error, tls: bool) -> Error {
    match error {
        Error::Connection {
            backend,
            addr,
            message,
            source,
        } => {
            let hint = if tls {
                "check tls_ca=, tls_cert= and tls_key= (members may require a client certificate)"
            } else {
                "if the members serve TLS, use an etcds:// URL"
            };
            Error::Connection {
                backend,
                addr,
                message: format!("{message}; {hint}"),
                source,
            }
        }
        other => other,
    }
}

fn address(endpoints: &[String], prefix: &str) -> String {
    let hosts: Vec<&str> = endpoints
        .iter()
        .map(|e| e.split_once("://").map_or(e.as_str(), |(_, h)| h))
        .collect();
    let scheme = if endpoints.iter().any(|e| e.starts_with("https://")) {
        "etcds"
    } else {
        "etcd"
    };
    format!("{scheme}://{}/{prefix}", hosts.join(","))
}

#[async_trait]
impl LockBackend for EtcdBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(BACKEND)
            .with_fifo(true)
            .with_fencing(Fencing::StrictlyIncreasing)
            .with_rwlock(true)
            .with_semaphore(true)
            .with_revocation(true)
            .with_lists_waiters(true)
            .with_crash_release_bound(Some(self.config.ttl + EXPIRY_SLACK))
            .with_waiter_release_bound(Some(self.config.ttl.min(lease::WAIT_TTL) + EXPIRY_SLACK))
            .with_request_timeout(self.config.request_timeout)
            .with_election(true)
            .with_max_value_len(MAX_VALUE_LEN)
    }

    fn address(&self) -> String {
        self.address.clone()
    }

    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        crate::acquire::acquire(
            &self.inner,
            request.name,
            request.kind,
            request.value,
            request.wait,
        )
        .await
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        self.check_open()?;
        crate::state::state(&self.inner, name).await
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        self.check_open()?;
        crate::state::request_revoke(&self.inner, name).await
    }

    /// The oldest candidate under `NAME/` (Go's `Election.Leader`); a key of another kind of
    /// lock there is `Conflict`, as is a foreign key.
    async fn leader(&self, name: &LockName) -> Result<Option<LeaderInfo>> {
        self.check_open()?;
        let deadline = Instant::now() + self.inner.request_timeout;
        Ok(crate::election::read(&self.inner, name, deadline).await?.0)
    }

    /// Follows the leader's key with a watch (as Go's `Election.Observe` does), reading again
    /// on each change, and also after half the request timeout without a word from the store,
    /// so that an unreachable store is an error within the request timeout.
    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&LeaderInfo>,
    ) -> Result<Option<LeaderInfo>> {
        self.check_open()?;
        crate::election::leader_changed(&self.inner, name, seen).await
    }

    fn connection_events(&self) -> ConnectionEvents {
        self.inner.leases.monitor().subscribe()
    }

    /// Revokes the hold and waiting leases (every key of this instance goes at once; every
    /// hold's `lost()` fires with `Abandoned`, every waiting acquisition ends with `Closed`)
    /// and stops the keep-alive and watch tasks.
    ///
    /// Both leases are revoked at once, with short attempts retried until the request timeout
    /// or the hold lease's TTL has passed, whichever is longer: a leader election (etcd drops
    /// proposals meanwhile) is ridden out, and past the TTL the store has expired the leases by
    /// itself (a revoke then answers "lease not found", which counts as done).
    ///
    /// # Errors
    ///
    /// [`Error::Connection`] naming the leases not revoked when no member answered in time;
    /// their keys go when their TTL runs out.
    async fn shutdown(&self) -> Result<()> {
        let (hold, waiting) = (self.inner.leases.current(), self.inner.waiting.current());
        self.inner.leases.shut_down();
        self.inner.waiting.shut_down();
        self.inner.stop_tasks();
        let ttl = hold.iter().chain(&waiting).map(|s| s.ttl()).max();
        let deadline = Instant::now() + self.inner.request_timeout.max(ttl.unwrap_or_default());
        let revoke = |session: Option<Arc<lease::Lease>>| async move {
            let session = session?;
            let revoked = lease::revoke_until(
                &self.inner.lease_client,
                session.lease(),
                self.inner.request_timeout,
                deadline,
            )
            .await;
            (!revoked).then(|| format!("{:x}", session.lease()))
        };
        let (hold, waiting) = tokio::join!(revoke(hold), revoke(waiting));
        let kept: Vec<String> = hold.into_iter().chain(waiting).collect();
        if kept.is_empty() {
            Ok(())
        } else {
            Err(Error::connection(
                BACKEND,
                self.address.clone(),
                format!(
                    "could not revoke lease(s) {}; their keys go when their TTL runs out",
                    kept.join(", ")
                ),
            ))
        }
    }
}

impl EtcdBackend {
    fn check_open(&self) -> Result<()> {
        if self.inner.leases.is_shut_down() {
            Err(Error::Closed { backend: BACKEND })
        } else {
            Ok(())
        }
    }
}
