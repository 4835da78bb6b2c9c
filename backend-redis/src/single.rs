//! Acquiring on one server: one script call when the lock is free; otherwise a place in the
//! FIFO queue and a wait for the `wake` message the releasing script publishes to the head of
//! the queue, with a timed retry as the fallback for a lost message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lockcore::cleanup::CancelCleanup;
use lockcore::{AcquireRequest, Error, Hold, LockKind, LockName, LockState, Result};

use crate::config::millis;
use crate::hold::{Grant, Registry};
use crate::keys::{holder_info, mode_code, new_id, Family, Keys};
use crate::node::{Node, WaiterReg};
use crate::reply::{self, Attempt};
use crate::scripts;

/// Acquires `request` on `node`.
pub(crate) async fn acquire(
    node: &Arc<Node>,
    registry: &Arc<Registry>,
    request: AcquireRequest,
) -> Result<Option<Hold>> {
    let keys = Arc::new(Keys::new(&node.settings.prefix, &request.name));
    let family = Family::of(request.kind);
    let id = new_id();
    let cleanup = CancelCleanup::new(
        "redis: undo a cancelled acquisition",
        cancel(node.clone(), keys.clone(), family, id.clone(), false),
    );
    let mut acquisition = Acquisition {
        node,
        keys: &keys,
        name: &request.name,
        kind: request.kind,
        id: &id,
        member: format!("{id}:{}", member_mode(request.kind)),
        waiter: None,
    };
    let outcome = acquisition.run(request.wait).await;
    drop(acquisition);
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

/// A granted attempt.
struct Granted {
    token: u64,
    value: String,
    sent: Instant,
}

/// The mode letter of a waiter member and of a hold's scripts (`x`, `w`, `r`, `p`).
fn member_mode(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Exclusive => "x",
        LockKind::Write => "w",
        LockKind::Read => "r",
        LockKind::Permits { .. } => "p",
    }
}

/// One acquisition in progress.
struct Acquisition<'a> {
    node: &'a Arc<Node>,
    keys: &'a Keys,
    name: &'a LockName,
    kind: LockKind,
    id: &'a str,
    member: String,
    waiter: Option<WaiterReg>,
}

impl Acquisition<'_> {
    async fn run(&mut self, wait: bool) -> Result<Option<Granted>> {
        // Already listening on this lock's channel (a recent acquisition of the same name):
        // queue on the first attempt.
        if wait && self.node.is_subscribed(&self.keys.channel) {
            self.listen();
        }
        let mut outage: Option<Instant> = None;
        loop {
            let sent = Instant::now();
            let enqueue = self.waiter.is_some();
            let attempt = match attempt(self.node, self.keys, self.kind, self.id, enqueue).await {
                Ok(attempt) => {
                    outage = None;
                    attempt
                }
                Err(error) if enqueue && error.is_transient() => {
                    // A waiter rides out an outage up to one TTL; the caller's deadline
                    // (lock_timeout) still applies.
                    let since = *outage.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.node.settings.ttl {
                        return Err(error);
                    }
                    tracing::debug!(%error, "waiting through a connection problem");
                    self.pause(Duration::from_millis(100)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match attempt {
                Attempt::Granted { token, value } => {
                    return Ok(Some(Granted { token, value, sent }))
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
                Attempt::Busy { .. } if !enqueue => {
                    // Listen first, then queue: a release after this point cannot be missed.
                    self.listen();
                    if let Err(error) = self.node.ensure_subscribed(&self.keys.channel).await {
                        // The channel is subscribed again with the next connection; until
                        // then the timed retries stand in for the notifications.
                        tracing::debug!(%error, "could not subscribe to the lock's channel yet");
                    }
                }
                Attempt::Busy { wait_ms } => {
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

    fn listen(&mut self) {
        if self.waiter.is_none() {
            self.waiter = Some(self.node.add_waiter(&self.keys.channel, &self.member));
        }
    }

    /// Sleeps up to `limit`, or less if woken.
    async fn pause(&self, limit: Duration) {
        match &self.waiter {
            Some(waiter) => {
                tokio::select! {
                    _ = waiter.woken() => {}
                    _ = tokio::time::sleep(limit) => {}
                }
            }
            None => tokio::time::sleep(limit).await,
        }
    }
}

/// One run of the acquire script for acquisition `id`; `enqueue` puts it in the queue if busy.
pub(crate) async fn attempt(
    node: &Arc<Node>,
    keys: &Keys,
    kind: LockKind,
    id: &str,
    enqueue: bool,
) -> Result<Attempt> {
    let settings = &node.settings;
    let ttl = millis(settings.ttl).to_string();
    let waiter_ttl = millis(settings.waiter_ttl()).to_string();
    let restart_delay = settings.restart_delay.as_millis().to_string();
    let enqueue = if enqueue { "1" } else { "0" };
    let reply = match kind {
        LockKind::Permits { limit, count } => {
            node.eval(
                "acquiring semaphore permits",
                &scripts::ACQUIRE_SEM,
                &[
                    &keys.sem,
                    &keys.sem_limit,
                    &keys.sem_queue,
                    &keys.sem_queue_exp,
                    &keys.fence,
                    &keys.epoch,
                ],
                &[
                    &limit.to_string(),
                    &count.to_string(),
                    id,
                    &ttl,
                    enqueue,
                    &waiter_ttl,
                    &keys.channel,
                    &restart_delay,
                ],
            )
            .await?
        }
        kind => {
            node.eval(
                "acquiring a lock",
                &scripts::ACQUIRE_LOCK,
                &[
                    &keys.lock,
                    &keys.readers,
                    &keys.queue,
                    &keys.queue_exp,
                    &keys.fence,
                    &keys.epoch,
                ],
                &[
                    &mode_code(kind),
                    id,
                    &ttl,
                    enqueue,
                    &waiter_ttl,
                    &keys.channel,
                    &restart_delay,
                ],
            )
            .await?
        }
    };
    reply::attempt("acquire", &reply)
}

/// Removes whatever a cancelled or failed acquisition `id` left: its queue entry, or the hold
/// it was granted without knowing.
pub(crate) async fn cancel(
    node: Arc<Node>,
    keys: Arc<Keys>,
    family: Family,
    id: String,
    announce_free: bool,
) {
    let free = if announce_free { "1" } else { "0" };
    let outcome = match family {
        Family::Lock => {
            node.eval(
                "cleaning up a cancelled acquisition",
                &scripts::CANCEL_LOCK,
                &[&keys.lock, &keys.readers, &keys.queue, &keys.queue_exp],
                &[&id, &keys.channel, free],
            )
            .await
        }
        Family::Semaphore => {
            node.eval(
                "cleaning up a cancelled acquisition",
                &scripts::CANCEL_SEM,
                &[&keys.sem, &keys.sem_queue, &keys.sem_queue_exp],
                &[&id, &keys.channel, free],
            )
            .await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%error, "cleanup of a cancelled acquisition failed; its entries expire with their TTL");
    }
}

/// Who holds `name` on `node` and how many wait.
pub(crate) async fn state(node: &Arc<Node>, name: &LockName) -> Result<LockState> {
    let keys = Keys::new(&node.settings.prefix, name);
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
        .await?;
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
    let keys = Keys::new(&node.settings.prefix, name);
    let keep = millis(node.settings.ttl).to_string();
    let reply = node
        .eval(
            "requesting revocation",
            &scripts::REVOKE,
            &[&keys.lock, &keys.readers, &keys.sem, &keys.revoked],
            &[&keys.channel, &keep],
        )
        .await?;
    reply::count("revoke", &reply)
}

/// Removes every hold of `name`, whoever owns it; their `lost()` fires. Returns how many.
pub(crate) async fn force_release(
    node: &Arc<Node>,
    name: &LockName,
    announce_free: bool,
) -> Result<usize> {
    let keys = Keys::new(&node.settings.prefix, name);
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
            ],
            &[&keys.channel, if announce_free { "1" } else { "0" }],
        )
        .await?;
    reply::count("force release", &reply)
}
