//! [`ZkBackend`]: the `LockBackend` implementation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tumbler_core::{
    AcquireRequest, Capabilities, ConnectionEvents, Error, Fencing, Hold, LeaderInfo, LockBackend,
    LockKind, LockName, LockState, Result,
};
use zookeeper_client as zk;

use crate::config::ZkConfig;
use crate::error::{convert_for, session_gone, BACKEND};
use crate::hold::Env;
use crate::layout::{Layout, Role};
use crate::nodes::AclPolicy;
use crate::queue::Attempt;
use crate::sessions::Sessions;
use crate::{election, inspect, queue, semaphore};

/// The longest campaign value: ZooKeeper refuses packets over `jute.maxbuffer` (1 MiB minus one
/// byte by default), and a create carries the path, the ACL and headers besides the data; 48 KiB
/// is left for those.
pub const MAX_VALUE_LEN: usize = 1_000_000;

/// A client of a ZooKeeper ensemble holding locks with Curator's recipes, so that Java services
/// using Curator and Rust services using tumbler exclude each other on the same paths.
///
/// - Mutex: InterProcessMutex (`_c_<uuid>-lock-<seq>` ephemeral sequential nodes, the lowest
///   holds, each waiter watches only its predecessor). Read-write lock: InterProcessReadWriteLock
///   (`__READ__`/`__WRIT__`). Semaphore: InterProcessSemaphoreV2 (`locks`/`leases`).
/// - Fencing token: the lock node's creation zxid, strictly increasing across the ensemble.
/// - `lost()` fires when the session expires, when the lock node is deleted by someone else,
///   and when no heartbeat (a `sync` through the leader, every few hundred milliseconds) has
///   succeeded for the session timeout minus a margin of a third of it, at least one second
///   (another client may hold the lock once the servers expire the session). A session that
///   reconnects in time, to the same or another server, keeps its locks and fires nothing.
/// - `request_revoke` writes Curator's `__REVOKE__` marker into the holders' nodes (never into
///   a leader's, whose data is its value).
/// - Election: Curator's LeaderLatch (`_c_<uuid>-latch-<seq>` ephemeral sequential nodes whose
///   data is the participant id, i.e. the campaign value; the lowest leads, each candidate
///   watches only its predecessor). The term is the leader node's creation zxid. Values are at
///   most [`MAX_VALUE_LEN`] bytes. `proclaim` writes the node's data; beware that a Curator
///   LeaderLatch already waiting directly behind the proclaiming leader loses its watch on that
///   write (LeaderLatch re-arms only on a deletion) and notices the leader's resignation only
///   when its own connection is next re-established. tumbler's own candidates are unaffected.
///
/// ```no_run
/// # async fn demo() -> tumbler_core::Result<()> {
/// let locks = tumbler_zookeeper::connect_url("zk://127.0.0.1:2181/locks?session_timeout=6s").await?;
/// let guard = locks.mutex("jobs/nightly")?.lock().await?;
/// println!("fencing token {}", guard.fencing_token());
/// tokio::select! {
///     reason = guard.lost() => eprintln!("stop: {reason}"),
///     _ = async { /* the protected work */ } => {}
/// }
/// guard.release().await?;
/// # Ok(()) }
/// ```
pub struct ZkBackend {
    config: ZkConfig,
    layout: Layout,
    sessions: Arc<Sessions>,
    env: Env,
    negotiated: Duration,
}

impl std::fmt::Debug for ZkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkBackend")
            .field("config", &self.config)
            .field("session", &self.sessions.peek().map(|s| s.id()))
            .finish()
    }
}

impl ZkBackend {
    /// Connects with `config`: opens the first session, failing with a typed error within the
    /// connect timeout when no server answers.
    pub async fn connect(config: ZkConfig) -> Result<Arc<ZkBackend>> {
        let sessions = Sessions::connect(config.clone()).await?;
        let negotiated = sessions
            .peek()
            .map(|s| s.timeout())
            .unwrap_or(config.session_timeout);
        let acl = if config.credentials.is_some() {
            AclPolicy::Secure
        } else {
            AclPolicy::Open
        };
        Ok(Arc::new(ZkBackend {
            layout: Layout::new(config.base()),
            env: Env {
                addr: config.address().into(),
                acl,
            },
            config,
            sessions,
            negotiated,
        }))
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &ZkConfig {
        &self.config
    }

    /// The session timeout the servers granted to the first session.
    pub fn negotiated_session_timeout(&self) -> Duration {
        self.negotiated
    }

    /// The current session id as ZooKeeper prints it (`0x...`), if a session is open.
    pub fn session_id(&self) -> Option<String> {
        self.sessions.peek().map(|s| s.id().to_string())
    }

    /// The znode folder of lock `name` (the path to give Curator for the same lock).
    pub fn lock_path(&self, name: &LockName) -> Result<String> {
        Ok(self.layout.dir(name))
    }

    /// Fault injection for tests (cargo feature `test-hooks`): has the servers reached through `hosts` (a connect string)
    /// end this backend's current session now, as an expiry would: a second connection
    /// attaches to the session and closes it, which deletes its ephemeral nodes. Returns once
    /// the servers confirmed; this backend notices when it next reaches them, and its holds
    /// then report `lost()` with [`tumbler_core::LostReason::SessionExpired`].
    ///
    /// Cut this backend's own route to the servers first (e.g. with a fault proxy) and restore
    /// it afterwards: otherwise its client reconnects at once and wins the session back before
    /// the second connection can close it.
    #[cfg(feature = "test-hooks")]
    pub async fn expire_session_at(&self, hosts: &str) -> Result<()> {
        let session = self
            .sessions
            .peek()
            .ok_or(Error::Closed { backend: BACKEND })?;
        self.close_session(&session, hosts).await
    }

    /// The session to work on `name` with, opening a new one if needed, within the request
    /// timeout: a store that does not serve is an error, not a wait for the connect timeout.
    async fn session_for(&self, name: &LockName) -> Result<Arc<crate::session::Session>> {
        let started = tokio::time::Instant::now();
        let limit = self.config.request_limit();
        match tokio::time::timeout(limit, self.sessions.current()).await {
            Ok(session) => session,
            Err(_) => Err(Error::Timeout {
                operation: format!("opening a zookeeper session for {name}"),
                addr: self.env.addr.to_string(),
                after: started.elapsed(),
            }),
        }
    }

    #[cfg(feature = "test-hooks")]
    async fn close_session(&self, session: &crate::session::Session, hosts: &str) -> Result<()> {
        let what = "attaching to the session to expire";
        let info = session
            .info()
            .map_err(|e| crate::error::convert(e, &self.env.addr, what))?;
        let limit = self.config.connect_timeout.min(self.negotiated * 2);
        let attached = tokio::time::timeout(
            limit,
            self.config.connector()?.with_session(info).connect(hosts),
        )
        .await
        .map_err(|_| Error::Timeout {
            operation: what.into(),
            addr: hosts.to_owned(),
            after: limit,
        })?
        .map_err(|e| crate::error::convert(e, hosts, what))?;
        // Dropping the only handle sends CloseSession; wait until the servers answered it.
        let mut states = attached.state_watcher();
        drop(attached);
        let closing = async {
            while !states.state().is_terminated() {
                states.changed().await;
            }
        };
        tokio::time::timeout(self.config.request_limit(), closing)
            .await
            .map_err(|_| Error::Timeout {
                operation: "closing the session to expire".into(),
                addr: hosts.to_owned(),
                after: self.config.request_limit(),
            })
    }
}

#[async_trait]
impl LockBackend for ZkBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(BACKEND)
            .with_fifo(true)
            .with_fencing(Fencing::StrictlyIncreasing)
            .with_rwlock(true)
            .with_semaphore(true)
            .with_revocation(true)
            .with_lists_waiters(true)
            .with_election(true)
            .with_max_value_len(MAX_VALUE_LEN)
            // The servers expire a session on the first tick after its timeout; a tick is at
            // most half the shortest timeout they accept.
            .with_crash_release_bound(Some(self.negotiated * 3 / 2))
            // A killed waiter's node goes with its session, as in Curator: the servers expire
            // it on the first tick after the timeout (tickTime is 2 s by default and at most
            // half the shortest session timeout they accept).
            .with_waiter_release_bound(Some(
                self.negotiated + (self.negotiated / 2).min(Duration::from_secs(2)),
            ))
            .with_request_timeout(self.config.request_limit())
    }

    fn address(&self) -> String {
        self.env.addr.to_string()
    }

    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        let AcquireRequest {
            name,
            kind,
            wait,
            value,
        } = request;
        let dir = self.layout.dir(&name);
        if let LockKind::Permits { count, .. } = kind {
            semaphore::check_permits(count)?;
        }
        loop {
            let session = self.session_for(&name).await?;
            let role = match kind {
                LockKind::Exclusive => Role::Mutex,
                LockKind::Read => Role::Read,
                LockKind::Write => Role::Write,
                LockKind::Leader => Role::Leader,
                LockKind::Permits { limit, count } => {
                    match semaphore::attempt(&self.env, &session, &name, &dir, (limit, count), wait)
                        .await?
                    {
                        Attempt::Done(outcome) => return Ok(outcome),
                        Attempt::Again => {
                            tracing::debug!(name = %name, "session lost while acquiring; trying again");
                            continue;
                        }
                    }
                }
            };
            let attempt =
                queue::attempt(&self.env, &session, &name, &dir, (role, &value), wait).await?;
            match attempt {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Again => {
                    tracing::debug!(name = %name, "session lost while acquiring; trying again")
                }
            }
        }
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        let dir = self.layout.dir(name);
        let session = self.session_for(name).await?;
        let started = tokio::time::Instant::now();
        inspect::state(&session, name, &dir).await.map_err(|e| {
            convert_for(
                e,
                &self.env.addr,
                name,
                &format!("state of {name}"),
                started,
            )
        })
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        let dir = self.layout.dir(name);
        let session = self.session_for(name).await?;
        let started = tokio::time::Instant::now();
        inspect::request_revoke(&session, &dir).await.map_err(|e| {
            convert_for(
                e,
                &self.env.addr,
                name,
                &format!("revoke of {name}"),
                started,
            )
        })
    }

    async fn leader(&self, name: &LockName) -> Result<Option<LeaderInfo>> {
        let dir = self.layout.dir(name);
        let what = || format!("leader of {name}");
        loop {
            let session = self.session_for(name).await?;
            let started = tokio::time::Instant::now();
            match election::leader(&session, &dir).await {
                Ok(found) => return found.map_err(|refusal| refusal.into_error(name)),
                // A read needs no particular session: ask again on the next one.
                Err(error) if session_gone(&error) && !matches!(error, zk::Error::AuthFailed) => {
                    continue
                }
                Err(error) => {
                    return Err(convert_for(error, &self.env.addr, name, &what(), started))
                }
            }
        }
    }

    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&LeaderInfo>,
    ) -> Result<Option<LeaderInfo>> {
        let dir = self.layout.dir(name);
        let what = || format!("watching the leader of {name}");
        loop {
            let session = self.session_for(name).await?;
            let started = tokio::time::Instant::now();
            match election::changed(&session, &dir, seen).await {
                Ok(Attempt::Done(found)) => {
                    return found.map_err(|refusal| refusal.into_error(name))
                }
                Ok(Attempt::Again) => {
                    tracing::debug!(name = %name, "session lost while watching the leader; again")
                }
                Err(error) if session_gone(&error) && !matches!(error, zk::Error::AuthFailed) => {
                    continue
                }
                Err(error) => {
                    return Err(convert_for(error, &self.env.addr, name, &what(), started))
                }
            }
        }
    }

    fn connection_events(&self) -> ConnectionEvents {
        self.sessions.monitor().subscribe()
    }

    async fn shutdown(&self) -> Result<()> {
        self.sessions.shutdown().await;
        Ok(())
    }
}
