//! One Redis server as the backend sees it: a multiplexed RESP3 connection that is made again
//! after it breaks, per-request timeouts, lock-channel subscriptions that follow reconnects, and
//! the connection's health.
//!
//! Commands and pub/sub share the one connection (RESP3 push messages), so waking a waiter
//! costs the server one `PUBLISH` and this process nothing but a channel lookup.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisResult, Value};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tumbler_core::{Error, Result};

use crate::config::{RedisNode, Settings};
use crate::error::{breaks_connection, map};
use crate::health::Health;
use crate::hub::{HubState, Janitor, WaitSignal};
use crate::scripts;

/// How long a channel stays subscribed after its last listener left (saves a
/// `SUBSCRIBE`/`UNSUBSCRIBE` pair per acquisition when a name is locked again and again).
const LINGER: Duration = Duration::from_secs(10);
/// After a failed connection attempt, requests fail at once for this long instead of trying
/// again (the healer keeps trying in the background).
const RETRY_SPACING: Duration = Duration::from_millis(100);
/// The healer's longest pause between connection attempts.
const MAX_HEAL_PAUSE: Duration = Duration::from_secs(2);

/// What the backend learnt about a server when it connected.
#[derive(Debug, Default)]
struct ServerFacts {
    /// `run_id` from `INFO server`: changes with every restart of the server.
    run_id: Option<String>,
    /// How many restarts were seen (run ids that changed between connections).
    restarts: u64,
    /// `appendonly yes` with `appendfsync always`: a restart keeps every acknowledged write.
    durable: bool,
}

/// The current connection of a node.
struct Slot {
    conn: Option<MultiplexedConnection>,
    gen: u64,
    down: bool,
    /// When the last connection attempt failed, and what went wrong (without the address).
    last_failure: Option<(Instant, String)>,
    healing: bool,
}

/// Where a node's connections go.
// One per node, made once and never moved: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Target {
    /// One server at a fixed address.
    Fixed(redis::Client),
    /// The master that the sentinels name, asked again for every new connection.
    Sentinel(SentinelTarget),
    /// The master of one Redis Cluster shard, asked of the cluster for every new connection.
    Cluster(ClusterTarget),
}

/// One shard of a Redis Cluster: the master serving its slots.
pub(crate) struct ClusterTarget {
    /// Clients of the nodes listed in the URL, asked for the slot map in turn.
    pub(crate) seeds: Vec<redis::Client>,
    /// How to log in to the masters (host and port are filled in from the slot map).
    pub(crate) template: RedisNode,
    pub(crate) tls: crate::client::TlsSettings,
    /// The first slot the shard served at connect; its master is the one serving it.
    pub(crate) first: u16,
    /// A key of the shard's own slots for what belongs to the whole server (the restart epoch).
    pub(crate) epoch_key: String,
    /// Where `MOVED` replies are recorded.
    pub(crate) routes: Arc<crate::cluster::Routes>,
    /// The master the last lookup found (`host:port`), and its client.
    pub(crate) current: StdMutex<Option<(String, redis::Client)>>,
}

/// A master found through Redis Sentinel.
struct SentinelTarget {
    sentinel: tokio::sync::Mutex<redis::sentinel::Sentinel>,
    /// How the sentinels' clients talk to the master (clients dial the sentinels one by one).
    sentinel_clients: Vec<redis::Client>,
    master_name: String,
    info: redis::sentinel::SentinelNodeConnectionInfo,
    /// `host:port,...` of the sentinels, for messages.
    sentinels: String,
    /// The master the last lookup found, and its address.
    current: StdMutex<Option<(String, redis::Client)>>,
}

/// One Redis server: connection, subscriptions, health.
pub(crate) struct Node {
    index: usize,
    pub(crate) addr: String,
    target: Target,
    pub(crate) settings: Arc<Settings>,
    slot: StdMutex<Slot>,
    connecting: tokio::sync::Mutex<()>,
    attempts: AtomicU64,
    hub: StdMutex<HubState>,
    health: Arc<Health>,
    facts: StdMutex<ServerFacts>,
    /// Until when the last restart-delay warning covers.
    warned_until: StdMutex<Option<Instant>>,
    /// The connection generation on which a grant showed the restart delay over: acquisitions
    /// on it may take the scripts' fast path, which skips the restart-delay check.
    fast_gen: AtomicU64,
    /// A second connection, driven by lockcore's background runtime ([`tumbler_core::cleanup::background_runtime`]).
    side: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    runtime: Handle,
}

impl Node {
    /// A node for `config`; nothing is sent until [`Node::connect_first`].
    pub(crate) fn new(
        index: usize,
        config: &RedisNode,
        tls: &crate::client::TlsSettings,
        settings: Arc<Settings>,
        health: Arc<Health>,
    ) -> Result<Arc<Node>> {
        let addr = config.display_addr();
        let client = crate::client::client(config, tls)?;
        Self::with_target(index, addr, Target::Fixed(client), settings, health)
    }

    /// A node for the master that `sentinels` monitor as `spec.master_name`.
    pub(crate) fn new_sentinel(
        sentinels: &[RedisNode],
        spec: &crate::config::SentinelSpec,
        settings: Arc<Settings>,
        health: Arc<Health>,
    ) -> Result<Arc<Node>> {
        let hosts = sentinels
            .iter()
            .map(|n| {
                let addr = n.display_addr();
                addr.trim_start_matches("redis://").to_owned()
            })
            .collect::<Vec<_>>()
            .join(",");
        let addr = if spec.master.db == 0 {
            format!("redis+sentinel://{hosts}/{}", spec.master_name)
        } else {
            format!(
                "redis+sentinel://{hosts}/{}/{}",
                spec.master_name, spec.master.db
            )
        };
        let no_tls = crate::client::TlsSettings::default();
        let sentinel_clients = sentinels
            .iter()
            .map(|n| crate::client::client(&n.clone().db(0), &no_tls))
            .collect::<Result<Vec<_>>>()?;
        let target = Target::Sentinel(SentinelTarget {
            sentinel: tokio::sync::Mutex::new(crate::client::sentinel(sentinels)?),
            sentinel_clients,
            master_name: spec.master_name.clone(),
            info: crate::client::sentinel_node_info(&spec.master),
            sentinels: hosts,
            current: StdMutex::new(None),
        });
        Self::with_target(0, addr, target, settings, health)
    }

    /// A node for the master of one Redis Cluster shard.
    pub(crate) fn new_cluster_shard(
        index: usize,
        addr: String,
        target: ClusterTarget,
        settings: Arc<Settings>,
        health: Arc<Health>,
    ) -> Result<Arc<Node>> {
        Self::with_target(index, addr, Target::Cluster(target), settings, health)
    }

    /// The `host:port` of the master a cluster shard's node last connected to.
    pub(crate) fn cluster_master(&self) -> Option<String> {
        match &self.target {
            Target::Cluster(target) => target
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|(addr, _)| addr.clone()),
            _ => None,
        }
    }

    /// The key that records when this server's data set began, for `recovering()` and the
    /// test hook: the prefix's (`P#tumbler:epoch`), or on a cluster shard one in its own slots.
    fn server_epoch_key(&self) -> String {
        match &self.target {
            Target::Cluster(target) => target.epoch_key.clone(),
            _ => crate::keys::epoch_key(&self.settings.prefix),
        }
    }

    fn with_target(
        index: usize,
        addr: String,
        target: Target,
        settings: Arc<Settings>,
        health: Arc<Health>,
    ) -> Result<Arc<Node>> {
        let runtime = Handle::try_current().map_err(|_| {
            Error::invalid(
                "runtime",
                "the Redis backend needs a tokio runtime; connect from inside one",
            )
        })?;
        Ok(Arc::new(Node {
            index,
            addr,
            target,
            settings,
            slot: StdMutex::new(Slot {
                conn: None,
                gen: 0,
                down: false,
                last_failure: None,
                healing: false,
            }),
            connecting: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            hub: StdMutex::new(HubState::default()),
            health,
            facts: StdMutex::new(ServerFacts::default()),
            warned_until: StdMutex::new(None),
            fast_gen: AtomicU64::new(0),
            side: tokio::sync::Mutex::new(None),
            runtime,
        }))
    }

    /// Marks the node unreachable and keeps trying to connect in the background (after a
    /// failed first connection in Redlock mode).
    pub(crate) fn start_healing(self: &Arc<Self>) {
        let start = {
            let mut slot = self.slot();
            slot.down = true;
            !std::mem::replace(&mut slot.healing, true)
        };
        self.went_down();
        if start {
            self.spawn("redis: reconnect", heal(Arc::downgrade(self)));
        }
    }

    /// Reports the node unreachable; `Lost` follows if it stays so for a TTL.
    fn went_down(&self) {
        if self.health.set(self.index, true) {
            let health = self.health.clone();
            self.spawn("redis: report a long outage", async move {
                tokio::time::sleep(health.ttl).await;
                health.check_lost();
            });
        }
    }

    /// Runs `task` in the background: on the runtime the backend was made on, or, once that
    /// has ended, on another (see [`tumbler_core::cleanup::spawn_detached_on`]).
    fn spawn(&self, what: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        tumbler_core::cleanup::spawn_detached_on(Some(&self.runtime), what, task);
    }

    fn facts(&self) -> MutexGuard<'_, ServerFacts> {
        self.facts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many restarts of the server this node has seen (its run id changed between two
    /// connections); a hold that finds itself gone after one was forgotten by the restart.
    pub(crate) fn restarts(&self) -> u64 {
        self.facts().restarts
    }

    /// A request met the restart delay with `remaining` left: warns once per delay.
    pub(crate) fn note_recovering(&self, remaining: Duration) {
        let now = Instant::now();
        let mut until = self.warned_until.lock().unwrap_or_else(|p| p.into_inner());
        if until.is_some_and(|at| at > now) {
            return;
        }
        *until = Some(now + remaining);
        drop(until);
        tracing::warn!(
            addr = %self.addr,
            remaining_s = remaining.as_secs_f64(),
            "redis may have lost locks in a recent restart, so no lock is granted for another {:.1} s: {}",
            remaining.as_secs_f64(),
            crate::error::RECOVERY_ADVICE
        );
    }

    /// How long the restart delay still refuses grants on this server (`None`: it does not).
    pub(crate) async fn recovering(self: &Arc<Self>) -> Result<Option<Duration>> {
        let delay = self.restart_delay();
        if delay.is_zero() {
            return Ok(None);
        }
        let key = self.server_epoch_key();
        let reply = self
            .eval(
                "reading the restart delay",
                &scripts::RECOVERING,
                &[&key],
                &[&delay.as_millis().to_string()],
            )
            .await?;
        let left = crate::reply::int(&reply)
            .ok_or_else(|| crate::error::bad_reply("restart delay", &reply))?;
        Ok((left > 0).then(|| Duration::from_millis(left.unsigned_abs())))
    }

    /// The restart delay that applies on this server: none when it persists every write
    /// (`appendonly yes`, `appendfsync always`), since a restart then forgets no hold.
    pub(crate) fn restart_delay(&self) -> Duration {
        if self.facts().durable {
            Duration::ZERO
        } else {
            self.settings.restart_delay
        }
    }

    /// Whether an acquisition may take the scripts' fast path (see `lua/acquire_lock.lua`): the
    /// server needs no restart delay, or a grant on the current connection showed it over. A
    /// restart breaks the connection, so the first grant after it takes the slow path again.
    pub(crate) fn fast_path(&self) -> bool {
        if self.restart_delay().is_zero() {
            return true;
        }
        let gen = self.fast_gen.load(Ordering::Relaxed);
        gen != 0 && self.current().is_some_and(|(current, _)| current == gen)
    }

    /// A grant came on connection `gen`: the restart delay is over on its server.
    pub(crate) fn note_granted(&self, gen: u64) {
        self.fast_gen.store(gen, Ordering::Relaxed);
    }

    /// Subscribes every channel that has holders (they subscribe in the background after a
    /// grant); returns once they are.
    pub(crate) async fn settle(self: &Arc<Self>) -> Result<()> {
        let channels = self.hub().all_channels();
        for channel in channels {
            self.ensure_subscribed(&channel).await?;
        }
        Ok(())
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hub(&self) -> MutexGuard<'_, HubState> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first connection, made at once; its error (wrong password, nothing listening) is
    /// returned as it is.
    pub(crate) async fn connect_first(self: &Arc<Self>) -> Result<()> {
        let _guard = self.connecting.lock().await;
        self.connect_now().await.map(|_| ())
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let slot = self.slot();
        slot.conn.clone().map(|c| (slot.gen, c))
    }

    /// The live connection, making a new one if needed.
    pub(crate) async fn connection(self: &Arc<Self>) -> Result<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let _guard = self.connecting.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        if let Some((at, why)) = self.slot().last_failure.clone() {
            if at.elapsed() < RETRY_SPACING {
                return Err(Error::connection(crate::error::BACKEND, &self.addr, why));
            }
        }
        self.connect_now().await
    }

    /// Connects (caller holds `connecting`), subscribes every known channel, installs it.
    async fn connect_now(self: &Arc<Self>) -> Result<(u64, MultiplexedConnection)> {
        let timeout = self.settings.connect_timeout;
        // Every attempt gets its own number, so that a push from a failed attempt's connection
        // can never be taken for one from the connection that replaced it.
        let gen = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(self.settings.request_timeout))
            .set_push_sender(PushRouter {
                node: Arc::downgrade(self),
                gen,
            });
        let attempt = async {
            let client = self.resolve().await?;
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| map(&self.addr, "connecting", e))?;
            let channels = self.hub().all_channels();
            let subscribe = async {
                if channels.is_empty() {
                    return Ok(());
                }
                conn.clone()
                    .subscribe(&channels)
                    .await
                    .map_err(|e| map(&self.addr, "subscribing to lock channels", e))
            };
            let (subscribed, facts) = tokio::join!(subscribe, probe(&conn));
            subscribed?;
            Ok::<_, Error>((conn, facts))
        };
        let outcome = match tokio::time::timeout(timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout {
                operation: "connecting".into(),
                addr: self.addr.clone(),
                after: timeout,
            }),
        };
        let (conn, (run_id, durable, cluster)) = match outcome {
            Ok(connected) => connected,
            Err(error) => {
                self.slot().last_failure = Some((Instant::now(), crate::error::detail(&error)));
                return Err(error);
            }
        };
        if cluster && !matches!(self.target, Target::Cluster(_)) {
            // A plain connection reaches only this node's slots: most locks would fail.
            let host = self.addr.trim_start_matches("redis://");
            return Err(Error::invalid(
                "redis URL",
                format!(
                    "{} is a Redis Cluster node; connect with redis+cluster://{host} (list some of the cluster's nodes)",
                    self.addr
                ),
            ));
        }
        let was_down = {
            let mut slot = self.slot();
            slot.conn = Some(conn.clone());
            slot.gen = gen;
            slot.last_failure = None;
            std::mem::replace(&mut slot.down, false)
        };
        self.learn(run_id, durable);
        self.hub().mark_all_subscribed(gen);
        if was_down {
            tracing::info!(addr = %self.addr, "reconnected to redis");
            self.health.set(self.index, false);
            self.hub().wake_all();
        }
        Ok((gen, conn))
    }

    /// Records what a new connection found out about the server.
    fn learn(&self, run_id: Option<String>, durable: bool) {
        let mut facts = self.facts();
        if let (Some(old), Some(new)) = (&facts.run_id, &run_id) {
            if old != new {
                facts.restarts += 1;
                if matches!(self.target, Target::Sentinel(_) | Target::Cluster(_)) {
                    tracing::warn!(addr = %self.addr, "the sentinels' master is another server now (a failover); holds it did not receive are lost");
                } else {
                    tracing::warn!(addr = %self.addr, "redis restarted (its run id changed); holds it forgot are lost");
                }
            }
        }
        if run_id.is_some() {
            facts.run_id = run_id;
        }
        facts.durable = durable;
    }

    /// Drops connection `gen` after it failed, and starts healing in the background.
    fn invalidate(self: &Arc<Self>, gen: u64, why: &str) {
        let start_healer = {
            let mut slot = self.slot();
            if slot.gen != gen || slot.conn.is_none() {
                return;
            }
            slot.conn = None;
            let newly_down = !std::mem::replace(&mut slot.down, true);
            if newly_down {
                tracing::warn!(addr = %self.addr, why, "lost the connection to redis");
            }
            !std::mem::replace(&mut slot.healing, true)
        };
        self.went_down();
        self.hub().wake_all();
        if start_healer {
            self.spawn("redis: reconnect", heal(Arc::downgrade(self)));
        }
    }

    /// Runs `op` on the connection within the request timeout (which also bounds waiting for
    /// a connection to be made): a server that does not answer in time is
    /// [`Error::Timeout`] with the real time spent, and the node is reported suspended.
    pub(crate) async fn run<T, F, Fut>(self: &Arc<Self>, what: &str, op: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_on(what, op).await.map(|(_, value)| value)
    }

    /// Like [`Node::run`], also telling the generation of the connection that answered.
    pub(crate) async fn run_on<T, F, Fut>(self: &Arc<Self>, what: &str, op: F) -> Result<(u64, T)>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + self.settings.request_timeout;
        let timed_out = || Error::Timeout {
            operation: what.to_owned(),
            addr: self.addr.clone(),
            after: started.elapsed(),
        };
        let (gen, conn) = match tokio::time::timeout_at(deadline, self.connection()).await {
            Ok(connected) => connected?,
            Err(_) => return Err(timed_out()),
        };
        match tokio::time::timeout_at(deadline, op(conn)).await {
            Ok(Ok(value)) => Ok((gen, value)),
            // The connection's own response timeout (the same request timeout) may fire first:
            // the same event, so the same error.
            Ok(Err(error)) if error.is_timeout() => {
                self.invalidate(gen, "request timed out");
                Err(timed_out())
            }
            Ok(Err(error)) if crate::error::is_replica_reply(&error) => {
                // A failover turned the server into a replica: find the master again.
                self.invalidate(gen, "the server is a replica now");
                Err(crate::error::now_replica(&self.addr, what, error))
            }
            Ok(Err(error)) if crate::cluster::is_redirect(&error) => {
                Err(self.redirected(gen, what, error))
            }
            Ok(Err(error)) => {
                if breaks_connection(&error) {
                    self.invalidate(gen, "request failed");
                }
                Err(map(&self.addr, what, error))
            }
            Err(_) => {
                self.invalidate(gen, "request timed out");
                Err(timed_out())
            }
        }
    }

    /// A cluster's redirect (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`) as a transient
    /// [`Error::Connection`]. A `MOVED` is recorded, so the next request on its slot goes to
    /// the shard named, and ends the connection, so the next one goes to the master that serves
    /// the shard now (after a failover the old master answers `MOVED` as a replica).
    fn redirected(self: &Arc<Self>, gen: u64, what: &str, error: redis::RedisError) -> Error {
        let why = match (crate::cluster::moved_to(&error), &self.target) {
            (Some((slot, to)), Target::Cluster(target)) => {
                target.routes.note_moved(slot, to.clone());
                self.invalidate(gen, "the cluster moved a slot");
                format!("the cluster serves slot {slot} from {to} now (a failover or resharding); the next request goes there; retry")
            }
            (Some(_), _) => {
                "a Redis Cluster node answered MOVED; connect with redis+cluster://".to_owned()
            }
            (None, _) => {
                "the cluster is moving this slot or failing over; retry shortly".to_owned()
            }
        };
        Error::connection(
            crate::error::BACKEND,
            &self.addr,
            format!("{what}: {why} ({error})"),
        )
        .with_source(error)
    }

    /// The client for the server to connect to now: the fixed one, or the master the
    /// sentinels name (asked anew; the crate checks that it answers as a master).
    async fn resolve(&self) -> Result<redis::Client> {
        let target = match &self.target {
            Target::Fixed(client) => return Ok(client.clone()),
            Target::Sentinel(target) => target,
            Target::Cluster(target) => return self.resolve_shard(target).await,
        };
        let found = {
            let mut sentinel = target.sentinel.lock().await;
            sentinel
                .async_master_for(&target.master_name, Some(&target.info))
                .await
        };
        let client = match found {
            Ok(client) => client,
            Err(error) => return Err(self.sentinel_error(target, error).await),
        };
        let master = client.get_connection_info().addr().to_string();
        let mut current = target.current.lock().unwrap_or_else(|p| p.into_inner());
        let changed = current.as_ref().is_none_or(|(addr, _)| *addr != master);
        if changed {
            tracing::info!(sentinels = %target.sentinels, master_name = %target.master_name, %master, "redis sentinel names the master");
        }
        *current = Some((master, client.clone()));
        Ok(client)
    }

    /// The client of the master that serves a cluster shard's first slot now, asked of the
    /// master found last and then of the URL's nodes.
    async fn resolve_shard(&self, target: &ClusterTarget) -> Result<redis::Client> {
        let mut ask: Vec<redis::Client> = Vec::new();
        if let Some((_, client)) = target
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            ask.push(client.clone());
        }
        ask.extend(target.seeds.iter().cloned());
        let ranges =
            crate::cluster::slot_map(&ask, &self.addr, self.settings.connect_timeout).await?;
        let range = ranges
            .iter()
            .find(|r| (r.first..=r.last).contains(&target.first))
            .ok_or_else(|| {
                Error::connection(
                    crate::error::BACKEND,
                    &self.addr,
                    format!("no master serves slot {} right now; retry", target.first),
                )
            })?;
        let mut node = target.template.clone();
        node.host = range.host.clone();
        node.port = range.port;
        let client = crate::client::client(&node, &target.tls)?;
        let master = range.master();
        let mut current = target.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_none_or(|(addr, _)| *addr != master) {
            tracing::info!(shard = %self.addr, %master, "redis cluster names the shard's master");
        }
        *current = Some((master, client.clone()));
        Ok(client)
    }

    /// The client of the server the last connection went to (resolved if there was none).
    async fn last_resolved(&self) -> Result<redis::Client> {
        let last = match &self.target {
            Target::Sentinel(target) => target.current.lock().ok().and_then(|c| c.clone()),
            Target::Cluster(target) => target.current.lock().ok().and_then(|c| c.clone()),
            Target::Fixed(_) => None,
        };
        match last {
            Some((_, client)) => Ok(client),
            None => self.resolve().await,
        }
    }

    /// What a failed master lookup means: a master name the sentinels do not monitor
    /// ([`Error::InvalidArgument`], listing the names they do), no sentinel reachable, or a
    /// master that is down right now ([`Error::Connection`]).
    async fn sentinel_error(&self, target: &SentinelTarget, error: redis::RedisError) -> Error {
        let sentinels = &target.sentinels;
        let name = &target.master_name;
        if error.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel {
            if let Some(known) = self.monitored_names(target).await {
                if !known.iter().any(|k| k == name) {
                    let listed = if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    };
                    return Error::invalid(
                        "redis+sentinel master name",
                        format!(
                            "the sentinels at {sentinels} monitor no master named {name:?} (they monitor: {listed}); write one of those as the URL path"
                        ),
                    );
                }
            }
            return Error::connection(
                crate::error::BACKEND,
                &self.addr,
                format!(
                    "the sentinels at {sentinels} know no reachable master {name:?} that answers as a master right now (down, or a failover in progress); retry shortly"
                ),
            );
        }
        if error.kind() == redis::ErrorKind::EmptySentinelList {
            return Error::invalid(
                "redis+sentinel sentinels",
                "no sentinel given; list at least one host",
            );
        }
        if matches!(error.kind(), redis::ErrorKind::AuthenticationFailed)
            || matches!(
                error.code(),
                Some("WRONGPASS" | "NOAUTH" | "INVALIDPASSWORD")
            )
        {
            return map(&self.addr, "asking the sentinels for the master", error);
        }
        let what = if error.to_string().contains("does not point to a sentinel") {
            "a listed server is not a sentinel (a data server's address?); list the sentinels' addresses (redis-server --sentinel, port 26379 by default)"
        } else {
            "no sentinel answered; check the host list and that redis-sentinel runs there"
        };
        Error::connection(
            crate::error::BACKEND,
            &self.addr,
            format!("asking the sentinels at {sentinels} for master {name:?}: {what}: {error}"),
        )
        .with_source(error)
    }

    /// The master names the first sentinel that answers monitors (`SENTINEL MASTERS`).
    async fn monitored_names(&self, target: &SentinelTarget) -> Option<Vec<String>> {
        let limit = self.settings.connect_timeout;
        for client in &target.sentinel_clients {
            let ask = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("MASTERS")
                    .query_async::<Vec<std::collections::HashMap<String, String>>>(&mut conn)
                    .await
            };
            if let Ok(Ok(masters)) = tokio::time::timeout(limit, ask).await {
                return Some(
                    masters
                        .into_iter()
                        .filter_map(|mut m| m.remove("name"))
                        .collect(),
                );
            }
        }
        None
    }

    /// `min_replicas` at connect: the server must have that many replicas connected.
    pub(crate) async fn check_replicas(self: &Arc<Self>) -> Result<()> {
        let wanted = self.settings.min_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let info = self
            .run("reading the replication state", |mut conn| async move {
                redis::cmd("INFO")
                    .arg("replication")
                    .query_async::<String>(&mut conn)
                    .await
            })
            .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if field("role:").as_deref() != Some("master") {
            return Err(Error::invalid(
                "min_replicas",
                format!(
                    "{} is a replica, so it cannot confirm writes to replicas; point the URL at the master (or use redis+sentinel://)",
                    self.addr
                ),
            ));
        }
        let connected = field("connected_slaves:")
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if connected < wanted {
            return Err(Error::invalid(
                "min_replicas",
                format!(
                    "min_replicas={wanted} but the master at {} has {connected} connected replica(s); use min_replicas={connected} or less, or connect more replicas",
                    self.addr
                ),
            ));
        }
        Ok(())
    }

    /// `WAIT min_replicas timeout` on connection `gen`, the one that carried the write to
    /// confirm (`what`). Fine when enough replicas acknowledged; otherwise a transient
    /// [`Error::Connection`] whose source is [`crate::ReplicasMissing`].
    pub(crate) async fn confirm_replicas(self: &Arc<Self>, gen: u64, what: &str) -> Result<()> {
        let wanted = self.settings.min_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let timeout = self.settings.min_replicas_timeout;
        let ms = crate::config::millis(timeout);
        let (answered_on, acked) = self
            .run_on("waiting for replicas (WAIT)", |mut conn| async move {
                redis::cmd("WAIT")
                    .arg(wanted)
                    .arg(ms)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await?;
        if answered_on != gen {
            // WAIT only covers the writes of its own connection.
            return Err(Error::connection(
                crate::error::BACKEND,
                &self.addr,
                format!("the connection broke after {what}, before replicas confirmed it; min_replicas={wanted} could not be checked"),
            ));
        }
        let acked = u32::try_from(acked.max(0)).unwrap_or(u32::MAX);
        if acked >= wanted {
            return Ok(());
        }
        let missing = crate::error::ReplicasMissing {
            wanted,
            acknowledged: acked,
            waited: timeout,
            what: what.to_owned(),
        };
        Err(Error::connection(crate::error::BACKEND, &self.addr, &missing).with_source(missing))
    }

    /// Runs a script (`EVALSHA`, loading it on `NOSCRIPT`).
    pub(crate) async fn eval(
        self: &Arc<Self>,
        what: &str,
        script: &'static redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<Value> {
        self.eval_on(what, script, keys, args)
            .await
            .map(|(_, value)| value)
    }

    /// Like [`Node::eval`], also telling the generation of the connection that answered.
    pub(crate) async fn eval_on(
        self: &Arc<Self>,
        what: &str,
        script: &'static redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<(u64, Value)> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.eval_bytes_on(what, script, keys, &args).await
    }

    /// Like [`Node::eval_on`], with arguments that need not be text (an election's values).
    pub(crate) async fn eval_bytes_on(
        self: &Arc<Self>,
        what: &str,
        script: &'static redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<(u64, Value)> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        self.run_on(what, |mut conn| async move {
            invocation.invoke_async::<Value>(&mut conn).await
        })
        .await
    }

    /// Runs a script on the cleanup connection (made on first use, on the runtime this is
    /// polled on: the cleanup runtime), within the request timeout. Reports nothing to the
    /// connection health: the main connection does that.
    pub(crate) async fn eval_side(
        self: &Arc<Self>,
        script: &'static redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<Value> {
        let timeout = self.settings.request_timeout;
        let mut side = self.side.lock().await;
        let conn = self.side_connection(&mut side).await?;
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = conn;
        match tokio::time::timeout(timeout, invocation.invoke_async::<Value>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                *side = None;
                Err(map(&self.addr, "cleaning up", error))
            }
            Err(_) => {
                *side = None;
                Err(Error::timeout("cleaning up", self.addr.clone(), timeout))
            }
        }
    }

    /// The cleanup connection in `side`, made if there is none.
    async fn side_connection(
        &self,
        side: &mut Option<MultiplexedConnection>,
    ) -> Result<MultiplexedConnection> {
        if let Some(conn) = side.as_ref() {
            return Ok(conn.clone());
        }
        let limit = self.settings.connect_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(Some(self.settings.request_timeout));
        let made = tokio::time::timeout(limit, async {
            let client = self.last_resolved().await?;
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| map(&self.addr, "connecting for cleanups", e))
        })
        .await
        .map_err(|_| Error::timeout("connecting for cleanups", self.addr.clone(), limit))??;
        Ok(side.insert(made).clone())
    }

    /// Makes the cleanup connection in the background if there is none yet.
    pub(crate) fn warm_side(self: &Arc<Self>) {
        if self.side.try_lock().is_ok_and(|side| side.is_some()) {
            return;
        }
        let Some(cleanup) = tumbler_core::cleanup::background_runtime() else {
            return;
        };
        let node = self.clone();
        cleanup.spawn(async move {
            let mut side = node.side.lock().await;
            if let Err(error) = node.side_connection(&mut side).await {
                tracing::debug!(%error, "no cleanup connection yet");
            }
        });
    }

    /// Sets the epoch key so that this server counts as never restarted (a test hook).
    #[cfg(feature = "test-hooks")]
    pub(crate) async fn declare_fresh(self: &Arc<Self>) -> Result<()> {
        let key = self.server_epoch_key();
        self.eval(
            "declaring the server fresh",
            &scripts::DECLARE_FRESH,
            &[&key],
            &[],
        )
        .await
        .map(|_| ())
    }

    /// Whether `channel` is subscribed on the current connection.
    pub(crate) fn is_subscribed(&self, channel: &str) -> bool {
        let gen = match self.current() {
            Some((gen, _)) => gen,
            None => return false,
        };
        self.hub().is_subscribed(channel, gen)
    }

    /// Whether `channel` is subscribed on the current connection and the last acquisition of
    /// its name by this client had to wait: then the next one queues on its first attempt.
    pub(crate) fn expects_contention(&self, channel: &str) -> bool {
        let Some((gen, _)) = self.current() else {
            return false;
        };
        let hub = self.hub();
        hub.is_contended(channel) && hub.is_subscribed(channel, gen)
    }

    /// Records whether an acquisition on `channel`'s name had to wait (see
    /// [`Node::expects_contention`]).
    pub(crate) fn note_contention(&self, channel: &str, waited: bool) {
        self.hub().set_contended(channel, waited);
    }

    /// Subscribes to `channel` unless the current connection already is.
    pub(crate) async fn ensure_subscribed(self: &Arc<Self>, channel: &str) -> Result<()> {
        let (gen, _) = self.connection().await?;
        if self.hub().is_subscribed(channel, gen) {
            return Ok(());
        }
        let owned = channel.to_owned();
        self.run("subscribing to a lock channel", |mut conn| async move {
            conn.subscribe(&owned).await
        })
        .await?;
        self.hub().mark_subscribed(channel, gen);
        Ok(())
    }

    /// Registers a waiter for `grant`/`wake`/`free` messages on `channel`.
    pub(crate) fn add_waiter(self: &Arc<Self>, channel: &str, member: &str) -> WaiterReg {
        self.add_waiter_with(channel, member, Arc::new(Notify::new()))
    }

    /// Like [`Node::add_waiter`], waking `notify` (shared by the nodes of a Redlock wait).
    pub(crate) fn add_waiter_with(
        self: &Arc<Self>,
        channel: &str,
        member: &str,
        notify: Arc<Notify>,
    ) -> WaiterReg {
        let signal = WaitSignal::new(notify);
        self.hub().add_waiter(channel, member, signal.clone());
        WaiterReg {
            node: self.clone(),
            channel: channel.to_owned(),
            member: member.to_owned(),
            signal,
        }
    }

    /// Registers a holder for `revoke`/`gone` messages on `channel`, and subscribes in the
    /// background if needed.
    pub(crate) fn add_holder(
        self: &Arc<Self>,
        channel: &str,
        value: &str,
        notifier: Arc<dyn crate::hub::Notified>,
    ) -> HolderReg {
        self.hub().add_holder(channel, value, notifier);
        if !self.is_subscribed(channel) {
            let node = self.clone();
            let owned = channel.to_owned();
            self.spawn("redis: subscribe a holder", async move {
                if let Err(error) = node.ensure_subscribed(&owned).await {
                    tracing::debug!(%error, "holder subscription failed; revocation falls back to renewals");
                }
            });
        }
        HolderReg {
            node: self.clone(),
            channel: channel.to_owned(),
            value: value.to_owned(),
        }
    }

    /// The last listener left `channel`: unsubscribe once it stayed unused for [`LINGER`].
    fn start_janitor(self: &Arc<Self>, channel: String) {
        let node = Arc::downgrade(self);
        // Called from drop paths (a waiter or holder registration going away): never panics,
        // also when the runtime the backend was made on has ended.
        let janitor = async move {
            let mut pause = LINGER;
            loop {
                tokio::time::sleep(pause).await;
                let Some(node) = node.upgrade() else {
                    return;
                };
                let check = node.hub().janitor_check(&channel, LINGER);
                match check {
                    Janitor::Busy => return,
                    Janitor::Wait(more) => pause = more,
                    Janitor::Retired => {
                        node.unsubscribe(&channel).await;
                        return;
                    }
                }
            }
        };
        self.spawn("redis: retire an idle lock channel", janitor);
    }

    async fn unsubscribe(self: &Arc<Self>, channel: &str) {
        if let Some((gen, mut conn)) = self.current() {
            let done =
                tokio::time::timeout(self.settings.request_timeout, conn.unsubscribe(channel))
                    .await;
            if !matches!(done, Ok(Ok(()))) {
                self.invalidate(gen, "unsubscribe failed");
            }
        }
        // A listener that came back meanwhile may have subscribed before the UNSUBSCRIBE went
        // out: subscribe it again.
        if self.hub().forget_subscription(channel) {
            if let Err(error) = self.ensure_subscribed(channel).await {
                tracing::debug!(%error, "re-subscribing a lock channel failed");
            }
        }
    }

    fn dispatch(&self, data: &[Value]) {
        let (Some(channel), Some(payload)) = (
            data.first().and_then(crate::reply::text),
            data.get(1).and_then(crate::reply::text),
        ) else {
            return;
        };
        self.hub().dispatch(&channel, &payload);
    }
}

/// Asks a new connection for the server's run id and whether it persists every write. Either
/// may be refused (an ACL user without `+info` or `+config`, a renamed `CONFIG`): then the run
/// id is unknown and the server counts as not durable.
async fn probe(conn: &MultiplexedConnection) -> (Option<String>, bool, bool) {
    let (mut a, mut b) = (conn.clone(), conn.clone());
    let mut info_cmd = redis::cmd("INFO");
    info_cmd.arg("server");
    let mut config_cmd = redis::cmd("CONFIG");
    config_cmd.arg("GET").arg("append*");
    let info = info_cmd.query_async::<String>(&mut a);
    let config = config_cmd.query_async::<std::collections::HashMap<String, String>>(&mut b);
    let (info, config) = tokio::join!(info, config);
    let field = |name: &str| {
        info.as_ref().ok().and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
        })
    };
    let run_id = field("run_id:");
    let cluster = field("redis_mode:").is_some_and(|mode| mode == "cluster");
    let durable = config.is_ok_and(|c| {
        c.get("appendonly").map(String::as_str) == Some("yes")
            && c.get("appendfsync").map(String::as_str) == Some("always")
    });
    (run_id, durable, cluster)
}

/// Keeps trying to connect after a loss until it works (or the backend is gone), so that
/// subscriptions come back and `Reconnected` is reported even when nobody sends a request.
async fn heal(node: Weak<Node>) {
    let mut backoff = tumbler_core::retry::Backoff::new(Duration::from_millis(100), MAX_HEAL_PAUSE);
    loop {
        tokio::time::sleep(backoff.next_delay()).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        if node.current().is_some() {
            node.slot().healing = false;
            return;
        }
        match node.connection().await {
            Ok(_) => {
                node.slot().healing = false;
                return;
            }
            Err(error) => {
                tracing::debug!(addr = %node.addr, %error, "redis still unreachable");
            }
        }
    }
}

/// Feeds a connection's push messages to its node.
struct PushRouter {
    node: Weak<Node>,
    gen: u64,
}

impl AsyncPushSender for PushRouter {
    fn send(&self, info: PushInfo) -> std::result::Result<(), SendError> {
        let Some(node) = self.node.upgrade() else {
            return Err(SendError);
        };
        match info.kind {
            PushKind::Message => node.dispatch(&info.data),
            PushKind::Disconnection => node.invalidate(self.gen, "connection closed"),
            _ => {}
        }
        Ok(())
    }
}

/// A waiter's registration; dropping it unregisters.
pub(crate) struct WaiterReg {
    node: Arc<Node>,
    channel: String,
    member: String,
    signal: Arc<WaitSignal>,
}

impl WaiterReg {
    /// Resolves at the next wake-up or grant (one that came since the last call counts).
    pub(crate) async fn woken(&self) {
        self.signal.woken().await
    }

    /// The value of a hold a release handed to this waiter, if its `grant` came (taken once).
    pub(crate) fn take_grant(&self) -> Option<String> {
        self.signal.take_grant()
    }
}

impl Drop for WaiterReg {
    fn drop(&mut self) {
        if self.node.hub().remove_waiter(&self.channel, &self.member) {
            self.node.start_janitor(std::mem::take(&mut self.channel));
        }
    }
}

/// A holder's registration; dropping it unregisters.
pub(crate) struct HolderReg {
    node: Arc<Node>,
    channel: String,
    value: String,
}

impl Drop for HolderReg {
    fn drop(&mut self) {
        if self.node.hub().remove_holder(&self.channel, &self.value) {
            self.node.start_janitor(std::mem::take(&mut self.channel));
        }
    }
}
