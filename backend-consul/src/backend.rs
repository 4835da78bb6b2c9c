//! [`ConsulBackend`]: the `LockBackend` over one Consul agent.

use std::sync::Arc;

use async_trait::async_trait;
use tumbler_core::{
    AcquireRequest, Capabilities, ConnectionEvents, Fencing, Hold, LeaderInfo, LockBackend,
    LockKind, LockName, LockState, Result,
};

use crate::api::{Api, Behavior, Health, SessionSpec, BACKEND};
use crate::config::ConsulConfig;
use crate::gates::Gates;
use crate::layout::Layout;
use crate::mutex::HeldKeys;
use crate::session::Sessions;

/// The largest value Consul's KV store takes (512 KiB, its `kv_max_value_size` default): the
/// longest value a campaign or proclaim may advertise.
pub const MAX_VALUE_LEN: usize = 512 * 1024;

/// What every part of the backend shares.
pub(crate) struct Inner {
    pub(crate) api: Arc<Api>,
    pub(crate) sessions: Sessions,
    pub(crate) layout: Layout,
    pub(crate) gates: Arc<Gates>,
    pub(crate) held: Arc<HeldKeys>,
    pub(crate) config: ConsulConfig,
}

/// Distributed locks on a Consul agent: mutexes on the api.Lock protocol, semaphores on
/// api.Semaphore's layout, read-write locks of tumbler's own design, and leader elections on
/// Consul's leader-election guide (see the crate docs).
///
/// One session per backend (TTL and lock-delay from the [`ConsulConfig`]) carries every mutex
/// and read-write hold; each semaphore lease and each queued mutex waiter has a session of its
/// own. Use it through lockcore's handles:
///
/// ```no_run
/// # async fn demo() -> tumbler_core::Result<()> {
/// let locks = tumbler_consul::connect_url("consul://127.0.0.1:8500?ttl=15s&lock_delay=1s").await?;
/// let guard = locks.mutex("jobs/nightly")?.lock().await?;
/// tokio::select! {
///     reason = guard.lost() => eprintln!("stop: {reason}"),
///     _ = async { /* work, passing guard.fencing_token() to the resource */ } => {}
/// }
/// guard.release().await?;
/// # Ok(()) }
/// ```
pub struct ConsulBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConsulBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulBackend")
            .field("address", &self.inner.api.address())
            .field("prefix", &self.inner.layout.prefix())
            .finish_non_exhaustive()
    }
}

impl ConsulBackend {
    /// Checks `config`, creates the backend's session (which proves the agent is reachable and
    /// the token works) and starts renewing it.
    pub async fn connect(config: ConsulConfig) -> Result<ConsulBackend> {
        config.validate()?;
        let health = Arc::new(Health::new());
        let api = Arc::new(Api::new(&config, health)?);
        let main_spec = SessionSpec {
            name: config.session_name.clone(),
            ttl: config.session_ttl,
            lock_delay: config.lock_delay,
            behavior: Behavior::Release,
        };
        let temp_spec = SessionSpec {
            name: format!("{} (waiter or semaphore lease)", config.session_name),
            ttl: config.session_ttl,
            lock_delay: std::time::Duration::ZERO,
            behavior: Behavior::Delete,
        };
        let sessions = Sessions::new(api.clone(), main_spec, temp_spec);
        sessions.main().await?;
        Ok(ConsulBackend {
            inner: Arc::new(Inner {
                api,
                sessions,
                layout: Layout::new(config.prefix.clone()),
                gates: Arc::new(Gates::default()),
                held: Arc::new(HeldKeys::default()),
                config,
            }),
        })
    }

    /// The settings this backend runs with.
    pub fn config(&self) -> &ConsulConfig {
        &self.inner.config
    }

    /// The ID of the backend's own session (mutex and read-write holds), if it is live.
    pub async fn session_id(&self) -> Option<String> {
        self.inner
            .sessions
            .main_if_live()
            .await
            .map(|s| s.id().to_string())
    }

    /// The IDs of every live session of this backend: its own, and those of semaphore leases
    /// and queued waiters.
    pub fn session_ids(&self) -> Vec<String> {
        self.inner.sessions.ids()
    }

    /// The KV key of the mutex `name` (`<prefix><name>/.lock`), e.g. to point `consul lock`
    /// or Go's `api.LockKey` at it.
    pub fn mutex_key(&self, name: &LockName) -> Result<String> {
        Ok(self.inner.layout.folder(name)?.lock_key())
    }

    /// The KV key of the election `name` (`<prefix><name>/leader`, the key Consul's
    /// leader-election guide recommends as `service/<service name>/leader`), e.g. for clients
    /// that follow the guide with the HTTP API.
    pub fn election_key(&self, name: &LockName) -> Result<String> {
        Ok(self.inner.layout.folder(name)?.leader_key())
    }

    /// Destroys the session `id` on the agent, whoever owns it (an operator's action: its keys
    /// are released, or deleted, and put under its lock-delay).
    pub async fn destroy_session(&self, id: &str) -> Result<()> {
        self.inner.api.session_destroy(id).await
    }

    fn check_open(&self) -> Result<()> {
        self.inner.sessions.check_open()
    }
}

#[async_trait]
impl LockBackend for ConsulBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(BACKEND)
            .with_fifo(false)
            .with_fencing(Fencing::StrictlyIncreasing)
            .with_rwlock(true)
            .with_semaphore(true)
            .with_revocation(true)
            .with_lists_waiters(true)
            .with_election(true)
            .with_max_value_len(MAX_VALUE_LEN)
            .with_crash_release_bound(Some(self.inner.config.crash_release_bound()))
            .with_waiter_release_bound(Some(self.inner.config.waiter_release_bound()))
            .with_request_timeout(self.inner.config.request_timeout)
    }

    fn address(&self) -> String {
        self.inner.api.address().to_string()
    }

    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        self.check_open()?;
        let inner = &self.inner;
        match request.kind {
            LockKind::Exclusive => crate::mutex::acquire(inner, &request.name, request.wait).await,
            LockKind::Read => {
                crate::rwlock::acquire(inner, &request.name, false, request.wait).await
            }
            LockKind::Write => {
                crate::rwlock::acquire(inner, &request.name, true, request.wait).await
            }
            // lockcore validated the permits (`tumbler_core::validate`) before calling us.
            LockKind::Permits { limit, count } => {
                crate::semaphore::acquire(inner, &request.name, limit, count, request.wait).await
            }
            LockKind::Leader => {
                crate::election::campaign(inner, &request.name, request.value, request.wait).await
            }
        }
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        self.check_open()?;
        let folder = self.inner.layout.folder(name)?;
        crate::state::state(&self.inner.api, name, &folder).await
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        self.check_open()?;
        let folder = self.inner.layout.folder(name)?;
        crate::state::request_revoke(&self.inner.api, name, &folder).await
    }

    async fn leader(&self, name: &LockName) -> Result<Option<LeaderInfo>> {
        self.check_open()?;
        crate::election::leader(&self.inner, name).await
    }

    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&LeaderInfo>,
    ) -> Result<Option<LeaderInfo>> {
        self.check_open()?;
        crate::election::leader_changed(&self.inner, name, seen).await
    }

    fn connection_events(&self) -> ConnectionEvents {
        self.inner.api.health().subscribe()
    }

    /// Destroys every session of this backend (its own, every semaphore lease's and every
    /// queued waiter's): every hold is released at once and reports `lost()`
    /// ([`tumbler_core::LostReason::Abandoned`]), every waiting acquisition ends with
    /// [`tumbler_core::Error::Closed`], and later calls fail with [`tumbler_core::Error::Closed`]. Call it before the
    /// process exits: a session that is not destroyed keeps its locks until Consul invalidates
    /// it (2 × TTL) plus the lock-delay.
    async fn shutdown(&self) -> Result<()> {
        if self.inner.sessions.is_closed() {
            return Ok(());
        }
        self.inner.sessions.refuse_new();
        let released = self.inner.held.release_all(&self.inner.api).await;
        let closed = self.inner.sessions.close().await;
        released.and(closed)
    }
}
