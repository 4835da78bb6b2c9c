//! [`EtcdBackend`]: connecting, and the `LockBackend` implementation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, GetOptions};
use lockcore::{
    AcquireRequest, Capabilities, ConnectionEvents, Error, Fencing, Hold, LockBackend, LockName,
    LockState, Result,
};
use tokio::time::Instant;

use crate::config::EtcdConfig;
use crate::errors::{self, BACKEND};
use crate::inner::{retry_until, Inner};
use crate::keys::Layout;
use crate::names::NameWatches;
use crate::session;
use crate::watch::Watches;

/// How long after a crash the store frees a lock, beyond the TTL: etcd's lessor looks for
/// expired leases every 500 ms, and a new leader extends every lease a little.
const EXPIRY_SLACK: Duration = Duration::from_secs(1);
/// HTTP/2 ping interval and timeout, to notice a dead connection. etcd sends GOAWAY to clients
/// that ping more often than every 5 s, so stay above that.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Locks on an etcd cluster: one lease per instance, Go-compatible mutex keys, fast hand-off.
///
/// Create it with [`crate::connect_url`] or [`EtcdConfig::connect`]; use it through lockcore's
/// handles (`locks.mutex(name)`, `locks.rwlock(name)`, `locks.semaphore(name, n)`), which every
/// `Arc<dyn LockBackend>` offers.
///
/// ```no_run
/// # async fn demo() -> lockcore::Result<()> {
/// let locks = backend_etcd::connect_url("etcd://127.0.0.1:2379?ttl=10s").await?;
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
    inner: Arc<Inner>,
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

impl EtcdBackend {
    pub(crate) async fn connect(config: EtcdConfig) -> Result<Arc<Self>> {
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
        let client = errors::call(
            &address,
            || "connect (and log in)".to_owned(),
            config.connect_timeout,
            Client::connect(&endpoints, Some(options)),
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
                errors::call(
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
        let (leases, keeper) = session::start(
            client.lease_client(),
            config.ttl,
            config.connect_timeout,
            config.request_timeout,
            address.clone(),
        )
        .await?;
        let (watches, mux) = Watches::start(client.watch_client(), anchor, config.request_timeout);
        let inner = Inner::new(
            client.kv_client(),
            client.lease_client(),
            layout,
            address.clone(),
            config.request_timeout,
            NameWatches::new(watches),
            leases,
            vec![keeper, mux],
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
        } => {
            let hint = if tls {
                "check ca=, cert= and key= (members may require a client certificate)"
            } else {
                "if the members serve TLS, use an etcds:// URL"
            };
            Error::Connection {
                backend,
                addr,
                message: format!("{message}; {hint}"),
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
    }

    fn address(&self) -> String {
        self.address.clone()
    }

    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        crate::acquire::acquire(&self.inner, request.name, request.kind, request.wait).await
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        self.check_open()?;
        crate::state::state(&self.inner, name).await
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        self.check_open()?;
        crate::state::request_revoke(&self.inner, name).await
    }

    fn connection_events(&self) -> ConnectionEvents {
        self.inner.leases.monitor().subscribe()
    }

    /// Revokes the lease (every key of this instance goes at once; every hold's `lost()` fires
    /// with `Abandoned`) and stops the keep-alive and watch tasks.
    async fn shutdown(&self) -> Result<()> {
        let session = self.inner.leases.current();
        self.inner.leases.shut_down();
        self.inner.stop_tasks();
        match session {
            Some(session)
                if !session::revoke(
                    &self.inner.lease_client,
                    session.lease(),
                    self.inner.request_timeout,
                )
                .await =>
            {
                Err(Error::connection(
                    BACKEND,
                    self.address.clone(),
                    format!(
                        "could not revoke lease {:x}; its keys go when its TTL runs out",
                        session.lease()
                    ),
                ))
            }
            _ => Ok(()),
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
