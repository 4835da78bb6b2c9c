//! [`RedisBackend`]: the [`LockBackend`] on one Redis server or, in Redlock mode, on a majority
//! of independent masters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use lockcore::{
    AcquireRequest, Capabilities, ConnectionEvents, Error, Fencing, Hold, IntoLockName,
    LockBackend, LockName, LockState, Result,
};

use crate::config::{RedisConfig, Settings};
use crate::error::BACKEND;
use crate::hold::Registry;
use crate::node::{Health, Node};
use crate::redlock::{self, Masters};
use crate::single;
use crate::tls::TlsSettings;

/// Locks on Redis. Create one with [`crate::connect_url`] or [`RedisConfig::connect_backend`];
/// share it (`Arc`) across the whole process: it holds one connection per server, which every
/// lock, watchdog and waiter multiplexes.
///
/// ```no_run
/// # async fn demo() -> lockcore::Result<()> {
/// let locks = backend_redis::connect_url("redis://127.0.0.1:6379?ttl=10s").await?;
/// let nightly = locks.mutex("jobs/nightly")?;
/// let guard = nightly.lock().await?;
/// tokio::select! {
///     reason = guard.lost() => eprintln!("stop: {reason}"),
///     _ = async { /* work, passing guard.fencing_token() to the resource */ } => {}
/// }
/// guard.release().await?;
/// # Ok(()) }
/// ```
pub struct RedisBackend {
    settings: Arc<Settings>,
    nodes: Vec<Arc<Node>>,
    health: Arc<Health>,
    registry: Arc<Registry>,
    redlock: bool,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.address())
            .field("ttl", &self.settings.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    pub(crate) async fn connect(config: RedisConfig) -> Result<Arc<RedisBackend>> {
        let settings = Arc::new(config.validate()?);
        let tls = TlsSettings::load(&config)?;
        let health = Arc::new(Health::new(config.nodes.len()));
        let nodes = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| Node::new(i, node, &tls, settings.clone(), health.clone()))
            .collect::<Result<Vec<_>>>()?;
        let backend = Arc::new(RedisBackend {
            settings,
            nodes,
            health,
            registry: Arc::new(Registry::default()),
            redlock: config.redlock,
            closed: AtomicBool::new(false),
        });
        if !backend.redlock {
            backend.nodes[0].connect_first().await?;
            return Ok(backend);
        }
        let results = join_all(backend.nodes.iter().map(|n| n.connect_first())).await;
        let mut errors = Vec::new();
        for (node, result) in backend.nodes.iter().zip(results) {
            match result {
                Ok(()) => {}
                Err(error @ Error::Auth { .. }) => return Err(error),
                Err(error) => {
                    tracing::warn!(addr = %node.addr, %error, "Redlock master unreachable at start");
                    node.start_healing();
                    errors.push(error);
                }
            }
        }
        let masters = backend.masters();
        let answered = backend.nodes.len() - errors.len();
        if answered < masters.nodes.len() / 2 + 1 {
            return Err(Error::Connection {
                backend: BACKEND,
                addr: masters.address(),
                message: format!(
                    "only {answered} of {} Redis masters are reachable; Redlock needs a majority: {}",
                    backend.nodes.len(),
                    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                ),
            });
        }
        Ok(backend)
    }

    fn masters(&self) -> Masters<'_> {
        Masters { nodes: &self.nodes }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed { backend: BACKEND });
        }
        Ok(())
    }

    /// The lock TTL this backend uses.
    pub fn ttl(&self) -> Duration {
        self.settings.ttl
    }

    /// Whether this backend runs Redlock over several masters.
    pub fn is_redlock(&self) -> bool {
        self.redlock
    }

    /// Removes every hold of `name`, whoever owns it (an administrator breaking a lock). The
    /// holders hear of it at once and their `lost()` fires; waiters are woken. Returns how many
    /// holds were removed.
    pub async fn force_release(&self, name: impl IntoLockName) -> Result<usize> {
        self.check_open()?;
        let name = name.into_lock_name()?;
        if self.redlock {
            let masters = self.masters();
            redlock::count_on_all(&masters, |node| single::force_release(node, &name, true)).await
        } else {
            single::force_release(&self.nodes[0], &name, false).await
        }
    }

    /// The names this backend instance holds right now.
    pub fn held_locks(&self) -> Vec<LockName> {
        self.registry.names()
    }

    /// Waits until every hold of this backend listens for revocations and forced releases
    /// (holds start listening in the background right after they are granted).
    pub async fn settle(&self) -> Result<()> {
        self.check_open()?;
        for node in &self.nodes {
            node.settle().await?;
        }
        Ok(())
    }

    /// Declares that the servers hold no locks from before a restart, so that locks are granted
    /// at once instead of after the restart delay. Call it only right after provisioning a new,
    /// empty server (tests do); see the crate docs on restarts.
    pub async fn declare_fresh_servers(&self) -> Result<()> {
        self.check_open()?;
        for node in &self.nodes {
            node.declare_fresh(&self.settings.prefix).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn capabilities(&self) -> Capabilities {
        let caps = Capabilities::new(BACKEND)
            .with_revocation(true)
            .with_crash_release_bound(Some(self.settings.ttl));
        if self.redlock {
            caps.with_redlock(true).with_fencing(Fencing::BestEffort)
        } else {
            caps.with_fifo(true)
                .with_fencing(Fencing::StrictlyIncreasing)
                .with_rwlock(true)
                .with_semaphore(true)
                .with_lists_waiters(true)
        }
    }

    fn address(&self) -> String {
        if self.redlock {
            self.masters().address()
        } else {
            self.nodes[0].addr.clone()
        }
    }

    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        self.check_open()?;
        if self.redlock {
            redlock::acquire(&self.masters(), &self.registry, request).await
        } else {
            single::acquire(&self.nodes[0], &self.registry, request).await
        }
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        self.check_open()?;
        if self.redlock {
            redlock::state(&self.masters(), name).await
        } else {
            single::state(&self.nodes[0], name).await
        }
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        self.check_open()?;
        if self.redlock {
            let masters = self.masters();
            redlock::count_on_all(&masters, |node| single::revoke(node, name)).await
        } else {
            single::revoke(&self.nodes[0], name).await
        }
    }

    fn connection_events(&self) -> ConnectionEvents {
        self.health.monitor.subscribe()
    }

    async fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.registry.release_all().await
    }
}
