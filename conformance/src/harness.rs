//! How the suite reaches a backend under test: clients, capabilities and fault hooks.
//!
//! One [`Harness`] per backend (memory, each mutant, Redis, ZooKeeper, etcd, Consul). A hook a
//! backend cannot provide returns [`HookError::Unsupported`] with the reason, and every test
//! that needs it reports itself skipped with that reason.

use std::time::Duration;

use async_trait::async_trait;
use tumbler_core::{LockName, SharedBackend};

/// A client under test: one connection and session, as a separate process would have.
#[derive(Clone)]
pub struct TestClient {
    /// The client's backend.
    pub locks: SharedBackend,
    /// The harness's number for this client (for its fault hooks).
    pub index: usize,
}

/// Why a fault hook did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// The backend cannot provide this hook; the reason is reported with the skipped test.
    Unsupported(String),
    /// The hook was attempted and failed (that fails the test).
    Failed(String),
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookError::Unsupported(why) => write!(f, "unsupported: {why}"),
            HookError::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Shorthand for a hook result.
pub type HookResult<T = ()> = Result<T, HookError>;

/// Store data tumbler did not write, put where a lock keeps its records by
/// [`Harness::write_foreign`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Foreign {
    /// A record of the wrong type or shape at the lock's own key or node (e.g. a Redis hash at
    /// the lock key).
    WrongType,
    /// Text that is not a number in the lock's fencing counter.
    GarbageCounter,
    /// A fencing counter at the largest value the store can hold, so the next increment
    /// overflows.
    OverflowCounter,
}

impl Foreign {
    /// Every kind of foreign data.
    pub const ALL: [Foreign; 3] = [
        Foreign::WrongType,
        Foreign::GarbageCounter,
        Foreign::OverflowCounter,
    ];
}

/// A lock holder outside the test's own clients (a separate process for real stores), used to
/// crash or pause a holder for real.
#[async_trait]
pub trait Holder: Send + Sync {
    /// The fencing token the holder was granted.
    fn token(&self) -> u64;
    /// Kills the holder without any cleanup (SIGKILL).
    async fn kill(&mut self) -> HookResult;
    /// Stops the holder (SIGSTOP): it neither renews nor notices anything.
    async fn pause(&mut self) -> HookResult;
    /// Continues a paused holder (SIGCONT).
    async fn resume(&mut self) -> HookResult;
    /// Waits up to `within` for the holder to report that its `lost()` fired.
    async fn wait_lost(&mut self, within: Duration) -> HookResult<bool>;
}

/// A backend under test.
///
/// Only [`Harness::name`], [`Harness::client`] and [`Harness::crash_release_bound`] are
/// required; every fault hook defaults to unsupported.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The backend's name in reports, e.g. `"redis"` or `"mutant:no-owner-check"`.
    fn name(&self) -> String;

    /// A fresh client with its own connection and session.
    async fn client(&self) -> Result<TestClient, String>;

    /// How long after a holder crashes its lock must be free again: TTL or session timeout,
    /// plus lock-delay, plus generous slack for a loaded machine.
    fn crash_release_bound(&self) -> Duration;

    /// The longest a hold stays valid on the store without a renewal: the lock TTL, lease TTL
    /// or session timeout (without slack). Defaults to [`Harness::crash_release_bound`].
    fn hold_ttl(&self) -> Duration {
        self.crash_release_bound()
    }

    /// How long after a waiting process is killed it may still keep a free lock from others,
    /// whatever its hold TTL, plus slack for a loaded machine (issue 12 A.2: 3 s on Redis and
    /// etcd, the session timeout on ZooKeeper). Defaults to [`Harness::crash_release_bound`].
    fn killed_waiter_bound(&self) -> Duration {
        self.crash_release_bound()
    }

    /// How long one request to the store may take before the backend gives up with a timeout
    /// or connection error (the client's request or operation timeout, as configured by the
    /// harness). Calls on an unreachable store must return within this plus their own limit.
    fn request_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// Whether [`Harness::expire_session`] deletes the holds (stores without sessions, such as
    /// Redis, where the hook is a forced release) rather than expiring a session.
    fn expiry_is_deletion(&self) -> bool {
        false
    }

    /// Expires `client`'s session, lease or TTL from the store's side, now.
    async fn expire_session(&self, client: &TestClient) -> HookResult {
        let _ = client;
        Err(HookError::Unsupported("no hook to expire a session".into()))
    }

    /// Cuts `client`'s connection to the store (every open connection reset, new ones
    /// refused or black-holed) until [`Harness::heal_connection`].
    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        let _ = client;
        Err(HookError::Unsupported(
            "no fault proxy in front of this store".into(),
        ))
    }

    /// Restores a connection cut by [`Harness::cut_connection`].
    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        let _ = client;
        Err(HookError::Unsupported(
            "no fault proxy in front of this store".into(),
        ))
    }

    /// Starts a holder that takes the mutex `name` and keeps it until killed.
    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        let _ = name;
        Err(HookError::Unsupported(
            "no holder process for this store".into(),
        ))
    }

    /// Starts a holder that campaigns in the election `name` and leads it until killed (its
    /// [`Holder::token`] is its term).
    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        let _ = name;
        Err(HookError::Unsupported(
            "no leader process for this store".into(),
        ))
    }

    /// Starts a separate process that connects with a hold TTL (or session timeout) of `ttl`
    /// where the store has one, prints that it is about to wait, and waits for the mutex
    /// `name` until killed. [`Holder::token`] is 0 (it holds nothing yet).
    async fn spawn_waiter(&self, name: &LockName, ttl: Duration) -> HookResult<Box<dyn Holder>> {
        let _ = (name, ttl);
        Err(HookError::Unsupported(
            "no waiter process for this store".into(),
        ))
    }

    /// Stalls the whole store (SIGSTOP of every server process): connections stay open, nothing
    /// answers, until [`Harness::resume_server`].
    async fn pause_server(&self) -> HookResult {
        Err(HookError::Unsupported(
            "the store's servers cannot be stopped by the test".into(),
        ))
    }

    /// Continues a store stalled by [`Harness::pause_server`].
    async fn resume_server(&self) -> HookResult {
        Err(HookError::Unsupported(
            "the store's servers cannot be stopped by the test".into(),
        ))
    }

    /// Writes data tumbler did not write where the lock `name` keeps its records, as another
    /// program or an operator might (see [`Foreign`]). Unsupported where the store has no such
    /// record (e.g. no fencing counter).
    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        let _ = (name, what);
        Err(HookError::Unsupported(
            "no hook to write foreign data into this store".into(),
        ))
    }

    /// URLs for this store that `tumbler_locks::connect` must refuse with
    /// [`tumbler_core::Error::InvalidArgument`] (issue 12 A.8: duplicate Redlock masters and their
    /// aliases, port 0, credentials given twice), each with what is wrong with it.
    fn bad_urls(&self) -> HookResult<Vec<(String, &'static str)>> {
        Err(HookError::Unsupported("this store takes no URL".into()))
    }

    /// Restarts the store. Stores without persistence forget every hold.
    async fn restart_server(&self) -> HookResult {
        Err(HookError::Unsupported(
            "the store cannot be restarted by the test".into(),
        ))
    }

    /// Connects with a lock TTL or session timeout of `ttl` (used with absurd values, which
    /// must give a typed error).
    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        let _ = ttl;
        Err(HookError::Unsupported(
            "no TTL setting for this store".into(),
        ))
    }

    /// Connects to an address where no store listens; must fail with a typed error, quickly.
    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
        Err(HookError::Unsupported(
            "the store has no network address".into(),
        ))
    }
}
