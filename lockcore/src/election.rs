//! Leader election: one leader at a time per election, with a term that fences.

use std::time::Duration;

use crate::acquire::{acquire_granted_with_value, acquire_with_value, within, Wait};
use crate::backend::{LeaderInfo, LockKind, SharedBackend};
use crate::error::Result;
use crate::guard::{hold_accessors, HoldCore};
use crate::name::{IntoLockName, LockName};

/// An election: candidates [`campaign`](Election::campaign), at most one of them leads at a
/// time, and anyone can read or follow who leads ([`leader`](Election::leader),
/// [`observe`](Election::observe)).
///
/// The leader's [`term`](Leadership::term) is its hold's fencing token: it strictly increases
/// from one leader to the next (where [`Capabilities::fencing`](crate::Capabilities::fencing)
/// says so), so a resource that rejects writes carrying a lower term than it has seen is safe
/// against a leader that was replaced while it stalled. Leadership is lost as a lock is
/// ([`Leadership::lost`] fires before another candidate can be elected).
///
/// Each store keeps the layout of its reference recipe, so their clients see our leader and we
/// see theirs: etcd's `concurrency.Election` (`etcdctl elect`), Curator's `LeaderLatch`,
/// Consul's leader-election guide (a session and `?acquire=` on the key, the value being the
/// leader's data), and on Redis a layout of our own (see the Redis backend's documentation).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_core::Result<()> {
/// let locks = tumbler_core::memory::connect_new().await?;
/// let election = locks.election("services/indexer")?;
///
/// let mut leadership = election.campaign("worker-a:8080").await?;
/// let term = leadership.term(); // pass it with every write the leader makes
/// assert_eq!(election.leader().await?.map(|l| l.value), Some(b"worker-a:8080".to_vec()));
///
/// leadership.proclaim("worker-a:9090").await?; // same leader, same term, new value
/// assert_eq!(election.leader().await?.map(|l| l.term), Some(term));
///
/// assert!(election.try_campaign("worker-b:8080").await?.is_none()); // a leads
/// leadership.resign().await?;
/// let next = election.try_campaign("worker-b:8080").await?.expect("nobody leads");
/// assert!(next.term() > term);
/// next.resign().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Election {
    backend: SharedBackend,
    name: LockName,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .finish()
    }
}

impl Election {
    /// The election `name` on `backend`. Fails with [`Error::InvalidName`](crate::Error::InvalidName) for a bad name.
    pub fn new(backend: SharedBackend, name: impl IntoLockName) -> Result<Self> {
        Ok(Election {
            backend,
            name: name.into_lock_name()?,
        })
    }

    /// The election's name.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// The backend this election lives on.
    pub fn backend(&self) -> &SharedBackend {
        &self.backend
    }

    /// Waits until this candidate leads, advertising `value` (read by [`Election::leader`]
    /// and by the store's reference clients) while it does.
    ///
    /// Candidates are elected in the order they campaigned, where the store keeps one
    /// ([`Capabilities::fifo`](crate::Capabilities::fifo)).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future before it completes leaves nothing on
    /// the store: the candidate's entry is removed, and a leadership granted at that moment is
    /// resigned in the background.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an empty value or one longer than
    ///   [`Capabilities::max_value_len`](crate::Capabilities::max_value_len), before anything is
    ///   written.
    /// - [`Error::Unsupported`](crate::Error::Unsupported) on a backend without elections.
    /// - [`Error::Connection`](crate::Error::Connection) or [`Error::Timeout`](crate::Error::Timeout) when the store cannot be reached, never by
    ///   waiting for ever.
    /// - [`Error::Conflict`](crate::Error::Conflict) when the name is in use by a lock, or its keys hold data neither
    ///   tumbler nor the store's reference recipe wrote.
    /// - [`Error::Closed`](crate::Error::Closed) after [`LockBackend::shutdown`](crate::LockBackend::shutdown).
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        let value = value.into();
        let core =
            acquire_granted_with_value(&self.backend, &self.name, LockKind::Leader, value.clone())
                .await?;
        Ok(self.leadership(core, value))
    }

    /// Makes one attempt: `Ok(None)` if another candidate leads.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`Election::campaign`] is.
    ///
    /// # Errors
    ///
    /// As [`Election::campaign`]; a store that does not answer within
    /// [`Capabilities::request_timeout`](crate::Capabilities::request_timeout) gives
    /// [`Error::Timeout`](crate::Error::Timeout), never a silent `None`.
    pub async fn try_campaign(&self, value: impl Into<Vec<u8>>) -> Result<Option<Leadership>> {
        self.acquire(value.into(), Wait::No).await
    }

    /// Campaigns for at most `timeout`: `Ok(None)` if this candidate was not elected in time.
    /// A zero timeout makes one attempt.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`Election::campaign`] is.
    ///
    /// # Errors
    ///
    /// As [`Election::campaign`]; running out while the connection is suspended or lost is
    /// [`Error::Timeout`](crate::Error::Timeout) (nobody could tell who leads), on a healthy connection `Ok(None)`.
    pub async fn campaign_timeout(
        &self,
        value: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Option<Leadership>> {
        self.acquire(value.into(), Wait::For(timeout)).await
    }

    /// The current leader (its value, term and store identity), or `None` when nobody leads.
    ///
    /// # Errors
    ///
    /// [`Error::Connection`](crate::Error::Connection) or [`Error::Timeout`](crate::Error::Timeout) when the store cannot be reached,
    /// [`Error::Unsupported`](crate::Error::Unsupported) on a backend without elections, [`Error::Conflict`](crate::Error::Conflict) for data in
    /// the election's keys that no candidate wrote.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        self.require()?;
        within(
            self.backend.capabilities().request_timeout,
            || format!("leader read of election {}", self.name),
            || self.backend.address(),
            self.backend.leader(&self.name),
        )
        .await
    }

    /// Follows the leadership: an [`Observer`] whose [`next`](Observer::next) returns the
    /// current leader first, then each change.
    pub fn observe(&self) -> Observer {
        Observer {
            election: self.clone(),
            seen: None,
            started: false,
        }
    }

    fn require(&self) -> Result<()> {
        let caps = self.backend.capabilities();
        crate::capabilities::require(&caps, "election", caps.election)
    }

    async fn acquire(&self, value: Vec<u8>, wait: Wait) -> Result<Option<Leadership>> {
        let core = acquire_with_value(
            &self.backend,
            &self.name,
            LockKind::Leader,
            value.clone(),
            wait,
        )
        .await?;
        Ok(core.map(|core| self.leadership(core, value)))
    }

    fn leadership(&self, core: HoldCore, value: Vec<u8>) -> Leadership {
        Leadership {
            core,
            value,
            caps: self.backend.capabilities(),
        }
    }
}

/// Follows who leads an election, change by change (etcd's `Observe`, Curator's
/// `LeaderLatchListener`). Made by [`Election::observe`].
///
/// Each [`next`](Observer::next) returns a leadership that differs from the one returned before
/// it: another leader, a value the same leader proclaimed, or `None` when nobody leads. Terms
/// never go backwards. A follower that reads slower than leaders change sees the latest state,
/// not every state in between: leaders that came and went between two reads are skipped (as a
/// ZooKeeper watch or a Consul blocking query skips them).
#[derive(Debug)]
pub struct Observer {
    election: Election,
    seen: Option<LeaderInfo>,
    started: bool,
}

impl Observer {
    /// The current leader on the first call; after that, waits for the next change and returns
    /// it. Cancel safe: a dropped call loses no change (the next call compares with the last
    /// leadership returned).
    ///
    /// # Errors
    ///
    /// [`Error::Connection`](crate::Error::Connection) or [`Error::Timeout`](crate::Error::Timeout) within twice the store's request timeout
    /// when it cannot be reached (call again to go on following), [`Error::Unsupported`](crate::Error::Unsupported) on a
    /// backend without elections.
    pub async fn next(&mut self) -> Result<Option<LeaderInfo>> {
        let leader = if self.started {
            self.election.require()?;
            self.election
                .backend
                .leader_changed(&self.election.name, self.seen.as_ref())
                .await?
        } else {
            self.election.leader().await?
        };
        self.started = true;
        self.seen = leader.clone();
        Ok(leader)
    }

    /// The leadership the last [`next`](Observer::next) returned.
    pub fn last(&self) -> Option<&LeaderInfo> {
        self.seen.as_ref()
    }
}

/// Proof of leading an [`Election`]. [`resign`](Leadership::resign) to step down; dropping it
/// resigns in the background and logs a warning.
///
/// Leadership is a hold: stop leading when [`lost`](Leadership::lost) fires, and pass
/// [`term`](Leadership::term) to every resource the leader writes to.
#[must_use = "leadership is resigned when the guard is dropped"]
pub struct Leadership {
    core: HoldCore,
    value: Vec<u8>,
    caps: crate::Capabilities,
}

hold_accessors!(Leadership, core);

impl Leadership {
    /// The term: this leadership's fencing token, strictly increasing across the leaders of
    /// the election where [`Capabilities::fencing`](crate::Capabilities::fencing) says so.
    pub fn term(&self) -> u64 {
        self.core.token()
    }

    /// The value this leader advertises.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Advertises `value` instead, staying leader with the same term (etcd's `Proclaim`).
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an empty or oversized value (nothing is written).
    /// - [`Error::NotOwner`](crate::Error::NotOwner) when the leadership is already gone on the store.
    /// - [`Error::Connection`](crate::Error::Connection) or [`Error::Timeout`](crate::Error::Timeout) when the store could not confirm the write
    ///   (the old or the new value may be advertised then; proclaim again).
    pub async fn proclaim(&mut self, value: impl Into<Vec<u8>>) -> Result<()> {
        let value = value.into();
        let caps = &self.caps;
        crate::checked::validate_value(self.core.name(), &value, caps)?;
        let (limit, backend) = (caps.request_timeout, caps.backend);
        let name = self.core.name().clone();
        within(
            limit,
            || format!("proclaim in election {name}"),
            || backend.to_owned(),
            self.core.proclaim(&value),
        )
        .await?;
        self.value = value;
        Ok(())
    }

    /// Steps down and reports what the store confirmed: `Ok` only when the store confirmed it,
    /// [`Error::NotOwner`](crate::Error::NotOwner) if the leadership had already been lost.
    pub async fn resign(self) -> Result<()> {
        self.core.release().await
    }

    /// The same as [`resign`](Leadership::resign), named as on every other guard.
    pub async fn release(self) -> Result<()> {
        self.resign().await
    }

    /// When this candidate was elected (local monotonic clock).
    pub fn elected_at(&self) -> std::time::Instant {
        self.core.acquired_at()
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("name", self.core.name())
            .field("term", &self.core.token())
            .finish()
    }
}
