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

use lockcore::{ConnectionEvent, ConnectionMonitor, Error, Result};
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisResult, Value};
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};

use crate::config::{RedisNode, Settings};
use crate::error::{breaks_connection, map};
use crate::hub::{HubState, Janitor};
use crate::scripts;

/// How long a channel stays subscribed after its last listener left (saves a
/// `SUBSCRIBE`/`UNSUBSCRIBE` pair per acquisition when a name is locked again and again).
const LINGER: Duration = Duration::from_secs(10);
/// After a failed connection attempt, requests fail at once for this long instead of trying
/// again (the healer keeps trying in the background).
const RETRY_SPACING: Duration = Duration::from_millis(100);
/// The healer's longest pause between connection attempts.
const MAX_HEAL_PAUSE: Duration = Duration::from_secs(2);

/// Connection health of every node of one backend, published as [`ConnectionEvent`]s:
/// `Suspended` when the first node becomes unreachable, `Reconnected` when all are back.
pub(crate) struct Health {
    pub(crate) monitor: ConnectionMonitor,
    down: StdMutex<Vec<bool>>,
    reconnects: watch::Sender<u64>,
}

impl Health {
    pub(crate) fn new(nodes: usize) -> Self {
        Health {
            monitor: ConnectionMonitor::new(),
            down: StdMutex::new(vec![false; nodes]),
            reconnects: watch::channel(0).0,
        }
    }

    /// Changes whenever a node was connected again after a loss (watchdogs renew at once).
    pub(crate) fn reconnects(&self) -> watch::Receiver<u64> {
        self.reconnects.subscribe()
    }

    fn set(&self, index: usize, down: bool) {
        let mut all = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let was_any = all.iter().any(|d| *d);
        if let Some(slot) = all.get_mut(index) {
            *slot = down;
        }
        let is_any = all.iter().any(|d| *d);
        drop(all);
        match (was_any, is_any) {
            (false, true) => {
                self.monitor.emit(ConnectionEvent::Suspended);
            }
            (true, false) => {
                self.monitor.emit(ConnectionEvent::Reconnected);
            }
            _ => {}
        }
    }
}

/// The current connection of a node.
struct Slot {
    conn: Option<MultiplexedConnection>,
    gen: u64,
    down: bool,
    last_failure: Option<(Instant, String)>,
    healing: bool,
}

/// One Redis server: connection, subscriptions, health.
pub(crate) struct Node {
    index: usize,
    pub(crate) addr: String,
    client: redis::Client,
    pub(crate) settings: Arc<Settings>,
    slot: StdMutex<Slot>,
    connecting: tokio::sync::Mutex<()>,
    attempts: AtomicU64,
    hub: StdMutex<HubState>,
    health: Arc<Health>,
    runtime: Handle,
}

impl Node {
    /// A node for `config`; nothing is sent until [`Node::connect_first`].
    pub(crate) fn new(
        index: usize,
        config: &RedisNode,
        tls: &crate::tls::TlsSettings,
        settings: Arc<Settings>,
        health: Arc<Health>,
    ) -> Result<Arc<Node>> {
        let addr = config.display_addr();
        let client = crate::tls::client(config, tls)?;
        let runtime = Handle::try_current().map_err(|_| {
            Error::invalid(
                "runtime",
                "the Redis backend needs a tokio runtime; connect from inside one",
            )
        })?;
        Ok(Arc::new(Node {
            index,
            addr,
            client,
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
            runtime,
        }))
    }

    /// The health tracker this node reports to.
    pub(crate) fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Marks the node unreachable and keeps trying to connect in the background (after a
    /// failed first connection in Redlock mode).
    pub(crate) fn start_healing(self: &Arc<Self>) {
        let start = {
            let mut slot = self.slot();
            slot.down = true;
            !std::mem::replace(&mut slot.healing, true)
        };
        self.health.set(self.index, true);
        if start {
            self.runtime.spawn(heal(Arc::downgrade(self)));
        }
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
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| map(&self.addr, "connecting", e))?;
            let channels = self.hub().all_channels();
            if !channels.is_empty() {
                conn.subscribe(&channels)
                    .await
                    .map_err(|e| map(&self.addr, "subscribing to lock channels", e))?;
            }
            Ok::<_, Error>(conn)
        };
        let outcome = match tokio::time::timeout(timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout {
                operation: "connecting".into(),
                addr: self.addr.clone(),
                after: timeout,
            }),
        };
        let conn = match outcome {
            Ok(conn) => conn,
            Err(error) => {
                self.slot().last_failure = Some((Instant::now(), error.to_string()));
                return Err(error);
            }
        };
        let was_down = {
            let mut slot = self.slot();
            slot.conn = Some(conn.clone());
            slot.gen = gen;
            slot.last_failure = None;
            std::mem::replace(&mut slot.down, false)
        };
        self.hub().mark_all_subscribed(gen);
        if was_down {
            tracing::info!(addr = %self.addr, "reconnected to redis");
            self.health.set(self.index, false);
            self.health.reconnects.send_modify(|n| *n += 1);
            self.hub().wake_all();
        }
        Ok((gen, conn))
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
        self.health.set(self.index, true);
        self.hub().wake_all();
        if start_healer {
            self.runtime.spawn(heal(Arc::downgrade(self)));
        }
    }

    /// Runs `op` on the connection within the request timeout.
    pub(crate) async fn run<T, F, Fut>(self: &Arc<Self>, what: &str, op: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (gen, conn) = self.connection().await?;
        let timeout = self.settings.request_timeout;
        match tokio::time::timeout(timeout, op(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if breaks_connection(&error) {
                    self.invalidate(gen, "request failed");
                }
                Err(map(&self.addr, what, error))
            }
            Err(_) => {
                self.invalidate(gen, "request timed out");
                Err(Error::Timeout {
                    operation: what.to_owned(),
                    addr: self.addr.clone(),
                    after: timeout,
                })
            }
        }
    }

    /// Runs a script (`EVALSHA`, loading it on `NOSCRIPT`).
    pub(crate) async fn eval(
        self: &Arc<Self>,
        what: &str,
        script: &'static redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<Value> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        self.run(what, |mut conn| async move {
            invocation.invoke_async::<Value>(&mut conn).await
        })
        .await
    }

    /// Sets the epoch key so that this server counts as never restarted.
    pub(crate) async fn declare_fresh(self: &Arc<Self>, prefix: &str) -> Result<()> {
        let key = crate::keys::epoch_key(prefix);
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

    /// Registers a waiter for `wake`/`free` messages on `channel`.
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
        self.hub().add_waiter(channel, member, notify.clone());
        WaiterReg {
            node: self.clone(),
            channel: channel.to_owned(),
            member: member.to_owned(),
            notify,
        }
    }

    /// Registers a holder for `revoke`/`gone` messages on `channel`, and subscribes in the
    /// background if needed.
    pub(crate) fn add_holder(
        self: &Arc<Self>,
        channel: &str,
        value: &str,
        notifier: Arc<lockcore::HoldNotifier>,
    ) -> HolderReg {
        self.hub().add_holder(channel, value, notifier);
        if !self.is_subscribed(channel) {
            let node = self.clone();
            let owned = channel.to_owned();
            self.runtime.spawn(async move {
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
        self.runtime.spawn(async move {
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
        });
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

/// Keeps trying to connect after a loss until it works (or the backend is gone), so that
/// subscriptions come back and `Reconnected` is reported even when nobody sends a request.
async fn heal(node: Weak<Node>) {
    let mut pause = Duration::from_millis(100);
    loop {
        tokio::time::sleep(pause).await;
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
                pause = (pause * 2).min(MAX_HEAL_PAUSE);
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
    notify: Arc<Notify>,
}

impl WaiterReg {
    /// Resolves at the next wake-up (one that came since the last call counts).
    pub(crate) async fn woken(&self) {
        self.notify.notified().await
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
