//! The backend's leases: granted at connect, renewed by lockcore's [`Keeper`], and replaced
//! when lost. An instance has two: the hold lease (every granted key) and the short waiting
//! lease (every queued key, [`WAIT_TTL`]).
//!
//! A [`Lease`] vouches for its holds until the first of: the server says the lease is gone
//! (keep-alive answered with TTL 0, or a put fails with "lease not found": `SessionExpired`);
//! [`Validity::etcd`] (3/4 of the TTL) passed since the last *acknowledged* keep-alive was
//! *sent* (the server cannot have expired the lease before that, whatever happened to the
//! connection: `RenewalFailed`); or the backend shuts down (`Abandoned`). Then every hold
//! registered with it ([`HoldSet`]) is lost at once, and a new lease is granted for later
//! acquisitions.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tracing::Instrument;
use tumbler_core::keeper::{HoldSet, HoldTicket, Keeper, KeeperConfig, Renew, Renewal, Validity};
use tumbler_core::retry::Backoff;
use tumbler_core::{
    ConnectionEvent, ConnectionMonitor, Error, HoldNotifier, LossLatch, LostReason, Result,
};

use crate::error_map::{self, BACKEND};

/// Keep-alives per TTL.
const KEEPALIVES_PER_TTL: u32 = 4;
/// The TTL of the waiting lease, which carries every queued key until it is granted: a killed
/// waiter stops blocking the queue within this (plus etcd's 500 ms expiry check), whatever
/// the hold lease's TTL.
pub(crate) const WAIT_TTL: Duration = Duration::from_secs(2);
/// How many TTLs the waiting lease's keeper goes on trying to renew without an answer before
/// it gives the lease up. A queued key vouches for no hold, so its lease needs no client-side
/// margin: it stays as long as the server keeps it, and etcd keeps it through a leader
/// election (the new leader extends every lease), however long the election takes. Giving it
/// up at the hold lease's 3/4 TTL would revoke every queued key of the instance, and the
/// waiters would queue again at the back in any order.
const WAITING_PATIENCE: u32 = 10;
/// Longest pause between attempts to revoke: short, as a client's balancer may keep picking a
/// dead member, whose attempts fail at once.
const REVOKE_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts to grant a new lease.
const GRANT_BACKOFF: Duration = Duration::from_millis(250);

/// One lease and the holds it vouches for.
pub(crate) struct Lease {
    lease: i64,
    ttl: Duration,
    holds: Arc<HoldSet>,
    dead: LossLatch,
}

impl Lease {
    fn new(lease: i64, ttl: Duration, validity: Validity, sent: std::time::Instant) -> Arc<Self> {
        let holds = HoldSet::new();
        holds.publish_deadline(validity.deadline(sent));
        Arc::new(Lease {
            lease,
            ttl,
            holds,
            dead: LossLatch::new(),
        })
    }

    /// The lease id.
    pub(crate) fn lease(&self) -> i64 {
        self.lease
    }

    /// The lease's TTL.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When the lease stops being vouched for, unless renewed.
    fn valid_until(&self) -> Instant {
        self.holds
            .deadline()
            .map_or_else(Instant::now, Instant::from_std)
    }

    /// Whether the lease is still vouched for right now.
    pub(crate) fn is_alive(&self) -> bool {
        self.death().is_none() && Instant::now() < self.valid_until()
    }

    /// Why the lease died, if it did.
    pub(crate) fn death(&self) -> Option<LostReason> {
        self.dead.reason().or_else(|| self.holds.lost_reason())
    }

    /// Ends the lease: every registered hold is lost with `reason`. Only the first call has an
    /// effect; returns whether this one did.
    pub(crate) fn kill(&self, reason: LostReason) -> bool {
        let holds = self.holds.len();
        self.holds.lose_all(reason.clone());
        let first = self.dead.fire(reason.clone());
        if first {
            if holds == 0 || reason == LostReason::Abandoned {
                tracing::debug!(lease = format_args!("{:x}", self.lease), %reason, "etcd lease given up");
            } else {
                tracing::warn!(lease = format_args!("{:x}", self.lease), %reason, holds, "etcd lease lost; its holds are lost");
            }
        }
        first
    }

    /// Resolves when the lease dies, with the reason.
    pub(crate) async fn died(&self) -> LostReason {
        self.dead.wait().await
    }

    /// Resolves when the lease dies or its validity runs out, whichever is first.
    pub(crate) async fn invalid(&self) -> LostReason {
        tokio::select! {
            reason = self.died() => reason,
            _ = self.validity_runs_out() => LostReason::RenewalFailed,
        }
    }

    async fn validity_runs_out(&self) {
        loop {
            let until = self.valid_until();
            if Instant::now() >= until {
                return;
            }
            sleep_until(until).await;
        }
    }

    /// Registers a hold: it gets the lease's validity deadline at once, and is lost when the
    /// lease dies (at once, if it is dead already). Dropping the ticket unregisters it.
    pub(crate) fn register(&self, notifier: HoldNotifier) -> HoldTicket {
        let ticket = self.holds.register(notifier);
        // A death recorded before the hold set heard of it must not be missed.
        if let Some(reason) = self.dead.reason() {
            ticket.notifier().lost(reason);
        }
        ticket
    }
}

/// One renewal of a lease: a keep-alive on the lease's stream (opened again when it broke).
struct KeepAlive {
    client: LeaseClient,
    lease: i64,
    /// How long one keep-alive may wait for its answer: half the TTL (at most the request
    /// timeout), which leaves time for another try before the hold lease's validity ends. A keep-alive stuck on a member that stopped answering, or
    /// waiting for an election, is given up and sent again on a new stream, which the
    /// balancer routes to a member that answers.
    attempt_timeout: Duration,
    addr: String,
    stream: tokio::sync::Mutex<Option<(LeaseKeeper, LeaseKeepAliveStream)>>,
    /// The hold lease's connection events: an answer after a failed request is Reconnected.
    monitor: Option<Arc<ConnectionMonitor>>,
}

#[async_trait]
impl Renew for KeepAlive {
    async fn renew(&self) -> Renewal {
        let renewal = self.exchange().await;
        if let (Renewal::Renewed, Some(monitor)) = (&renewal, &self.monitor) {
            if monitor.current() == ConnectionEvent::Suspended {
                monitor.emit(ConnectionEvent::Reconnected);
            }
        }
        renewal
    }
}

impl KeepAlive {
    /// One keep-alive. Cancel safe: the stream is taken out while the exchange runs and put
    /// back only after its answer was read, so an answer that arrives after a cancelled
    /// exchange can never be taken for the answer to a later one.
    async fn exchange(&self) -> Renewal {
        let mut slot = self.stream.lock().await;
        let Some((mut keeper, mut responses)) = slot.take() else {
            // Opening the stream is itself a renewal: its first exchange renews the lease.
            let mut client = self.client.clone();
            return match timeout(self.attempt_timeout, client.keep_alive(self.lease)).await {
                Ok(Ok(opened)) => {
                    *slot = Some(opened);
                    Renewal::Renewed
                }
                Ok(Err(e)) if error_map::is_lease_gone(&e) => {
                    Renewal::Gone(LostReason::SessionExpired)
                }
                Ok(Err(e)) => Renewal::Failed(error_map::map(&self.addr, e)),
                Err(_) => Renewal::Failed(self.no_answer()),
            };
        };
        if let Err(e) = keeper.keep_alive().await {
            return Renewal::Failed(error_map::map(&self.addr, e));
        }
        match timeout(self.attempt_timeout, responses.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                *slot = Some((keeper, responses));
                Renewal::Renewed
            }
            Ok(Ok(Some(_))) => Renewal::Gone(LostReason::SessionExpired),
            Ok(Ok(None)) => Renewal::Failed(Error::connection(
                BACKEND,
                self.addr.clone(),
                "the server closed the keep-alive stream",
            )),
            Ok(Err(e)) => Renewal::Failed(error_map::map(&self.addr, e)),
            Err(_) => Renewal::Failed(self.no_answer()),
        }
    }

    fn no_answer(&self) -> Error {
        Error::Timeout {
            operation: format!("keep-alive of lease {:x}", self.lease),
            addr: self.addr.clone(),
            after: self.attempt_timeout,
        }
    }
}

/// The current lease of one role (hold or waiting), shared by the instance's tasks.
pub(crate) struct Leases {
    current: watch::Sender<Option<Arc<Lease>>>,
    monitor: Arc<ConnectionMonitor>,
    /// Whether this role reports connection events (the hold lease does).
    reports: bool,
    shutdown: watch::Sender<bool>,
    addr: String,
}

impl Leases {
    pub(crate) fn monitor(&self) -> &ConnectionMonitor {
        &self.monitor
    }

    /// The current live lease, waiting up to `within` for one (while a new lease is granted
    /// or the connection is down).
    pub(crate) async fn live(&self, within: Duration) -> Result<Arc<Lease>> {
        let mut rx = self.current.subscribe();
        let wait = async {
            loop {
                if *self.shutdown.borrow() {
                    return Err(Error::Closed { backend: BACKEND });
                }
                if let Some(session) = rx.borrow_and_update().clone() {
                    if session.is_alive() {
                        return Ok(session);
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Closed { backend: BACKEND });
                }
            }
        };
        match timeout(within, wait).await {
            Ok(result) => result,
            Err(_) => Err(Error::connection(
                BACKEND,
                self.addr.clone(),
                format!("no live lease within {within:?}: the cluster did not answer lease grant or keep-alive"),
            )),
        }
    }

    /// The current lease whether alive or not (for shutdown and tests).
    pub(crate) fn current(&self) -> Option<Arc<Lease>> {
        self.current.borrow().clone()
    }

    /// Stops the keeper; the current lease dies with [`LostReason::Abandoned`].
    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
        if let Some(session) = self.current() {
            session.kill(LostReason::Abandoned);
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn emit(&self, event: ConnectionEvent) {
        if self.reports {
            self.monitor.emit(event);
        }
    }
}

/// What a lease role needs to grant and renew its leases.
pub(crate) struct LeaseRole {
    /// Names the role in logs.
    pub(crate) what: &'static str,
    pub(crate) ttl: Duration,
    /// Where to report connection events; `None` for the waiting lease.
    pub(crate) monitor: Option<Arc<ConnectionMonitor>>,
    /// How long after an answered keep-alive was sent a lease of this role counts as alive.
    pub(crate) validity: fn(Duration) -> Validity,
}

impl LeaseRole {
    /// The hold lease: every granted key. It vouches for holds, so it counts as alive for
    /// [`Validity::etcd`] (3/4 of the TTL) after the last answered keep-alive was sent.
    pub(crate) fn hold(ttl: Duration) -> Self {
        LeaseRole {
            what: "etcd hold lease",
            ttl,
            monitor: Some(Arc::new(ConnectionMonitor::new())),
            validity: Validity::etcd,
        }
    }

    /// The waiting lease: every queued key, with a TTL of at most [`WAIT_TTL`]. It is kept
    /// while the server may still have it (see [`WAITING_PATIENCE`]).
    pub(crate) fn waiting(ttl: Duration) -> Self {
        LeaseRole {
            what: "etcd waiting lease",
            ttl: ttl.min(WAIT_TTL),
            monitor: None,
            validity: |ttl| Validity::fixed(ttl * WAITING_PATIENCE),
        }
    }
}

/// Grants the first lease (failing fast) and starts the task that keeps it, and its
/// successors, alive.
pub(crate) async fn start(
    client: LeaseClient,
    role: LeaseRole,
    first_timeout: Duration,
    request_timeout: Duration,
    addr: String,
) -> Result<(Arc<Leases>, tokio::task::JoinHandle<()>)> {
    // Retry connection trouble (a member down, an election) until the connect deadline; fail
    // at once on anything else.
    let deadline = Instant::now() + first_timeout;
    let (first, _) = crate::retry::retry_until(deadline, first_timeout / 2, |within| {
        grant(&client, role.ttl, role.validity, within, &addr)
    })
    .await?;
    let (current, _) = watch::channel(Some(first.0.clone()));
    let (shutdown, _) = watch::channel(false);
    let leases = Arc::new(Leases {
        current,
        reports: role.monitor.is_some(),
        monitor: role
            .monitor
            .unwrap_or_else(|| Arc::new(ConnectionMonitor::new())),
        shutdown,
        addr,
    });
    let replacer = Replacer {
        client,
        what: role.what,
        ttl: role.ttl,
        validity: role.validity,
        request_timeout,
        leases: leases.clone(),
    };
    let task = tokio::spawn(replacer.run(first));
    Ok((leases, task))
}

/// Asks for a lease with `ttl` (the server may grant a longer one).
async fn grant(
    client: &LeaseClient,
    ttl: Duration,
    validity: fn(Duration) -> Validity,
    request_timeout: Duration,
    addr: &str,
) -> Result<(Arc<Lease>, std::time::Instant)> {
    let sent = std::time::Instant::now();
    let mut client = client.clone();
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let response = error_map::call(
        addr,
        || "lease grant".to_owned(),
        request_timeout,
        client.grant(secs, None),
    )
    .await?;
    if response.ttl() <= 0 {
        return Err(Error::backend(
            BACKEND,
            format!(
                "lease grant answered TTL {}: {}",
                response.ttl(),
                response.error()
            ),
        ));
    }
    let granted = Duration::from_secs(response.ttl().unsigned_abs());
    tracing::debug!(
        lease = format_args!("{:x}", response.id()),
        ttl = ?granted,
        "etcd lease granted"
    );
    Ok((
        Lease::new(response.id(), granted, validity(granted), sent),
        sent,
    ))
}

/// Revokes `lease`, once, best effort (its keys go at once instead of after the TTL).
pub(crate) async fn revoke(client: &LeaseClient, lease: i64, request_timeout: Duration) -> bool {
    let mut client = client.clone();
    match timeout(request_timeout, client.revoke(lease)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if error_map::is_lease_gone(&e) => true,
        Ok(Err(e)) => {
            tracing::debug!(lease = format_args!("{lease:x}"), error = %e, "lease revoke failed");
            false
        }
        Err(_) => false,
    }
}

/// Revokes `lease`, retrying (a member down, an election) until it worked or `give_up`
/// passed. Returns whether the lease is gone.
///
/// Each attempt gets at most a quarter of `request_timeout` (at least 250 ms), with pauses of
/// at most [`REVOKE_BACKOFF`]: while a leader is being elected, etcd drops proposals without an
/// answer, so one attempt given the whole request timeout would hang past the election and
/// leave no time for the attempt that the new leader answers.
pub(crate) async fn revoke_until(
    client: &LeaseClient,
    lease: i64,
    request_timeout: Duration,
    give_up: Instant,
) -> bool {
    let per_attempt = (request_timeout / 4).max(Duration::from_millis(250));
    let mut backoff = Backoff::new(Duration::from_millis(25), REVOKE_BACKOFF);
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        let within = per_attempt.min(left).max(Duration::from_millis(100));
        if revoke(client, lease, within).await {
            return true;
        }
        let pause = backoff.next_delay();
        if Instant::now() + pause >= give_up {
            return false;
        }
        sleep(pause).await;
    }
}

/// The task that has each lease renewed by a [`Keeper`] and replaces it when it is lost.
struct Replacer {
    client: LeaseClient,
    what: &'static str,
    ttl: Duration,
    validity: fn(Duration) -> Validity,
    request_timeout: Duration,
    leases: Arc<Leases>,
}

impl Replacer {
    async fn run(self, (first, granted_sent): (Arc<Lease>, std::time::Instant)) {
        let mut shutdown = self.leases.shutdown.subscribe();
        let (mut session, mut sent) = (first, granted_sent);
        loop {
            let span =
                tracing::info_span!("etcd_lease", lease = format_args!("{:x}", session.lease()));
            let reason = self.keep(&session, sent).instrument(span).await;
            session.kill(reason.clone());
            self.leases.current.send_if_modified(|current| {
                let ours = current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &session));
                if ours {
                    *current = None;
                }
                ours
            });
            if *shutdown.borrow() {
                return;
            }
            self.leases.emit(ConnectionEvent::Lost);
            if reason != LostReason::SessionExpired {
                // Our keys may still be on the store: revoke the lease (in the background, so
                // the next lease is not delayed), giving up once the store must have expired
                // it by itself.
                let give_up = Instant::now() + session.ttl + self.request_timeout;
                let (client, lease, request_timeout) =
                    (self.client.clone(), session.lease(), self.request_timeout);
                tokio::spawn(async move {
                    if !revoke_until(&client, lease, request_timeout, give_up).await {
                        tracing::debug!(
                            lease = format_args!("{lease:x}"),
                            "gave up revoking a lost etcd lease; it expires by itself"
                        );
                    }
                });
            }
            // Short attempts and pauses: once the store answers again, a new lease must come
            // quickly (an attempt stuck on a dead connection must not hold it up). A lease
            // granted by an attempt whose answer was lost is never kept alive and expires.
            let mut backoff = Backoff::new(Duration::from_millis(25), GRANT_BACKOFF);
            let per_attempt = (self.request_timeout / 2).max(Duration::from_millis(250));
            (session, sent) = loop {
                tokio::select! {
                    granted = grant(&self.client, self.ttl, self.validity, per_attempt, &self.leases.addr) => match granted {
                        Ok(granted) => break granted,
                        Err(error) => tracing::warn!(%error, "cannot grant a new etcd lease; retrying"),
                    },
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                tokio::select! {
                    _ = sleep(backoff.next_delay()) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            };
            self.leases.current.send_replace(Some(session.clone()));
            self.leases.emit(ConnectionEvent::Reconnected);
        }
    }

    /// Has lockcore's keeper renew `session` until it is lost (or killed here); returns why.
    async fn keep(&self, session: &Arc<Lease>, granted_sent: std::time::Instant) -> LostReason {
        let renew = Arc::new(KeepAlive {
            client: self.client.clone(),
            lease: session.lease(),
            attempt_timeout: (session.ttl / 2).min(self.request_timeout),
            addr: self.leases.addr.clone(),
            stream: tokio::sync::Mutex::new(None),
            monitor: self.leases.reports.then(|| self.leases.monitor.clone()),
        });
        let config = KeeperConfig {
            what: self.what,
            validity: (self.validity)(session.ttl),
            every: session.ttl / KEEPALIVES_PER_TTL,
            monitor: self.leases.reports.then(|| self.leases.monitor.clone()),
        };
        let keeper = Keeper::spawn(config, renew, session.holds.clone(), granted_sent);
        let mut shutdown = self.leases.shutdown.subscribe();
        tokio::select! {
            reason = keeper.ended() => reason,
            reason = session.died() => reason,
            _ = shutdown.wait_for(|stop| *stop) => LostReason::Abandoned,
        }
    }
}
