//! [`RedisBackend`]: the [`LockBackend`] on one Redis server or, in Redlock mode, on a majority
//! of independent masters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use tumbler_core::{
    AcquireRequest, Capabilities, ConnectionEvents, Error, Fencing, Hold, IntoLockName, LeaderInfo,
    LockBackend, LockName, LockState, Result,
};

use crate::client::TlsSettings;
use crate::cluster::Routes;
use crate::config::{RedisConfig, Settings};
use crate::error::BACKEND;
use crate::health::Health;
use crate::hold::Registry;
use crate::node::{ClusterTarget, Node};
use crate::redlock::{self, Masters};
use crate::single;

/// Locks on Redis. Create one with [`crate::connect_url`] or [`RedisConfig::connect_backend`];
/// share it (`Arc`) across the whole process: it holds one connection per server, which every
/// lock, watchdog and waiter multiplexes.
///
/// ```no_run
/// # async fn demo() -> tumbler_core::Result<()> {
/// let locks = tumbler_redis::connect_url("redis://127.0.0.1:6379?ttl=10s").await?;
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
    /// Redis Cluster: which node (shard) serves a lock's slot.
    routes: Option<Arc<Routes>>,
    /// What [`LockBackend::address`] says.
    address: String,
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

impl RedisConfig {
    /// Connects and returns the backend as `Arc<dyn LockBackend>`.
    ///
    /// Errors: [`Error::InvalidArgument`] for bad settings (also duplicate Redlock masters or
    /// sentinels, a master name the sentinels do not monitor, and `min_replicas` above the
    /// replicas the master has connected), [`Error::Auth`] for refused credentials,
    /// [`Error::Connection`] or [`Error::Timeout`] when the server (or a majority of Redlock
    /// masters, or every sentinel) cannot be reached in time.
    pub async fn connect(self) -> Result<tumbler_core::SharedBackend> {
        Ok(self.connect_backend().await?)
    }

    /// Connects and returns the concrete backend (for its admin calls); errors as
    /// [`RedisConfig::connect`].
    pub async fn connect_backend(self) -> Result<Arc<RedisBackend>> {
        RedisBackend::connect(self).await
    }
}

impl RedisBackend {
    async fn connect(config: RedisConfig) -> Result<Arc<RedisBackend>> {
        let settings = Arc::new(config.validate()?);
        let tls = TlsSettings::load(&config)?;
        if config.cluster {
            return Self::connect_cluster(&config, settings, tls).await;
        }
        // Through Sentinel, the sentinels stand for one server: the master they name.
        let count = if config.sentinel.is_some() {
            1
        } else {
            config.nodes.len()
        };
        let tolerated = if config.redlock {
            count - (count / 2 + 1)
        } else {
            0
        };
        let health = Arc::new(Health::new(count, tolerated, settings.ttl));
        let nodes = match &config.sentinel {
            Some(spec) => vec![Node::new_sentinel(
                &config.nodes,
                spec,
                settings.clone(),
                health.clone(),
            )?],
            None => config
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| Node::new(i, node, &tls, settings.clone(), health.clone()))
                .collect::<Result<Vec<_>>>()?,
        };
        let address = if config.redlock {
            Masters { nodes: &nodes }.address()
        } else {
            nodes[0].addr.clone()
        };
        let backend = Arc::new(RedisBackend {
            settings,
            nodes,
            routes: None,
            address,
            health,
            registry: Arc::new(Registry::default()),
            redlock: config.redlock,
            closed: AtomicBool::new(false),
        });
        if !backend.redlock {
            backend.nodes[0].connect_first().await?;
            backend.nodes[0].check_replicas().await?;
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
            return Err(Error::connection(
                BACKEND,
                masters.address(),
                format!(
                    "only {answered} of {} Redis masters are reachable; Redlock needs a majority: {}",
                    backend.nodes.len(),
                    crate::error::briefs(&errors)
                ),
            ));
        }
        Ok(backend)
    }

    /// Connects to a Redis Cluster: reads the slot map from the listed nodes, makes one node
    /// per shard (master), and connects to each of them.
    async fn connect_cluster(
        config: &RedisConfig,
        settings: Arc<Settings>,
        tls: TlsSettings,
    ) -> Result<Arc<RedisBackend>> {
        let hosts = config
            .nodes
            .iter()
            .map(|n| n.display_addr().trim_start_matches("redis://").to_owned())
            .collect::<Vec<_>>()
            .join(",");
        let address = format!("redis+cluster://{hosts}");
        let seeds = config
            .nodes
            .iter()
            .map(|node| crate::client::client(node, &tls))
            .collect::<Result<Vec<_>>>()?;
        let ranges = crate::cluster::slot_map(&seeds, &address, settings.connect_timeout).await?;
        let mut masters: Vec<String> = Vec::new();
        for range in &ranges {
            if !masters.contains(&range.master()) {
                masters.push(range.master());
            }
        }
        let routes = Arc::new(Routes::new(&ranges, &masters));
        let health = Arc::new(Health::new(masters.len(), 0, settings.ttl));
        let mut nodes = Vec::new();
        for (index, master) in masters.iter().enumerate() {
            let Some(range) = ranges.iter().find(|r| r.master() == *master) else {
                continue;
            };
            let target = ClusterTarget {
                seeds: seeds.clone(),
                template: config.nodes[0].clone(),
                tls: tls.clone(),
                first: range.first,
                epoch_key: crate::cluster::key_in(range.first, range.last, "epoch"),
                routes: routes.clone(),
                current: std::sync::Mutex::new(None),
            };
            let label = format!("{address} (slots {}-{})", range.first, range.last);
            nodes.push(Node::new_cluster_shard(
                index,
                label,
                target,
                settings.clone(),
                health.clone(),
            )?);
        }
        let backend = Arc::new(RedisBackend {
            settings,
            nodes,
            routes: Some(routes),
            address,
            health,
            registry: Arc::new(Registry::default()),
            redlock: false,
            closed: AtomicBool::new(false),
        });
        // A shard whose master is down right now (a failover under way) is healed in the
        // background, as a Redlock master is: its locks fail transiently until then.
        let results = join_all(backend.nodes.iter().map(|n| n.connect_first())).await;
        let mut errors = Vec::new();
        for (node, result) in backend.nodes.iter().zip(results) {
            match result {
                Ok(()) => node.check_replicas().await?,
                Err(error @ (Error::Auth { .. } | Error::InvalidArgument { .. })) => {
                    return Err(error)
                }
                Err(error) => {
                    tracing::warn!(addr = %node.addr, %error, "redis cluster shard unreachable at connect");
                    node.start_healing();
                    errors.push(error);
                }
            }
        }
        if errors.len() == backend.nodes.len() {
            return Err(errors.remove(0));
        }
        Ok(backend)
    }

    /// The node that keeps `name`: the server, or on a cluster the shard serving its slot.
    fn node_for(&self, name: &LockName) -> &Arc<Node> {
        let Some(routes) = &self.routes else {
            return &self.nodes[0];
        };
        let slot = crate::cluster::key_slot(&self.settings.keys(name).lock);
        let shard = routes.shard_of(slot, |i| self.nodes.get(i)?.cluster_master());
        self.nodes.get(shard).unwrap_or(&self.nodes[0])
    }

    fn masters(&self) -> Masters<'_> {
        Masters { nodes: &self.nodes }
    }

    /// Elections are kept on one server; Redlock mode has none.
    fn check_election(&self) -> Result<()> {
        if self.redlock {
            return Err(Error::Unsupported {
                capability: "election",
                backend: BACKEND,
            });
        }
        Ok(())
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
    /// holders hear of it at once and their `lost()` fires; waiters are woken. Both are told by
    /// the same script, so a waiter may be granted a moment before the old holder's `lost()`
    /// has fired: only the fencing token keeps that holder's late writes out. Returns how many
    /// holds were removed.
    pub async fn force_release(&self, name: impl IntoLockName) -> Result<usize> {
        self.check_open()?;
        let name = name.into_lock_name()?;
        if self.redlock {
            let masters = self.masters();
            redlock::count_on_all(&masters, |node| single::force_release(node, &name, true)).await
        } else {
            single::force_release(self.node_for(&name), &name, false).await
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

    /// Test hook (feature `test-hooks`): declares that the servers hold no locks from before
    /// a restart, so that locks are granted at once instead of after the restart delay. Test
    /// suites call it right after starting a new, empty server; see the crate docs on restarts.
    #[cfg(feature = "test-hooks")]
    pub async fn declare_fresh_servers(&self) -> Result<()> {
        self.check_open()?;
        for node in &self.nodes {
            node.declare_fresh().await?;
        }
        Ok(())
    }
}

impl RedisBackend {
    /// How long the restart delay still refuses every grant (on the server, or on too many
    /// Redlock masters for a majority), `None` if locks are granted. See the crate docs on
    /// restarts; a warning is logged whenever an acquisition meets the delay.
    pub async fn restart_delay_left(&self) -> Result<Option<Duration>> {
        self.check_open()?;
        let results = join_all(self.nodes.iter().map(|n| n.recovering())).await;
        let mut left = Vec::new();
        for result in results {
            if let Some(remaining) = result? {
                left.push(remaining);
            }
        }
        if self.routes.is_some() {
            // On a cluster every shard's delay refuses the grants of its own locks.
            return Ok(left.into_iter().max());
        }
        let quorum = self.nodes.len() / 2 + 1;
        if self.nodes.len() - left.len() >= quorum {
            return Ok(None);
        }
        left.sort();
        // The majority forms once enough of the delays ran out.
        let must_end = left.len() - (self.nodes.len() - quorum);
        Ok(left.get(must_end - 1).copied())
    }
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn capabilities(&self) -> Capabilities {
        // One attempt is one request (Redlock: one round to every master, then possibly one to
        // give back a split vote), each bounded by the request timeout.
        // With min_replicas: the WAIT (after an extend, for a hand-off) and, when it falls
        // short, the undo.
        let rounds =
            if self.redlock { 2 } else { 1 } + if self.settings.min_replicas > 0 { 3 } else { 0 };
        let caps = Capabilities::new(BACKEND)
            .with_revocation(true)
            .with_crash_release_bound(Some(self.settings.ttl))
            .with_waiter_release_bound(Some(
                self.settings.waiter_ttl() + Duration::from_millis(500),
            ))
            .with_request_timeout(
                self.settings.request_timeout * rounds + Duration::from_millis(250),
            );
        if self.redlock {
            caps.with_redlock(true).with_fencing(Fencing::BestEffort)
        } else {
            caps.with_fifo(true)
                .with_election(true)
                .with_max_value_len(crate::election::MAX_VALUE_LEN)
                .with_fencing(Fencing::StrictlyIncreasing)
                .with_rwlock(true)
                .with_semaphore(true)
                .with_lists_waiters(true)
        }
    }

    fn address(&self) -> String {
        self.address.clone()
    }

    /// One script call when the lock is free; otherwise (when waiting) a place in the FIFO
    /// queue and a wait for the release's wake-up (Redlock: a majority of masters, retried).
    ///
    /// Cancel-safe: dropping the future removes its queue entry before the drop returns (or in
    /// the background when a request was in flight), and any hold it was granted unknowingly.
    ///
    /// Errors: [`Error::Conflict`] when the name is used as another kind of lock, with another
    /// semaphore limit, or holds data tumbler did not write (naming the key);
    /// [`Error::Recovering`] for a single attempt during the restart delay;
    /// [`Error::Timeout`] / [`Error::Connection`] when the server does not answer within the
    /// request timeout (a waiting acquisition first rides out an outage of up to one TTL);
    /// [`Error::Connection`] with a [`crate::ReplicasMissing`] source when `min_replicas`
    /// replicas did not acknowledge the grant (the grant is undone first);
    /// [`Error::Closed`] after [`LockBackend::shutdown`]; [`Error::Unsupported`] for
    /// campaigns (`election`), read-write locks and semaphores in Redlock mode.
    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        self.check_open()?;
        let outcome = if self.redlock {
            redlock::acquire(&self.masters(), &self.registry, request).await?
        } else {
            let node = self.node_for(&request.name).clone();
            single::acquire(&node, &self.registry, request).await?
        };
        match outcome {
            // Granted while shutdown() ran: give it back rather than leave it held.
            Some(mut hold) if self.closed.load(Ordering::SeqCst) => {
                if let Err(error) = hold.held.release().await {
                    tracing::warn!(%error, "releasing a hold granted during shutdown failed");
                }
                Err(Error::Closed { backend: BACKEND })
            }
            outcome => Ok(outcome),
        }
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        self.check_open()?;
        if self.redlock {
            redlock::state(&self.masters(), name).await
        } else {
            single::state(self.node_for(name), name).await
        }
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        self.check_open()?;
        if self.redlock {
            let masters = self.masters();
            redlock::count_on_all(&masters, |node| single::revoke(node, name)).await
        } else {
            single::revoke(self.node_for(name), name).await
        }
    }

    fn connection_events(&self) -> ConnectionEvents {
        self.health.monitor.subscribe()
    }

    /// Reads the lock key and the leader record in one script. A name held as another kind is
    /// [`Error::Conflict`] naming both kinds; a lock key held by a client that is not tumbler
    /// (a redis-py or rslock lock), or a leader record tumbler did not write, is `Conflict`
    /// naming the key. Redlock mode has no elections ([`Error::Unsupported`]).
    async fn leader(&self, name: &LockName) -> Result<Option<LeaderInfo>> {
        self.check_open()?;
        self.check_election()?;
        crate::election::leader(self.node_for(name), name).await
    }

    /// Woken by the announcement every change of leadership publishes on the election's
    /// channel, and reading again when the leader's hold would expire and at least every
    /// quarter of the request timeout (which bounds how long an unreachable server goes
    /// unnoticed). Errors as [`LockBackend::leader`]; [`Error::Closed`] after shutdown.
    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&LeaderInfo>,
    ) -> Result<Option<LeaderInfo>> {
        self.check_open()?;
        self.check_election()?;
        crate::election::leader_changed(self.node_for(name), &self.registry, name, seen).await
    }

    /// The restart delay still ahead ([`RedisBackend::restart_delay_left`]); `None` also when
    /// the servers cannot be asked.
    async fn recovering(&self) -> Option<Duration> {
        match self.restart_delay_left().await {
            Ok(left) => left,
            Err(error) => {
                tracing::debug!(%error, "could not read the restart delay");
                None
            }
        }
    }

    /// Stops every waiting acquisition of this backend (they return [`Error::Closed`]) and
    /// removes its queue entries, also those of acquisitions cancelled or timed out just
    /// before, then releases every hold (their `lost()` fires with `Abandoned`). Call it before
    /// the process exits: holds of a process that exits without it stay held until their TTL
    /// runs out (waiter entries: up to 3 s).
    async fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.registry
            .shut_down(self.settings.request_timeout * 2)
            .await
    }
}
