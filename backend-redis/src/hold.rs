//! A granted hold on one Redis server: renewal, release, downgrade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::Instrument;
use tumbler_core::keeper::{HoldSet, HoldTicket, Keeper, KeeperConfig, Renew, Renewal};
use tumbler_core::{
    hold_signals, Error, HeldLock, Hold, HoldSignals, LockName, LostReason, Result,
};

use crate::config::Settings;

use crate::config::millis;
use crate::keys::{Family, Keys};
use crate::node::{HolderReg, Node};
use crate::reply;
use crate::scripts;

/// The holds and acquisitions of a backend instance, for `held_locks()` and `shutdown()`.
pub(crate) struct Registry {
    holds: StdMutex<HashMap<u64, Entry>>,
    next: std::sync::atomic::AtomicU64,
    /// Set by `shutdown()`: waiting acquisitions stop and clean up.
    closing: watch::Sender<bool>,
    /// Acquisitions in flight plus cleanups of cancelled ones that have not finished.
    pending: Arc<watch::Sender<usize>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            holds: StdMutex::default(),
            next: std::sync::atomic::AtomicU64::new(0),
            closing: watch::channel(false).0,
            pending: Arc::new(watch::channel(0).0),
        }
    }
}

/// Counts one acquisition (and then its cleanup) as pending until dropped.
pub(crate) struct Pending {
    pending: Arc<watch::Sender<usize>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

struct Entry {
    name: LockName,
    release: Arc<dyn Releaser>,
    keeper: Arc<Keeper>,
    ticket: Arc<HoldTicket>,
}

impl Registry {
    fn holds(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an acquisition that starts now; keep the value alive (inside its cleanup future)
    /// until the acquisition and any cleanup are done.
    pub(crate) fn start_acquisition(&self) -> Pending {
        self.pending.send_modify(|n| *n += 1);
        Pending {
            pending: self.pending.clone(),
        }
    }

    /// Whether `shutdown()` has begun.
    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once `shutdown()` has begun.
    pub(crate) async fn closing(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|yes| *yes).await;
    }

    /// Stops every waiting acquisition, waits (at most `bound`) until they and the cleanups of
    /// cancelled ones have removed their queue entries, then releases every hold.
    pub(crate) async fn shut_down(&self, bound: std::time::Duration) -> Result<()> {
        self.closing.send_replace(true);
        let mut pending = self.pending.subscribe();
        if tokio::time::timeout(bound, pending.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                pending = *pending.borrow(),
                "shutdown: some waiters' queue entries could not be removed in time; they expire on their own within 3 s"
            );
        }
        self.release_all().await
    }

    pub(crate) fn add(
        &self,
        name: LockName,
        release: Arc<dyn Releaser>,
        keeper: Arc<Keeper>,
        ticket: Arc<HoldTicket>,
    ) -> u64 {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.holds().insert(
            key,
            Entry {
                name,
                release,
                keeper,
                ticket,
            },
        );
        key
    }

    pub(crate) fn remove(&self, key: u64) {
        self.holds().remove(&key);
    }

    /// The names of every live hold.
    pub(crate) fn names(&self) -> Vec<LockName> {
        let mut names: Vec<LockName> = self.holds().values().map(|e| e.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Stops every keeper and releases every hold; their `lost()` fires with `Abandoned`.
    async fn release_all(&self) -> Result<()> {
        let entries: Vec<Entry> = self.holds().drain().map(|(_, e)| e).collect();
        let mut first_error = None;
        for entry in entries {
            entry.keeper.stop();
            entry.ticket.notifier().lost(LostReason::Abandoned);
            match entry.release.release_on_store().await {
                Ok(_) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Removes a hold from the store.
#[async_trait]
pub(crate) trait Releaser: Send + Sync + 'static {
    /// `Ok(true)` released, `Ok(false)` it was no longer ours.
    async fn release_on_store(&self) -> Result<bool>;
}

/// The identity of a hold on the store (changes on downgrade).
#[derive(Debug, Clone)]
struct Ident {
    mode: &'static str,
    value: String,
}

/// One hold on one server.
pub(crate) struct Lease {
    node: Arc<Node>,
    keys: Arc<Keys>,
    family: Family,
    ident: StdMutex<Ident>,
    ticket: Arc<HoldTicket>,
    name: LockName,
    token: u64,
    /// The node's restart count when the hold was granted.
    restarts: u64,
}

impl Lease {
    fn ident(&self) -> Ident {
        self.ident.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_ident(&self, ident: Ident) {
        *self.ident.lock().unwrap_or_else(|p| p.into_inner()) = ident;
    }
}

#[async_trait]
impl Renew for Lease {
    async fn renew(&self) -> Renewal {
        loop {
            let ident = self.ident();
            let outcome = extend(
                &self.node,
                &self.keys,
                self.family,
                ident.mode,
                &ident.value,
                "the renewal",
            )
            .await;
            return match outcome {
                Ok(Some(revoke)) => {
                    let notifier = self.ticket.notifier();
                    if revoke && !notifier.is_lost() {
                        notifier.revoke_requested();
                    }
                    Renewal::Renewed
                }
                // Downgraded meanwhile: renew the new shape at once.
                Ok(None) if self.ident().value != ident.value => continue,
                Ok(None) if self.node.restarts() != self.restarts => {
                    Renewal::Gone(LostReason::ServerRestarted)
                }
                Ok(None) => Renewal::Gone(LostReason::Deleted),
                Err(error) => Renewal::Failed(error),
            };
        }
    }
}

/// Extends the hold `value` (mode `mode`) of `family` to a whole TTL, then, with
/// `min_replicas`, waits for the replicas to confirm it on the same connection (`what`: the
/// write, for the error). `Ok(Some(revoke))`: extended (`revoke`: a revocation is pending);
/// `Ok(None)`: the hold is gone.
pub(crate) async fn extend(
    node: &Arc<Node>,
    keys: &Keys,
    family: Family,
    mode: &str,
    value: &str,
    what: &str,
) -> Result<Option<bool>> {
    let ttl = millis(node.settings.ttl).to_string();
    let (gen, reply) = match family {
        Family::Lock => {
            node.eval_on(
                "renewing a lock",
                &scripts::EXTEND_LOCK,
                &[&keys.lock, &keys.readers, &keys.revoked, &keys.leader],
                &[mode, value, &ttl],
            )
            .await?
        }
        Family::Semaphore => {
            node.eval_on(
                "renewing a semaphore lease",
                &scripts::EXTEND_SEM,
                &[&keys.sem, &keys.sem_limit, &keys.revoked],
                &[value, &ttl],
            )
            .await?
        }
    };
    let extended = reply::extended("renewal", &reply)?;
    if extended.is_some() {
        node.confirm_replicas(gen, what).await?;
    }
    Ok(extended)
}

/// Starts keeping a hold granted by a request sent at `sent`: its deadline
/// (`sent + ttl - drift`, [`tumbler_core::keeper::Validity::redis`]) is on its signals before this returns, and a
/// [`Keeper`] renews it every third of the TTL. `lease` builds the renewer from the hold's
/// ticket (its notifier, for revocation and downgrade).
pub(crate) fn keep<L: Renew>(
    settings: &Settings,
    sent: Instant,
    lease: impl FnOnce(Arc<HoldTicket>) -> Arc<L>,
) -> (Arc<L>, Arc<HoldTicket>, Arc<Keeper>, HoldSignals) {
    let (lease, ticket, keeper, signals, _) = keep_from(settings, sent, lease);
    (lease, ticket, keeper, signals)
}

/// Like [`keep`], also returning the hold set (to publish a deadline from outside the keeper).
fn keep_from<L: Renew>(
    settings: &Settings,
    sent: Instant,
    lease: impl FnOnce(Arc<HoldTicket>) -> Arc<L>,
) -> (
    Arc<L>,
    Arc<HoldTicket>,
    Arc<Keeper>,
    HoldSignals,
    Arc<HoldSet>,
) {
    let (notifier, signals) = hold_signals();
    let holds = HoldSet::new();
    let ticket = Arc::new(holds.register(notifier));
    let lease = lease(ticket.clone());
    let config = KeeperConfig {
        what: "redis hold",
        validity: settings.validity(),
        every: settings.renew_period(),
        // Connection events come from the nodes' health, not from one hold's renewals.
        monitor: None,
    };
    let keeper = Arc::new(Keeper::spawn(config, lease.clone(), holds.clone(), sent));
    (lease, ticket, keeper, signals, holds)
}

/// The first renewal of a handed-off hold: the release granted it only for what was left of
/// the waiter's queue entry (its deadline is `deadline`), so it is renewed halfway there (and
/// tried again halfway through what is left if that fails) rather than a third of a TTL after
/// the grant. A success moves the deadline to a whole validity period from then; a hold found
/// gone is lost at once. Holds released sooner cost nothing (the task is aborted).
fn renew_handed_off(
    settings: &Settings,
    lease: Arc<Lease>,
    holds: Arc<HoldSet>,
    deadline: Instant,
) -> tokio::task::AbortHandle {
    let validity = settings.validity();
    let renewal = async move {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // The keeper reports the loss at the deadline.
                return;
            }
            tokio::time::sleep(left / 2).await;
            let sent = Instant::now();
            match lease.renew().await {
                Renewal::Renewed => {
                    holds.publish_deadline(validity.deadline(sent));
                    return;
                }
                Renewal::Gone(reason) => {
                    holds.lose_all(reason);
                    return;
                }
                Renewal::Failed(error) => {
                    tracing::debug!(%error, "first renewal of a handed-off hold failed; trying again")
                }
            }
        }
    };
    let span = tracing::info_span!("renew", what = "handed-off redis hold");
    tokio::spawn(renewal.instrument(span)).abort_handle()
}

#[async_trait]
impl Releaser for Lease {
    async fn release_on_store(&self) -> Result<bool> {
        let ident = self.ident();
        let keys = &self.keys;
        let reply = match self.family {
            Family::Lock => {
                self.node
                    .eval(
                        "releasing a lock",
                        &scripts::RELEASE_LOCK,
                        &[
                            &keys.lock,
                            &keys.readers,
                            &keys.queue,
                            &keys.queue_exp,
                            &keys.revoked,
                            &keys.fence,
                            &keys.leader,
                            &keys.candidates,
                        ],
                        &[
                            ident.mode,
                            &ident.value,
                            &keys.inbox_prefix,
                            &keys.events,
                            "0",
                        ],
                    )
                    .await?
            }
            Family::Semaphore => {
                self.node
                    .eval(
                        "releasing a semaphore lease",
                        &scripts::RELEASE_SEM,
                        &[
                            &keys.sem,
                            &keys.sem_queue,
                            &keys.sem_queue_exp,
                            &keys.revoked,
                        ],
                        &[&ident.value, &keys.inbox_prefix, &keys.events, "0"],
                    )
                    .await?
            }
        };
        reply::flag("release", &reply)
    }
}

impl Lease {
    /// Release, with foreign data at the keys reported as a conflict on the name.
    async fn release_named(&self) -> Result<bool> {
        self.release_on_store()
            .await
            .map_err(crate::error::for_name(&self.name))
    }
}

/// What a granted acquisition needs to become a [`Hold`].
pub(crate) struct Grant {
    pub(crate) node: Arc<Node>,
    pub(crate) keys: Arc<Keys>,
    pub(crate) family: Family,
    pub(crate) mode: &'static str,
    pub(crate) name: LockName,
    pub(crate) token: u64,
    pub(crate) value: String,
    /// When the granting request was sent.
    pub(crate) sent: Instant,
    /// The node's restart count before the granting request was sent.
    pub(crate) restarts: u64,
    /// Handed over by a release (`sent` then already accounts for the grant's short life):
    /// renewed early (see `renew_handed_off`).
    pub(crate) handed_off: bool,
}

impl Grant {
    /// Starts the keeper and listeners of a granted hold.
    pub(crate) fn into_hold(self, registry: &Arc<Registry>) -> Hold {
        let settings = self.node.settings.clone();
        let (lease, ticket, keeper, signals, holds) = keep_from(&settings, self.sent, |ticket| {
            Arc::new(Lease {
                node: self.node.clone(),
                keys: self.keys.clone(),
                family: self.family,
                ident: StdMutex::new(Ident {
                    mode: self.mode,
                    value: self.value.clone(),
                }),
                ticket,
                name: self.name.clone(),
                token: self.token,
                restarts: self.restarts,
            })
        });
        let early = self.handed_off.then(|| {
            let deadline = settings.validity().deadline(self.sent);
            renew_handed_off(&settings, lease.clone(), holds, deadline)
        });
        let registration = self
            .node
            .add_holder(&self.keys.inbox, &self.value, ticket.clone());
        let registered = registry.add(self.name.clone(), lease.clone(), keeper.clone(), ticket);
        Hold {
            token: self.token,
            held: Box::new(RedisHeld {
                lease,
                keeper: Some(keeper),
                early,
                registration: Some(registration),
                registry: registry.clone(),
                registered,
                released: false,
            }),
            signals,
        }
    }
}

/// The backend's handle on a hold, inside a lockcore guard.
struct RedisHeld {
    lease: Arc<Lease>,
    keeper: Option<Arc<Keeper>>,
    /// The early first renewal of a handed-off hold, until it ran.
    early: Option<tokio::task::AbortHandle>,
    registration: Option<HolderReg>,
    registry: Arc<Registry>,
    registered: u64,
    released: bool,
}

impl RedisHeld {
    fn stop_keeper(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.stop();
        }
        if let Some(early) = self.early.take() {
            early.abort();
        }
    }

    fn finish(&mut self) {
        self.released = true;
        self.registration = None;
        self.registry.remove(self.registered);
    }
}

#[async_trait]
impl HeldLock for RedisHeld {
    async fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.stop_keeper();
        let released = self.lease.release_named().await?;
        self.finish();
        if released {
            Ok(())
        } else {
            Err(Error::NotOwner {
                name: self.lease.name.clone(),
            })
        }
    }

    async fn proclaim(&mut self, value: &[u8]) -> Result<()> {
        let lease = &self.lease;
        let ident = lease.ident();
        if ident.mode != "l" {
            return Err(Error::invalid(
                "proclaim",
                "only a leadership (from Election::campaign) can proclaim a value",
            ));
        }
        if self.released {
            return Err(Error::NotOwner {
                name: lease.name.clone(),
            });
        }
        crate::election::proclaim(&lease.node, &lease.keys, &lease.name, &ident.value, value).await
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        let lease = &self.lease;
        let ident = lease.ident();
        if lease.family != Family::Lock || ident.mode != "w" {
            return Err(Error::invalid(
                "downgrade",
                "only the write side of a read-write lock can be downgraded",
            ));
        }
        if self.released {
            return Err(Error::NotOwner {
                name: lease.name.clone(),
            });
        }
        let id = ident.value.split(':').next().unwrap_or_default();
        let read_value = format!("{id}:r:{}", lease.token);
        let ttl = millis(lease.node.settings.ttl).to_string();
        let keys = &lease.keys;
        let reply = lease
            .node
            .eval(
                "downgrading a write lock",
                &scripts::DOWNGRADE,
                &[&keys.lock, &keys.readers, &keys.queue, &keys.fence],
                &[&ident.value, &read_value, &ttl, &keys.inbox_prefix],
            )
            .await
            .map_err(crate::error::for_name(&lease.name))?;
        if !reply::flag("downgrade", &reply)? {
            return Err(Error::NotOwner {
                name: lease.name.clone(),
            });
        }
        lease.set_ident(Ident {
            mode: "r",
            value: read_value.clone(),
        });
        let registration = lease
            .node
            .add_holder(&keys.inbox, &read_value, lease.ticket.clone());
        let read = RedisHeld {
            lease: lease.clone(),
            keeper: self.keeper.take(),
            early: self.early.take(),
            registration: Some(registration),
            registry: self.registry.clone(),
            registered: self.registered,
            released: false,
        };
        self.released = true;
        self.registration = None;
        Ok(Hold {
            token: lease.token,
            held: Box::new(read),
            signals: lease.ticket.notifier().subscribe(),
        })
    }
}

impl Drop for RedisHeld {
    fn drop(&mut self) {
        self.stop_keeper();
        if !self.released {
            self.registry.remove(self.registered);
        }
    }
}
