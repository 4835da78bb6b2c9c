//! Acquiring on one server: one script call when the lock is free; otherwise a place in the
//! FIFO queue and a wait for the `grant` message with which the releasing script hands the lock
//! to the head of the queue (on that waiter's client inbox alone), with a timed retry as the
//! fallback for a lost message (the retry finds the grant).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;
use tumbler_core::{AcquireRequest, Error, Hold, LockKind, LockName, LockState, Result};

use crate::config::millis;
use crate::error::BACKEND;
use crate::hold::{Grant, Registry};
use crate::keys::{holder_info, mode_code, Family, Keys};
use crate::node::{Node, WaiterReg};
use crate::reply::{self, Attempt};
use crate::scripts;
use crate::undo::{Progress, Undo};

/// Acquires `request` on `node`.
pub(crate) async fn acquire(
    node: &Arc<Node>,
    registry: &Arc<Registry>,
    request: AcquireRequest,
) -> Result<Option<Hold>> {
    let keys = Arc::new(node.settings.keys(&request.name));
    let family = Family::of(request.kind);
    let id = node.settings.new_id();
    // Counted until the acquisition is done or its cleanup has run, so that shutdown() can
    // wait for both.
    let pending = registry.start_acquisition();
    let cleanup = Undo::new(node.clone(), keys.clone(), family, id.clone(), pending);
    let mut acquisition = Acquisition {
        node,
        registry,
        progress: cleanup.progress(),
        keys: &keys,
        name: &request.name,
        kind: request.kind,
        value: &request.value,
        id: &id,
        member: format!("{id}:{}", member_mode(request.kind)),
        waiter: None,
        queued_at: None,
    };
    let outcome = acquisition.run(request.wait).await;
    drop(acquisition);
    let outcome = match outcome {
        Ok(Some(granted)) if node.settings.min_replicas > 0 => {
            // Until the replicas confirmed it, the grant may have to be undone: a drop of
            // this future now leaves it to the undo.
            cleanup.progress().set_in_flight(true, false);
            let family_mode = member_mode(request.kind);
            match confirm(node, &keys, family, family_mode, granted).await {
                Ok(granted) => Ok(Some(granted)),
                Err(error) => {
                    let span = tracing::info_span!("release", name = %request.name, why = "replicas did not confirm the grant");
                    crate::undo::cancel(node.clone(), keys.clone(), family, id.clone(), false)
                        .instrument(span)
                        .await;
                    cleanup.disarm();
                    return Err(error);
                }
            }
        }
        outcome => outcome,
    };
    let name = request.name;
    match outcome {
        Ok(Some(granted)) => {
            cleanup.disarm();
            Ok(Some(
                Grant {
                    node: node.clone(),
                    keys,
                    family,
                    mode: member_mode(request.kind),
                    name,
                    token: granted.token,
                    value: granted.value,
                    sent: granted.sent,
                    restarts: granted.restarts,
                    handed_off: granted.handed_off,
                }
                .into_hold(registry),
            ))
        }
        Ok(None) => {
            cleanup.disarm();
            Ok(None)
        }
        // Whatever the failed request may have stored is removed by the cleanup.
        Err(error) => Err(error),
    }
}

/// `min_replicas`: has the replicas confirm a grant with `WAIT` on the connection that wrote
/// it. A grant a release handed over was written on the releaser's connection, so it is
/// first extended on this one (which also gives it a whole TTL from then).
async fn confirm(
    node: &Arc<Node>,
    keys: &Keys,
    family: Family,
    mode: &str,
    mut granted: Granted,
) -> Result<Granted> {
    if !granted.handed_off {
        node.confirm_replicas(granted.gen, "the grant").await?;
        return Ok(granted);
    }
    let sent = Instant::now();
    match crate::hold::extend(node, keys, family, mode, &granted.value, "the grant").await? {
        Some(_) => {
            granted.sent = sent;
            granted.handed_off = false;
            Ok(granted)
        }
        None => Err(Error::connection(
            BACKEND,
            &node.addr,
            "the lock handed over to this waiter expired before it could be confirmed on the replicas; retry",
        )),
    }
}

/// The error of a request that the restart delay refuses (see the crate docs on restarts).
pub(crate) fn recovering_error(node: &Node, remaining: Duration) -> Error {
    node.note_recovering(remaining);
    crate::error::recovering(&node.addr, remaining)
}

/// The conflict of a name used as two kinds of primitive.
pub(crate) fn kind_conflict(name: &LockName, kind: LockKind, held: &str) -> Error {
    let asked = match kind {
        LockKind::Exclusive => "mutex",
        LockKind::Read | LockKind::Write => "read-write lock",
        LockKind::Permits { .. } => "semaphore",
        LockKind::Leader => "election",
    };
    Error::Conflict {
        name: name.clone(),
        problem: format!(
            "it is in use as {}, so it cannot also be used as {}; use one kind of lock per name (another name for the {asked})",
            tumbler_core::with_article(held),
            tumbler_core::with_article(asked)
        ),
    }
}

/// The pauses of a waiter riding out an outage (100 ms, growing to 1 s, with jitter).
pub(crate) fn outage_backoff() -> tumbler_core::retry::Backoff {
    tumbler_core::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
}

/// The error that ends a wait that rode out an outage: a timeout states the whole time the
/// acquisition waited, not the last request's.
fn waited_for(error: Error, waited: Duration) -> Error {
    match error {
        Error::Timeout {
            operation, addr, ..
        } => Error::Timeout {
            operation,
            addr,
            after: waited,
        },
        other => other,
    }
}

/// A granted attempt.
struct Granted {
    token: u64,
    value: String,
    /// The deadline of the hold is `sent + ttl - drift`.
    sent: Instant,
    restarts: u64,
    /// Handed over by a release's `grant` message.
    handed_off: bool,
    /// The connection generation the grant came on (0: unknown, a hand-off).
    gen: u64,
}

/// The mode letter of a waiter member and of a hold's scripts (`x`, `w`, `r`, `p`).
fn member_mode(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Exclusive => "x",
        LockKind::Write => "w",
        LockKind::Read => "r",
        LockKind::Permits { .. } => "p",
        LockKind::Leader => "l",
    }
}

/// One acquisition in progress.
struct Acquisition<'a> {
    node: &'a Arc<Node>,
    registry: &'a Registry,
    progress: Arc<Progress>,
    keys: &'a Keys,
    name: &'a LockName,
    kind: LockKind,
    /// What a candidate advertises (empty for other kinds).
    value: &'a [u8],
    id: &'a str,
    member: String,
    waiter: Option<WaiterReg>,
    /// When the last attempt that found the lock busy and queued (or refreshed) this waiter
    /// was sent: a release can only have handed the lock over after it executed, and the
    /// grant lives until the queue entry would have expired, `waiter_ttl` after it at least.
    queued_at: Option<Instant>,
}

impl Acquisition<'_> {
    async fn run(&mut self, wait: bool) -> Result<Option<Granted>> {
        // The last acquisition of this name by this client had to wait, and its inbox is still
        // subscribed: queue on the first attempt, and skip the fast path (it would find the
        // name crowded).
        let expected = wait && self.node.expects_contention(&self.keys.inbox);
        if expected {
            self.listen();
        }
        let started = Instant::now();
        let mut outage: Option<Instant> = None;
        let mut backoff = outage_backoff();
        let mut first = !expected;
        // Some attempt found the lock busy (or refused by the restart delay).
        let mut waited = false;
        loop {
            if self.registry.is_closing() {
                return Err(Error::Closed { backend: BACKEND });
            }
            let restarts = self.node.restarts();
            if let Some(granted) = self.handed_over(restarts) {
                return Ok(Some(granted));
            }
            let sent = Instant::now();
            let enqueue = self.waiter.is_some();
            // Not queued yet: the free lock may be taken on the scripts' fast path.
            let fast = std::mem::take(&mut first) && self.node.fast_path();
            self.progress.set_in_flight(true, enqueue);
            let outcome = attempt_on(
                self.node, self.keys, self.name, self.kind, self.value, self.id, enqueue, fast,
            )
            .await;
            let mut granted_on = 0;
            let outcome = outcome.map(|(gen, attempt)| {
                granted_on = gen;
                attempt
            });
            if outcome.is_ok() {
                // Answered: its effect is known. A failed request may have been carried out:
                // it stays "in flight" for the undo.
                self.progress.set_in_flight(false, false);
            }
            let attempt = match outcome {
                Ok(attempt) => {
                    waited |= matches!(attempt, Attempt::Busy { .. } | Attempt::Recovering { .. });
                    if outage.take().is_some() {
                        backoff.reset();
                    }
                    attempt
                }
                Err(error) if wait && error.is_transient() => {
                    // A waiting acquisition rides out an outage up to one TTL, from its first
                    // attempt on (a failover, a cluster that is down while a shard fails
                    // over); the caller's deadline (lock_timeout) still applies. A retry after
                    // an attempt that may have been granted takes the slow path, which finds
                    // the grant under the same id.
                    let since = *outage.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.node.settings.ttl {
                        return Err(waited_for(error, started.elapsed()));
                    }
                    tracing::debug!(%error, "waiting through a connection problem");
                    self.pause(backoff.next_delay()).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match attempt {
                Attempt::Granted { token, value } => {
                    self.node.note_contention(&self.keys.inbox, waited);
                    return Ok(Some(Granted {
                        token,
                        value,
                        sent,
                        restarts,
                        handed_off: false,
                        gen: granted_on,
                    }))
                }
                Attempt::KindConflict { held } => {
                    return Err(kind_conflict(self.name, self.kind, &held))
                }
                Attempt::Recovering { wait_ms } if !wait => {
                    return Err(recovering_error(self.node, Duration::from_millis(wait_ms)))
                }
                Attempt::LimitConflict { stored } => {
                    return Err(Error::Conflict {
                        name: self.name.clone(),
                        problem: format!(
                            "the semaphore is in use with limit {stored}, not {}; use the same limit in every client",
                            match self.kind {
                                LockKind::Permits { limit, .. } => limit,
                                _ => 0,
                            }
                        ),
                    })
                }
                Attempt::Busy { .. } if !wait => return Ok(None),
                Attempt::Busy { .. } | Attempt::Recovering { .. } if !enqueue => {
                    // Listen first, then queue: a release after this point cannot be missed.
                    self.listen();
                    if let Err(error) = self.node.ensure_subscribed(&self.keys.inbox).await {
                        // The channel is subscribed again with the next connection; until
                        // then the timed retries stand in for the notifications.
                        tracing::debug!(%error, "could not subscribe to the lock's channel yet");
                    }
                }
                Attempt::Recovering { wait_ms } => {
                    self.node.note_recovering(Duration::from_millis(wait_ms));
                    let hint = Duration::from_millis(wait_ms)
                        .min(self.node.settings.waiter_refresh());
                    self.pause(hint + Duration::from_millis(1)).await;
                }
                Attempt::Busy { wait_ms } => {
                    self.queued_at = Some(sent);
                    let settings = &self.node.settings;
                    let hint = match wait_ms {
                        0 => settings.waiter_refresh(),
                        ms => Duration::from_millis(ms).min(settings.waiter_refresh()),
                    };
                    self.pause(hint + Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// The hold a release handed to this waiter, if its `grant` came. Its deadline counts from
    /// when the last attempt that queued this waiter was sent, for the life of a queue entry
    /// (the grant's life on the server); the hold renews itself early. Without such an
    /// attempt (or a clock too young to count back), the next attempt picks the grant up.
    fn handed_over(&self, restarts: u64) -> Option<Granted> {
        let value = self.waiter.as_ref()?.take_grant()?;
        let settings = &self.node.settings;
        let sent = self
            .queued_at?
            .checked_sub(settings.ttl.saturating_sub(settings.waiter_ttl()))?;
        let token = value.rsplit(':').next()?.parse().ok()?;
        self.node.note_contention(&self.keys.inbox, true);
        Some(Granted {
            token,
            value,
            sent,
            restarts,
            handed_off: true,
            gen: 0,
        })
    }

    fn listen(&mut self) {
        if self.waiter.is_none() {
            self.waiter = Some(self.node.add_waiter(&self.keys.inbox, &self.member));
            // A waiter that gives up removes its entry on the cleanup connection: have it ready.
            self.node.warm_side();
        }
    }

    /// Sleeps up to `limit`, or less if woken or the backend shuts down.
    async fn pause(&self, limit: Duration) {
        let woken = async {
            match &self.waiter {
                Some(waiter) => waiter.woken().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = woken => {}
            _ = self.registry.closing() => {}
            _ = tokio::time::sleep(limit) => {}
        }
    }
}

/// One run of the acquire script for acquisition `id`; `enqueue` puts it in the queue if busy,
/// `fast` lets a mutex or writer that is not queued take a free lock on the scripts' fast path
/// ([`Node::fast_path`]). Foreign data at the keys is [`Error::Conflict`] on `name`.
pub(crate) async fn attempt(
    node: &Arc<Node>,
    keys: &Keys,
    name: &LockName,
    kind: LockKind,
    id: &str,
    enqueue: bool,
    fast: bool,
) -> Result<Attempt> {
    attempt_on(node, keys, name, kind, &[], id, enqueue, fast)
        .await
        .map(|(_, attempt)| attempt)
}

/// Like [`attempt`] for a candidate advertising `value` (empty for other kinds), also telling
/// the generation of the connection that answered.
#[allow(clippy::too_many_arguments)]
async fn attempt_on(
    node: &Arc<Node>,
    keys: &Keys,
    name: &LockName,
    kind: LockKind,
    value: &[u8],
    id: &str,
    enqueue: bool,
    fast: bool,
) -> Result<(u64, Attempt)> {
    let settings = &node.settings;
    let ttl = millis(settings.ttl).to_string();
    let waiter_ttl = millis(settings.waiter_ttl()).to_string();
    let restart_delay = node.restart_delay().as_millis().to_string();
    let enqueue = if enqueue { "1" } else { "0" };
    let reply = match kind {
        LockKind::Permits { limit, count } => {
            node.eval_on(
                "acquiring semaphore permits",
                &scripts::ACQUIRE_SEM,
                &[
                    &keys.sem,
                    &keys.sem_limit,
                    &keys.sem_queue,
                    &keys.sem_queue_exp,
                    &keys.fence,
                    &keys.epoch,
                    &keys.lock,
                    &keys.readers,
                    &keys.queue,
                    &keys.queue_exp,
                ],
                &[
                    &limit.to_string(),
                    &count.to_string(),
                    id,
                    &ttl,
                    enqueue,
                    &waiter_ttl,
                    &keys.inbox_prefix,
                    &restart_delay,
                ],
            )
            .await
        }
        kind => {
            node.eval_bytes_on(
                "acquiring a lock",
                &scripts::ACQUIRE_LOCK,
                &[
                    &keys.lock,
                    &keys.readers,
                    &keys.queue,
                    &keys.queue_exp,
                    &keys.fence,
                    &keys.epoch,
                    &keys.sem,
                    &keys.sem_queue,
                    &keys.sem_queue_exp,
                    &keys.leader,
                    &keys.candidates,
                ],
                &[
                    mode_code(kind).as_bytes(),
                    id.as_bytes(),
                    ttl.as_bytes(),
                    enqueue.as_bytes(),
                    waiter_ttl.as_bytes(),
                    keys.inbox_prefix.as_bytes(),
                    restart_delay.as_bytes(),
                    if fast { b"1" } else { b"0" },
                    value,
                ],
            )
            .await
        }
    };
    let (gen, reply) = reply.map_err(crate::error::for_name(name))?;
    let attempt = reply::attempt("acquire", &reply)?;
    if matches!(attempt, Attempt::Granted { .. }) {
        node.note_granted(gen);
    }
    Ok((gen, attempt))
}

/// Who holds `name` on `node` and how many wait.
pub(crate) async fn state(node: &Arc<Node>, name: &LockName) -> Result<LockState> {
    let keys = node.settings.keys(name);
    let reply = node
        .eval(
            "reading lock state",
            &scripts::STATE,
            &[
                &keys.lock,
                &keys.readers,
                &keys.sem,
                &keys.queue_exp,
                &keys.sem_queue_exp,
            ],
            &[],
        )
        .await
        .map_err(crate::error::for_name(name))?;
    let bad = || crate::error::bad_reply("state", &reply);
    let items = reply::items(&reply).ok_or_else(bad)?;
    let [value, readers, leases, waiting] = items else {
        return Err(bad());
    };
    let mut state = LockState::free(name.clone());
    if let Some(value) = reply::text(value).filter(|v| !v.is_empty()) {
        state.holders.push(holder_info(&value));
    }
    for list in [readers, leases] {
        for value in reply::items(list).ok_or_else(bad)? {
            state
                .holders
                .push(holder_info(&reply::text(value).ok_or_else(bad)?));
        }
    }
    state.waiters = Some(reply::count("state", waiting)?);
    Ok(state)
}

/// Asks every holder of `name` to release; returns how many were asked.
pub(crate) async fn revoke(node: &Arc<Node>, name: &LockName) -> Result<usize> {
    let keys = node.settings.keys(name);
    let keep = millis(node.settings.ttl).to_string();
    let reply = node
        .eval(
            "requesting revocation",
            &scripts::REVOKE,
            &[&keys.lock, &keys.readers, &keys.sem, &keys.revoked],
            &[&keys.inbox_prefix, &keep],
        )
        .await
        .map_err(crate::error::for_name(name))?;
    reply::count("revoke", &reply)
}

/// Removes every hold of `name`, whoever owns it; their `lost()` fires. Returns how many.
pub(crate) async fn force_release(
    node: &Arc<Node>,
    name: &LockName,
    announce_free: bool,
) -> Result<usize> {
    let keys = node.settings.keys(name);
    let reply = node
        .eval(
            "force-releasing a lock",
            &scripts::FORCE_RELEASE,
            &[
                &keys.lock,
                &keys.readers,
                &keys.sem,
                &keys.revoked,
                &keys.queue,
                &keys.queue_exp,
                &keys.sem_queue,
                &keys.sem_queue_exp,
                &keys.fence,
                &keys.leader,
                &keys.candidates,
            ],
            &[
                &keys.inbox_prefix,
                &keys.events,
                if announce_free { "1" } else { "0" },
            ],
        )
        .await
        .map_err(crate::error::for_name(name))?;
    reply::count("force release", &reply)
}
