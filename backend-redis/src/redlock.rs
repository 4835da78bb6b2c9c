//! Redlock: a mutex held on a majority of independent Redis masters.
//!
//! An acquisition runs the single-server acquire script on every master at once (one id for
//! all), each within the request timeout. It holds when a majority granted it and the time
//! spent is still below the validity (`ttl - drift`); otherwise whatever was granted is removed
//! on every master and, when waiting, the acquisition tries again: at once when a master
//! announces a release (`free` on the lock's `events` channel), after a random pause below
//! `retry_delay` after a split vote, and at the latest when the holder's key would expire.
//! When fewer than a majority of masters answer at all, a single attempt fails at once with
//! [`Error::Connection`] saying how many answered; a waiting acquisition keeps trying for one
//! TTL first.
//!
//! Renewal extends the key on every master and counts a majority; release runs on every
//! master. Redlock mode offers mutexes only, and is not fair (no queue spans the masters).
//!
//! # Why Redlock's fencing tokens are best effort
//!
//! Each master keeps its own token counter (see the crate docs on fencing tokens), and a hold's
//! token is the largest of the tokens its majority granted. Two holders' majorities overlap in
//! at least one master, but the largest token of the earlier holder may come from a master the
//! later holder did not use, whose clock runs ahead of the others: the later holder can then
//! get a smaller token. Redlock's exclusion itself rests on timing assumptions (bounded clock
//! drift, bounded pauses, bounded network delay) that fencing exists to do without. So
//! [`tumbler_core::Fencing::BestEffort`]: the tokens usually increase, but do not rely on them for
//! safety; use a single server (or a consensus store) when a protected resource must reject
//! stale holders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use tokio::sync::Notify;
use tumbler_core::cleanup::CancelCleanup;
use tumbler_core::keeper::{HoldTicket, Keeper, Renew, Renewal};
use tumbler_core::{AcquireRequest, Error, HeldLock, Hold, LockKind, LockName, LockState, Result};

use crate::config::millis;
use crate::error::BACKEND;
use crate::hold::{Registry, Releaser};
use crate::keys::{Family, Keys};
use crate::node::{HolderReg, Node, WaiterReg};
use crate::reply::{self, Attempt};
use crate::scripts;
use crate::single;

/// The masters of a Redlock backend.
pub(crate) struct Masters<'a> {
    pub(crate) nodes: &'a [Arc<Node>],
}

impl Masters<'_> {
    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    fn settings(&self) -> &crate::config::Settings {
        &self.nodes[0].settings
    }

    /// The per-master timeout (the request timeout, also when a master is being reconnected):
    /// an unreachable master must not hold up the others.
    fn node_timeout(&self) -> Duration {
        self.settings().request_timeout
    }

    /// Runs `op` on every master at once, each within the per-master timeout.
    async fn on_all<'n, T, F, Fut>(&'n self, op: F) -> Vec<Result<T>>
    where
        F: Fn(&'n Arc<Node>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + 'n,
    {
        let limit = self.node_timeout();
        join_all(self.nodes.iter().map(|node| {
            let call = op(node);
            async move {
                match tokio::time::timeout(limit, call).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::Timeout {
                        operation: "a Redlock request".into(),
                        addr: node.addr.clone(),
                        after: limit,
                    }),
                }
            }
        }))
        .await
    }

    fn too_few(&self, answered: usize, errors: &[Error]) -> Error {
        let why = crate::error::briefs(errors);
        Error::connection(
            BACKEND,
            self.address(),
            format!(
                "only {answered} of {} Redis masters answered; Redlock needs a majority of {} ({why})",
                self.nodes.len(),
                self.quorum()
            ),
        )
    }

    pub(crate) fn address(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.addr.split("://").nth(1).unwrap_or(&n.addr).to_owned())
            .collect();
        format!("redis+redlock://{}", hosts.join(","))
    }
}

/// Acquires a mutex on a majority of `masters`.
pub(crate) async fn acquire(
    masters: &Masters<'_>,
    registry: &Arc<Registry>,
    request: AcquireRequest,
) -> Result<Option<Hold>> {
    if request.kind == LockKind::Leader {
        return Err(Error::Unsupported {
            capability: "election",
            backend: BACKEND,
        });
    }
    if request.kind != LockKind::Exclusive {
        return Err(Error::Unsupported {
            capability: "read-write locks and semaphores in Redlock mode",
            backend: BACKEND,
        });
    }
    let keys = Arc::new(masters.settings().keys(&request.name));
    let id = masters.settings().new_id();
    // Counted until the acquisition is done or its cleanup has run (shutdown() waits).
    let pending = registry.start_acquisition();
    let undo = cancel_everywhere(masters.nodes.to_vec(), keys.clone(), id.clone());
    let cleanup = CancelCleanup::new("redis: undo a cancelled Redlock acquisition", async move {
        undo.await;
        drop(pending);
    });
    let member = format!("{id}:x");
    let wake = Arc::new(Notify::new());
    let mut listening: Vec<WaiterReg> = Vec::new();
    let mut outage: Option<Instant> = None;
    let mut backoff = single::outage_backoff();
    loop {
        if registry.is_closing() {
            return Err(Error::Closed { backend: BACKEND });
        }
        let restarts: Vec<u64> = masters.nodes.iter().map(|n| n.restarts()).collect();
        let sent = Instant::now();
        let results = masters
            .on_all(|node| {
                single::attempt(
                    node,
                    &keys,
                    &request.name,
                    LockKind::Exclusive,
                    &id,
                    false,
                    node.fast_path(),
                )
            })
            .await;
        let mut values = Vec::with_capacity(results.len());
        let (mut granted, mut answered, mut best, mut hint) = (0, 0, 0u64, None::<u64>);
        let mut recovering: Vec<(usize, u64)> = Vec::new();
        let mut errors = Vec::new();
        for (index, result) in results.into_iter().enumerate() {
            match result {
                Ok(Attempt::Granted { token, value }) => {
                    granted += 1;
                    answered += 1;
                    best = best.max(token);
                    values.push(Some(value));
                }
                Ok(Attempt::Busy { wait_ms }) => {
                    answered += 1;
                    if wait_ms > 0 {
                        hint = Some(hint.map_or(wait_ms, |h| h.min(wait_ms)));
                    }
                    values.push(None);
                }
                Ok(Attempt::Recovering { wait_ms }) => {
                    answered += 1;
                    recovering.push((index, wait_ms));
                    values.push(None);
                }
                Ok(Attempt::LimitConflict { .. }) => values.push(None),
                Ok(Attempt::KindConflict { held }) => {
                    cancel_everywhere(masters.nodes.to_vec(), keys.clone(), id.clone()).await;
                    cleanup.disarm();
                    return Err(single::kind_conflict(&request.name, request.kind, &held));
                }
                Err(error @ (Error::Auth { .. } | Error::Conflict { .. })) => {
                    cancel_everywhere(masters.nodes.to_vec(), keys.clone(), id.clone()).await;
                    cleanup.disarm();
                    return Err(error);
                }
                Err(error) => {
                    errors.push(error);
                    values.push(None);
                }
            }
        }
        let settings = masters.settings();
        if granted >= masters.quorum() && sent.elapsed() < settings.validity().period() {
            cleanup.disarm();
            let won = Won {
                values,
                token: best,
                sent,
                restarts,
            };
            return Ok(Some(into_hold(masters, registry, keys, request.name, won)));
        }
        if granted > 0 || !errors.is_empty() {
            // Give back what was granted (and whatever a timed-out request may have set).
            cancel_everywhere(masters.nodes.to_vec(), keys.clone(), id.clone()).await;
        }
        if answered < masters.quorum() {
            // A waiting acquisition rides out an outage of up to one TTL (the caller's deadline
            // still applies); a single attempt reports it at once.
            let since = *outage.get_or_insert_with(Instant::now);
            if !request.wait || since.elapsed() > settings.ttl {
                return Err(masters.too_few(answered, &errors));
            }
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        if outage.take().is_some() {
            backoff.reset();
        }
        // Too many masters refuse grants after a restart for any majority to form.
        let blocked = masters.nodes.len() - recovering.len() < masters.quorum();
        let recovery_left = recovering.iter().map(|(_, ms)| *ms).min().unwrap_or(0);
        if blocked {
            for (index, ms) in &recovering {
                masters.nodes[*index].note_recovering(Duration::from_millis(*ms));
            }
        }
        if !request.wait {
            cleanup.disarm();
            if blocked {
                let (index, _) = recovering[0];
                return Err(single::recovering_error(
                    &masters.nodes[index],
                    Duration::from_millis(recovery_left),
                ));
            }
            return Ok(None);
        }
        if blocked {
            hint = Some(hint.map_or(recovery_left, |h| h.min(recovery_left)));
        }
        if listening.is_empty() {
            for node in masters.nodes {
                listening.push(node.add_waiter_with(&keys.events, &member, wake.clone()));
            }
            let _ = masters
                .on_all(|node| node.ensure_subscribed(&keys.events))
                .await;
            continue;
        }
        let jitter = jitter(settings.retry_delay);
        if granted > 0 {
            // Split vote: everybody backs off a different random time.
            tokio::time::sleep(jitter).await;
            continue;
        }
        let limit = hint
            .map(Duration::from_millis)
            .unwrap_or(settings.waiter_refresh())
            .min(settings.waiter_refresh())
            + jitter;
        tokio::select! {
            _ = wake.notified() => {}
            _ = registry.closing() => {}
            _ = tokio::time::sleep(limit) => {}
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(rand::random::<u64>() % max_us)
}

/// Removes acquisition `id` from every master (grants it got, possibly without knowing).
async fn cancel_everywhere(nodes: Vec<Arc<Node>>, keys: Arc<Keys>, id: String) {
    join_all(
        nodes
            .into_iter()
            .map(|node| crate::undo::cancel(node, keys.clone(), Family::Lock, id.clone(), true)),
    )
    .await;
}

/// What a successful Redlock round won.
struct Won {
    /// The value granted on each master (`None` where it was not).
    values: Vec<Option<String>>,
    /// The largest token of the majority.
    token: u64,
    /// When the round was sent.
    sent: Instant,
    /// Each master's restart count before the round.
    restarts: Vec<u64>,
}

fn into_hold(
    masters: &Masters<'_>,
    registry: &Arc<Registry>,
    keys: Arc<Keys>,
    name: LockName,
    won: Won,
) -> Hold {
    let Won {
        values,
        token,
        sent,
        restarts,
    } = won;
    let settings = masters.settings();
    // Validity starts with the grant (see `Grant::into_hold`).
    let (lease, ticket, keeper, signals) = crate::hold::keep(settings, sent, |ticket| {
        Arc::new(RedlockLease {
            nodes: masters.nodes.to_vec(),
            keys: keys.clone(),
            values: values.clone(),
            name: name.clone(),
            restarts,
            ticket,
        })
    });
    let registrations: Vec<HolderReg> = masters
        .nodes
        .iter()
        .zip(&values)
        .filter_map(|(node, value)| {
            value
                .as_ref()
                .map(|v| node.add_holder(&keys.inbox, v, ticket.clone()))
        })
        .collect();
    let registered = registry.add(name, lease.clone(), keeper.clone(), ticket);
    Hold {
        token,
        held: Box::new(RedlockHeld {
            lease,
            keeper: Some(keeper),
            _registrations: registrations,
            registry: registry.clone(),
            registered,
            released: false,
        }),
        signals,
    }
}

/// A hold on a majority of masters.
struct RedlockLease {
    nodes: Vec<Arc<Node>>,
    keys: Arc<Keys>,
    /// The value stored on each master (`None` where it was not granted).
    values: Vec<Option<String>>,
    name: LockName,
    /// Each master's restart count when the hold was granted.
    restarts: Vec<u64>,
    /// The hold's place in its keeper's set (its notifier, for revocation).
    ticket: Arc<HoldTicket>,
}

impl RedlockLease {
    fn masters(&self) -> Masters<'_> {
        Masters { nodes: &self.nodes }
    }
}

#[async_trait]
impl Renew for RedlockLease {
    async fn renew(&self) -> Renewal {
        let ttl = millis(self.nodes[0].settings.ttl).to_string();
        let keys = &self.keys;
        let masters = self.masters();
        let results = masters
            .on_all(|node| {
                let index = self.nodes.iter().position(|n| Arc::ptr_eq(n, node));
                let value = index.and_then(|i| self.values[i].clone());
                let ttl = ttl.clone();
                async move {
                    let Some(value) = value else {
                        return Ok(None);
                    };
                    let reply = node
                        .eval(
                            "renewing a Redlock lock",
                            &scripts::EXTEND_LOCK,
                            &[&keys.lock, &keys.readers, &keys.revoked, &keys.leader],
                            &["x", &value, &ttl],
                        )
                        .await?;
                    reply::extended("renewal", &reply)
                }
            })
            .await;
        let (mut renewed, mut gone, mut revoke, mut last_error) = (0, 0, false, None);
        for (result, value) in results.into_iter().zip(&self.values) {
            match (result, value) {
                (_, None) => gone += 1,
                (Ok(Some(r)), Some(_)) => {
                    renewed += 1;
                    revoke |= r;
                }
                (Ok(None), Some(_)) => gone += 1,
                (Err(error), Some(_)) => last_error = Some(error),
            }
        }
        let quorum = masters.quorum();
        if renewed >= quorum {
            let notifier = self.ticket.notifier();
            if revoke && !notifier.is_lost() {
                notifier.revoke_requested();
            }
            Renewal::Renewed
        } else if self.nodes.len() - gone < quorum {
            let restarted = self
                .nodes
                .iter()
                .zip(&self.restarts)
                .any(|(node, at_grant)| node.restarts() != *at_grant);
            Renewal::Gone(if restarted {
                tumbler_core::LostReason::ServerRestarted
            } else {
                tumbler_core::LostReason::Deleted
            })
        } else {
            Renewal::Failed(last_error.unwrap_or_else(|| {
                Error::connection(
                    BACKEND,
                    masters.address(),
                    format!("renewed on only {renewed} of {} masters", self.nodes.len()),
                )
            }))
        }
    }
}

#[async_trait]
impl Releaser for RedlockLease {
    async fn release_on_store(&self) -> Result<bool> {
        let keys = &self.keys;
        let masters = self.masters();
        let results = masters
            .on_all(|node| {
                let index = self.nodes.iter().position(|n| Arc::ptr_eq(n, node));
                let value = index.and_then(|i| self.values[i].clone());
                async move {
                    let Some(value) = value else {
                        return Ok(None);
                    };
                    let reply = node
                        .eval(
                            "releasing a Redlock lock",
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
                            &["x", &value, &keys.inbox_prefix, &keys.events, "1"],
                        )
                        .await?;
                    reply::flag("release", &reply).map(Some)
                }
            })
            .await;
        let (mut released, mut errors) = (0, Vec::new());
        for result in results {
            match result {
                Ok(Some(true)) => released += 1,
                Ok(_) => {}
                Err(error) => errors.push(error),
            }
        }
        // Released for everyone else once too few masters may still carry the key for any
        // majority to be blocked by it.
        let may_still_hold = errors.len();
        if released > 0 && may_still_hold <= self.nodes.len() - masters.quorum() {
            Ok(true)
        } else if errors.is_empty() {
            Ok(false)
        } else {
            Err(masters.too_few(self.nodes.len() - errors.len(), &errors))
        }
    }
}

/// The backend's handle on a Redlock hold.
struct RedlockHeld {
    lease: Arc<RedlockLease>,
    keeper: Option<Arc<Keeper>>,
    _registrations: Vec<HolderReg>,
    registry: Arc<Registry>,
    registered: u64,
    released: bool,
}

#[async_trait]
impl HeldLock for RedlockHeld {
    async fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        if let Some(keeper) = self.keeper.take() {
            keeper.stop();
        }
        let released = self.lease.release_on_store().await?;
        self.released = true;
        self.registry.remove(self.registered);
        if released {
            Ok(())
        } else {
            Err(Error::NotOwner {
                name: self.lease.name.clone(),
            })
        }
    }
}

impl Drop for RedlockHeld {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.stop();
        }
        if !self.released {
            self.registry.remove(self.registered);
        }
    }
}

/// Holders seen on a majority of masters; waiters cannot be counted without a queue.
pub(crate) async fn state(masters: &Masters<'_>, name: &LockName) -> Result<LockState> {
    let results = masters.on_all(|node| single::state(node, name)).await;
    let mut seen: Vec<(tumbler_core::HolderInfo, usize)> = Vec::new();
    let mut answered = 0;
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(state) => {
                answered += 1;
                for holder in state.holders {
                    match seen.iter_mut().find(|(h, _)| h.id == holder.id) {
                        Some((known, count)) => {
                            *count += 1;
                            known.token = known.token.max(holder.token);
                        }
                        None => seen.push((holder, 1)),
                    }
                }
            }
            Err(error) => errors.push(error),
        }
    }
    if answered < masters.quorum() {
        return Err(masters.too_few(answered, &errors));
    }
    let mut state = LockState::free(name.clone());
    state.holders = seen
        .into_iter()
        .filter(|(_, count)| *count >= masters.quorum())
        .map(|(holder, _)| holder)
        .collect();
    state.waiters = None;
    Ok(state)
}

/// Runs a per-master operation that returns a count; answers the largest count.
pub(crate) async fn count_on_all<'n, F, Fut>(masters: &'n Masters<'_>, op: F) -> Result<usize>
where
    F: Fn(&'n Arc<Node>) -> Fut,
    Fut: std::future::Future<Output = Result<usize>> + 'n,
{
    let results = masters.on_all(op).await;
    let mut best = 0;
    let mut answered = 0;
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(n) => {
                answered += 1;
                best = best.max(n);
            }
            Err(error) => errors.push(error),
        }
    }
    if answered < masters.quorum() {
        return Err(masters.too_few(answered, &errors));
    }
    Ok(best)
}
