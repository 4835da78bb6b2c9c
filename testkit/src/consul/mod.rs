//! An in-process Consul HTTP API test server: the part of Consul that lock clients use.
//!
//! No Consul build can be installed where tumbler's tests run, so the Consul backend's
//! conformance suite runs against this server. It is written from Consul's documented and
//! observed behaviour (the session and KV endpoints, `api/lock.go`, `api/semaphore.go`, the
//! state store and session-TTL sources) so that a client written against it also works against
//! a real Consul agent (set `CONSUL_HTTP_ADDR` to use one instead).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use testkit::consul::ConsulServer;
//! let server = ConsulServer::start().await?;
//! let base = server.url(); // "http://127.0.0.1:PORT"
//! # let _ = base;
//! # Ok(()) }
//! ```
//!
//! # What it models
//!
//! - **Sessions** (`/v1/session/create|destroy|renew|info|list|node`): `Name`, `Node` (only the
//!   one registered node), `LockDelay` (default 15s; a string Go duration or a number of
//!   nanoseconds, values below 1000 taken as seconds; enforcement capped at 60s), `Behavior`
//!   `release`|`delete`, `TTL` between 10s and 24h (or `0`/empty for none; otherwise 500 with
//!   Consul's text). Renew answers the session array, or 404 `Session id '…' not found`.
//!   Destroy answers `true`, also for unknown IDs. A TTL session is invalidated when `TTL × 2`
//!   passes without a renewal, as Consul's session timers do.
//! - **KV** (`/v1/kv/<key>`): `GET` (JSON array with `LockIndex`, `Key`, `Flags`, base64
//!   `Value`, `Session` when held, `CreateIndex`, `ModifyIndex`; `?raw`, `?recurse`, `?keys`
//!   with `?separator`; 404 when nothing matches), `PUT` (`?flags=`, `?cas=`, `?acquire=`,
//!   `?release=`, answering `true`/`false`), `DELETE` (`?recurse`, `?cas=`). Conflicting
//!   flags give 400, an unknown session on `?acquire=` gives 500, an unparsable `?flags=` or
//!   `?cas=` gives 500 with Go's `strconv` text, a value over 512 KiB gives 413.
//! - **Locks**: an acquire by the holder keeps `LockIndex`, a new acquire increments it, a
//!   release keeps it and clears `Session`. Invalidation (destroy, TTL expiry,
//!   [`ConsulServer::invalidate_session`]) releases held keys (or deletes them with
//!   `Behavior=delete`) and puts them under lock-delay; a `?release=` does not. A plain or CAS
//!   `PUT` keeps a key's `Session` but resets its `LockIndex` to 0, exactly as Consul does.
//! - **Indexes and blocking queries**: one global Raft-like index taken by every write;
//!   `X-Consul-Index` (never 0), `X-Consul-KnownLeader` and `X-Consul-LastContact` on every
//!   read; `?index=&wait=` long polls on KV keys, prefixes, session info and lists, woken only
//!   by changes to what they read, with Consul's default (5 min) and maximum (10 min) wait and
//!   wait/16 jitter. `?stale` and `?consistent` are accepted (and conflict, as in Consul).
//! - **ACLs, minimally**: with [`ConsulServerOptions::acl_token`] set, requests must carry that
//!   token (`X-Consul-Token`, `?token=` or `Authorization: Bearer`); another token gets 403
//!   `ACL not found`; no token acts as Consul's anonymous token under a default-deny policy
//!   (403 `Permission denied…` for reads of one key and for writes, filtered-out results for
//!   lists).
//! - `/v1/status/leader`, `/v1/status/peers` and a minimal `/v1/agent/self` for health checks.
//!
//! # What it does not model
//!
//! - Raft, leader election, multiple servers, stale reads, `X-Consul-LastContact` other than 0,
//!   and multiple datacenters (`?dc=` is ignored).
//! - Health checks: `Checks`, `NodeChecks` and `ServiceChecks` are accepted and echoed but never
//!   evaluated, and check IDs are not validated (Consul rejects unknown ones). Only TTL expiry
//!   and [`ConsulServer::invalidate_session`] invalidate a session.
//! - ACL policies, roles and the ACL endpoints: one master token or none.
//! - Transactions (`/v1/txn`), the catalog, services, agent endpoints other than a minimal
//!   `/v1/agent/self`, events, prepared queries, snapshots, namespaces and partitions.
//! - Tombstone reaping (Consul forgets tombstones after `tombstone_ttl`), Go's path cleaning
//!   redirects (`//` or `..` in a key), the KV key character restrictions of the newest Consul
//!   releases, and keys that are not valid UTF-8.
//! - Server-requested TTL increases on renew (Consul may hand out a larger TTL under load).
//! - Persistence: all state is in memory and gone when the server is dropped.
//!
//! # Deviations you can switch on
//!
//! [`ConsulServerOptions::min_session_ttl`] (default 10s, as Consul) can be lowered so tests of
//! TTL invalidation don't wait 20+ seconds; the query wait limits can be lowered likewise. Both
//! are off by default.
//!
//! # Fault hooks
//!
//! [`ConsulServer::invalidate_session`], [`ConsulServer::pause`] / [`ConsulServer::resume`],
//! [`ConsulServer::cut_connections`] and [`ConsulServer::counters`].

mod blocking;
mod duration;
mod http;
mod random;
mod state;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::{AbortHandle, JoinHandle};

use blocking::WaitLimits;
use random::Rng;
use state::{lock_store, Store, StoreConfig};

pub use duration::{format_go_duration, parse_go_duration};
pub use state::{DEFAULT_LOCK_DELAY, MAX_LOCK_DELAY, SESSION_TTL_MAX, SESSION_TTL_MULTIPLIER};

/// Consul's default smallest session TTL (`session_ttl_min`).
pub const DEFAULT_MIN_SESSION_TTL: Duration = Duration::from_secs(10);
/// Consul's default blocking-query wait when `?wait` is absent.
pub const DEFAULT_QUERY_WAIT: Duration = Duration::from_secs(5 * 60);
/// Consul's largest blocking-query wait.
pub const MAX_QUERY_WAIT: Duration = Duration::from_secs(10 * 60);
/// Consul's default largest KV value (`kv_max_value_size`).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 512 * 1024;

/// How to run a [`ConsulServer`]. The defaults are Consul's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulServerOptions {
    /// When set, ACLs are on (default deny) and this is the one token with full rights.
    pub acl_token: Option<String>,
    /// Smallest accepted non-zero session TTL. Consul: 10s. **Lowering it is a deviation**
    /// meant for tests of TTL invalidation; off by default.
    pub min_session_ttl: Duration,
    /// Blocking-query wait used when `?wait` is absent. Consul: 5 min.
    pub default_query_wait: Duration,
    /// Largest blocking-query wait (before jitter). Consul: 10 min.
    pub max_query_wait: Duration,
    /// The agent's node name: the one registered node, the default `Node` of new sessions.
    pub node_name: String,
    /// The datacenter name reported by `/v1/agent/self`.
    pub datacenter: String,
    /// Largest KV value accepted by `PUT` (Consul: 512 KiB); larger bodies get 413.
    pub max_value_size: usize,
}

impl Default for ConsulServerOptions {
    fn default() -> Self {
        ConsulServerOptions {
            acl_token: None,
            min_session_ttl: DEFAULT_MIN_SESSION_TTL,
            default_query_wait: DEFAULT_QUERY_WAIT,
            max_query_wait: MAX_QUERY_WAIT,
            node_name: "tumbler-consul-test".to_string(),
            datacenter: "dc1".to_string(),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
        }
    }
}

impl ConsulServerOptions {
    /// Requires `token` on every request (see [`ConsulServerOptions::acl_token`]).
    pub fn with_acl_token(mut self, token: impl Into<String>) -> Self {
        self.acl_token = Some(token.into());
        self
    }

    /// Lowers (or raises) the smallest accepted session TTL. A deviation from Consul.
    pub fn with_min_session_ttl(mut self, ttl: Duration) -> Self {
        self.min_session_ttl = ttl;
        self
    }

    /// Sets the default and the largest blocking-query wait.
    pub fn with_query_waits(mut self, default_wait: Duration, max_wait: Duration) -> Self {
        self.default_query_wait = default_wait;
        self.max_query_wait = max_wait;
        self
    }

    /// Sets the agent's node name.
    pub fn with_node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = name.into();
        self
    }
}

/// Requests the server has received, by endpoint (counted on arrival, also while paused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounters {
    /// `GET /v1/kv/…` (single key, `?recurse`, `?keys`).
    pub kv_get: u64,
    /// `PUT /v1/kv/…` (set, CAS, acquire, release).
    pub kv_put: u64,
    /// `DELETE /v1/kv/…`.
    pub kv_delete: u64,
    /// `PUT /v1/session/create`.
    pub session_create: u64,
    /// `PUT /v1/session/destroy/…`.
    pub session_destroy: u64,
    /// `PUT /v1/session/renew/…`.
    pub session_renew: u64,
    /// `GET /v1/session/info/…`.
    pub session_info: u64,
    /// `GET /v1/session/list`.
    pub session_list: u64,
    /// `GET /v1/session/node/…`.
    pub session_node: u64,
    /// Anything else.
    pub other: u64,
    /// Of all the above, the reads that asked to block (`?index=` greater than 0).
    pub blocking: u64,
    /// Every request.
    pub total: u64,
}

/// Which counter a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    KvGet,
    KvPut,
    KvDelete,
    SessionCreate,
    SessionDestroy,
    SessionRenew,
    SessionInfo,
    SessionList,
    SessionNode,
    Other,
}

#[derive(Debug, Default)]
struct Counters {
    by_endpoint: [AtomicU64; 10],
    blocking: AtomicU64,
    total: AtomicU64,
}

impl Counters {
    fn slot(endpoint: Endpoint) -> usize {
        match endpoint {
            Endpoint::KvGet => 0,
            Endpoint::KvPut => 1,
            Endpoint::KvDelete => 2,
            Endpoint::SessionCreate => 3,
            Endpoint::SessionDestroy => 4,
            Endpoint::SessionRenew => 5,
            Endpoint::SessionInfo => 6,
            Endpoint::SessionList => 7,
            Endpoint::SessionNode => 8,
            Endpoint::Other => 9,
        }
    }

    fn count(&self, endpoint: Endpoint, blocking: bool) {
        self.by_endpoint[Self::slot(endpoint)].fetch_add(1, Ordering::Relaxed);
        if blocking {
            self.blocking.fetch_add(1, Ordering::Relaxed);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestCounters {
        let get = |e: Endpoint| self.by_endpoint[Self::slot(e)].load(Ordering::Relaxed);
        RequestCounters {
            kv_get: get(Endpoint::KvGet),
            kv_put: get(Endpoint::KvPut),
            kv_delete: get(Endpoint::KvDelete),
            session_create: get(Endpoint::SessionCreate),
            session_destroy: get(Endpoint::SessionDestroy),
            session_renew: get(Endpoint::SessionRenew),
            session_info: get(Endpoint::SessionInfo),
            session_list: get(Endpoint::SessionList),
            session_node: get(Endpoint::SessionNode),
            other: get(Endpoint::Other),
            blocking: self.blocking.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for c in &self.by_endpoint {
            c.store(0, Ordering::Relaxed);
        }
        self.blocking.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
    }
}

/// State shared by the accept loop, the connections, the TTL reaper and the handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Bumped (with the new index) after every committed write; blocking queries wait on it.
    changes: watch::Sender<u64>,
    /// `true` while paused.
    paused: watch::Sender<bool>,
    /// Wakes the TTL reaper when sessions may expire earlier than it planned.
    reaper: Notify,
    counters: Counters,
    rng: Mutex<Rng>,
    options: ConsulServerOptions,
}

impl Shared {
    /// Runs a write against the store and wakes whoever waits on what it changed.
    pub(crate) fn write<R>(&self, op: impl FnOnce(&mut Store, Instant) -> R) -> R {
        let (result, before, after) = {
            let mut st = lock_store(&self.store);
            let before = st.index();
            let result = op(&mut st, Instant::now());
            (result, before, st.index())
        };
        if after != before {
            self.changes.send_replace(after);
            self.reaper.notify_one();
        }
        result
    }

    /// Locks the store for a read.
    pub(crate) fn read(&self) -> MutexGuard<'_, Store> {
        lock_store(&self.store)
    }

    pub(crate) fn store(&self) -> &Mutex<Store> {
        &self.store
    }

    pub(crate) fn changes(&self) -> &watch::Sender<u64> {
        &self.changes
    }

    pub(crate) fn options(&self) -> &ConsulServerOptions {
        &self.options
    }

    pub(crate) fn wait_limits(&self) -> WaitLimits {
        WaitLimits {
            default_wait: self.options.default_query_wait,
            max_wait: self.options.max_query_wait,
        }
    }

    /// A number in `[0, 1)` for blocking-query jitter.
    pub(crate) fn jitter(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next_f64()
    }

    pub(crate) fn count(&self, endpoint: Endpoint, blocking: bool) {
        self.counters.count(endpoint, blocking);
    }

    /// Returns once the server is not paused.
    pub(crate) async fn wait_unpaused(&self) {
        let mut rx = self.paused.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|paused| !*paused).await;
    }
}

/// Open connections, so they can be cut and closed on drop.
#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, AbortHandle>>,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Aborts every open connection; returns how many there were.
    fn abort_all(&self) -> usize {
        let handles: Vec<AbortHandle> = self.lock().drain().map(|(_, h)| h).collect();
        for h in &handles {
            h.abort();
        }
        handles.len()
    }
}

/// Removes a connection from the open set when its task ends (or is aborted).
struct ConnectionGuard {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

/// A running in-process Consul HTTP API server on `127.0.0.1:<free port>`.
///
/// Dropping it stops the server: the listener, every open connection (including long-polls in
/// flight) and the session TTL timer task are aborted.
pub struct ConsulServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    connections: Arc<Connections>,
    accept_task: JoinHandle<()>,
    reaper_task: JoinHandle<()>,
}

impl std::fmt::Debug for ConsulServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulServer")
            .field("addr", &self.addr)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl ConsulServer {
    /// Starts a server with Consul's default settings on a free loopback port.
    pub async fn start() -> io::Result<ConsulServer> {
        Self::start_with(ConsulServerOptions::default()).await
    }

    /// Starts a server with the given options on a free loopback port.
    pub async fn start_with(options: ConsulServerOptions) -> io::Result<ConsulServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let rng = Rng::from_entropy();
        let store = Store::new(
            StoreConfig {
                node_name: options.node_name.clone(),
                min_session_ttl: options.min_session_ttl,
            },
            Rng::from_entropy(),
        );
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            changes: watch::Sender::new(0),
            paused: watch::Sender::new(false),
            reaper: Notify::new(),
            counters: Counters::default(),
            rng: Mutex::new(rng),
            options,
        });
        let connections = Arc::new(Connections::default());
        let accept_task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            Arc::clone(&connections),
        ));
        let reaper_task = tokio::spawn(reap_sessions(Arc::clone(&shared)));
        Ok(ConsulServer {
            addr,
            shared,
            connections,
            accept_task,
            reaper_task,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:PORT"`, the form `CONSUL_HTTP_ADDR` takes.
    pub fn http_addr(&self) -> String {
        self.addr.to_string()
    }

    /// `"http://127.0.0.1:PORT"`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The options the server runs with.
    pub fn options(&self) -> &ConsulServerOptions {
        &self.shared.options
    }

    /// Invalidates a session now, as if its health check failed or its TTL ran out: held keys
    /// are released (or deleted with `Behavior=delete`) and put under lock-delay. Returns
    /// whether the session existed.
    pub fn invalidate_session(&self, id: &str) -> bool {
        self.shared.write(|st, now| st.session_invalidate(id, now))
    }

    /// The IDs of all live sessions, ordered.
    pub fn session_ids(&self) -> Vec<String> {
        self.shared
            .read()
            .session_list()
            .1
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    /// How long `key` will still refuse `?acquire=` because of a lock-delay, if at all.
    pub fn lock_delay_remaining(&self, key: &str) -> Option<Duration> {
        self.shared.read().lock_delay_remaining(key, Instant::now())
    }

    /// The current global (Raft-like) index.
    pub fn index(&self) -> u64 {
        self.shared.read().index()
    }

    /// Stops answering: connections are still accepted and requests read, but no request is
    /// handled, and no response (including long-polls that finish meanwhile) is sent, until
    /// [`ConsulServer::resume`]. Session TTLs keep running, as for a client partitioned from a
    /// healthy server.
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Answers again after [`ConsulServer::pause`]; held requests proceed.
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Whether the server is paused.
    pub fn is_paused(&self) -> bool {
        *self.shared.paused.borrow()
    }

    /// Closes every open client connection at once (requests in flight get no answer); the
    /// server keeps accepting new ones. Returns how many connections were cut.
    pub fn cut_connections(&self) -> usize {
        self.connections.abort_all()
    }

    /// Requests received so far.
    pub fn counters(&self) -> RequestCounters {
        self.shared.counters.snapshot()
    }

    /// Sets every request counter back to 0.
    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }
}

impl Drop for ConsulServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.reaper_task.abort();
        self.connections.abort_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, connections: Arc<Connections>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: back off briefly and keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = connections.next_id.fetch_add(1, Ordering::Relaxed);
        let guard = ConnectionGuard {
            connections: Arc::clone(&connections),
            id,
        };
        let conn_shared = Arc::clone(&shared);
        // Not under the registry lock: a runtime shutting down drops the task at once inside
        // `spawn`, and its guard takes that lock (a deadlock when it was held here).
        let task = tokio::spawn(async move {
            let _guard = guard;
            let service = service_fn(move |req| {
                let shared = Arc::clone(&conn_shared);
                async move { Ok::<_, Infallible>(http::handle(shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut open = connections.lock();
        open.insert(id, task.abort_handle());
        // A task that already ended dropped its guard before it was registered: nothing will
        // remove it but us. One still running removes itself when it ends (it waits for this
        // lock, so it comes after the insert).
        if task.is_finished() {
            open.remove(&id);
        }
    }
}

/// Invalidates TTL sessions when `TTL × 2` passes without a renewal.
async fn reap_sessions(shared: Arc<Shared>) {
    loop {
        let next = shared.write(|st, now| {
            st.expire_sessions(now);
            st.next_expiry()
        });
        match next {
            Some(when) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(when)) => {}
                    _ = shared.reaper.notified() => {}
                }
            }
            None => shared.reaper.notified().await,
        }
    }
}
