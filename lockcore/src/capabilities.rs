//! What each backend offers, so callers and the conformance suite can tell.

use std::time::Duration;

/// What a fencing token from this backend guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    /// Tokens for one name strictly increase across every acquisition by every client of the
    /// store, so a resource that rejects lower tokens is safe against stale holders.
    StrictlyIncreasing,
    /// Tokens usually increase but the store cannot promise it (for example Redlock, where a
    /// restarted master forgets its counter). Do not rely on them for safety.
    BestEffort,
    /// No tokens; `fencing_token()` returns 0.
    None,
}

/// The features and guarantees of one backend.
///
/// Build one with [`Capabilities::new`] and the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend's name, e.g. `"memory"` or `"redis"`.
    pub backend: &'static str,
    /// Waiters are served in arrival order.
    pub fifo: bool,
    /// What fencing tokens guarantee.
    pub fencing: Fencing,
    /// Read-write locks are available.
    pub rwlock: bool,
    /// Semaphores are available.
    pub semaphore: bool,
    /// `request_revoke` reaches holders.
    pub revocation: bool,
    /// Locks are taken on a majority of independent masters (Redlock).
    pub redlock: bool,
    /// `state()` can list waiters (not only holders).
    pub lists_waiters: bool,
    /// After a holder crashes, its lock is free again within this bound (TTL, session timeout,
    /// lock-delay), if the backend has one.
    pub crash_release_bound: Option<Duration>,
    /// How long a killed waiter can keep a free lock from others at most (Redis, etcd: a few
    /// seconds whatever the TTL; ZooKeeper: the session timeout), if bounded.
    pub waiter_release_bound: Option<Duration>,
    /// The longest one store request may take before it counts as failed: lockcore bounds
    /// `try_lock` by it and reports [`crate::Error::Timeout`] with the real elapsed time.
    pub request_timeout: Duration,
    /// Elections are available ([`crate::Election`]).
    pub election: bool,
    /// The longest value a campaign or a proclaim may advertise, in bytes (the store's limit on
    /// one value, less what its layout adds).
    pub max_value_len: usize,
}

impl Capabilities {
    /// Capabilities with nothing optional enabled.
    pub const fn new(backend: &'static str) -> Self {
        Capabilities {
            backend,
            fifo: false,
            fencing: Fencing::None,
            rwlock: false,
            semaphore: false,
            revocation: false,
            redlock: false,
            lists_waiters: false,
            crash_release_bound: None,
            waiter_release_bound: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            election: false,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
        }
    }

    /// Sets [`Capabilities::fifo`].
    pub const fn with_fifo(mut self, yes: bool) -> Self {
        self.fifo = yes;
        self
    }
    /// Sets [`Capabilities::fencing`].
    pub const fn with_fencing(mut self, fencing: Fencing) -> Self {
        self.fencing = fencing;
        self
    }
    /// Sets [`Capabilities::rwlock`].
    pub const fn with_rwlock(mut self, yes: bool) -> Self {
        self.rwlock = yes;
        self
    }
    /// Sets [`Capabilities::semaphore`].
    pub const fn with_semaphore(mut self, yes: bool) -> Self {
        self.semaphore = yes;
        self
    }
    /// Sets [`Capabilities::revocation`].
    pub const fn with_revocation(mut self, yes: bool) -> Self {
        self.revocation = yes;
        self
    }
    /// Sets [`Capabilities::redlock`].
    pub const fn with_redlock(mut self, yes: bool) -> Self {
        self.redlock = yes;
        self
    }
    /// Sets [`Capabilities::lists_waiters`].
    pub const fn with_lists_waiters(mut self, yes: bool) -> Self {
        self.lists_waiters = yes;
        self
    }
    /// Sets [`Capabilities::crash_release_bound`].
    pub const fn with_crash_release_bound(mut self, bound: Option<Duration>) -> Self {
        self.crash_release_bound = bound;
        self
    }
    /// Sets [`Capabilities::waiter_release_bound`].
    pub const fn with_waiter_release_bound(mut self, bound: Option<Duration>) -> Self {
        self.waiter_release_bound = bound;
        self
    }
    /// Sets [`Capabilities::request_timeout`].
    pub const fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// Sets [`Capabilities::election`].
    pub const fn with_election(mut self, yes: bool) -> Self {
        self.election = yes;
        self
    }
    /// Sets [`Capabilities::max_value_len`].
    pub const fn with_max_value_len(mut self, bytes: usize) -> Self {
        self.max_value_len = bytes;
        self
    }
}

/// [`Capabilities::max_value_len`] unless a backend sets its own: 512 KiB, Consul's limit on
/// one value and below ZooKeeper's (1 MiB) and etcd's (1.5 MiB).
pub const DEFAULT_MAX_VALUE_LEN: usize = 512 * 1024;

/// [`Capabilities::request_timeout`] unless a backend sets its own.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails with [`crate::Error::Unsupported`] unless `present`.
pub(crate) fn require(
    caps: &Capabilities,
    capability: &'static str,
    present: bool,
) -> crate::Result<()> {
    if present {
        Ok(())
    } else {
        Err(crate::Error::Unsupported {
            capability,
            backend: caps.backend,
        })
    }
}
