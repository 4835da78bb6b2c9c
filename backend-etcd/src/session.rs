//! The backend's one lease: granted at connect, kept alive on one stream, and replaced when it
//! is lost. Every key of every lock of the instance is attached to it.
//!
//! A [`Session`] is one lease. It vouches for its holds until the first of: the server says the
//! lease is gone (keep-alive answered with TTL 0, or a put fails with "lease not found"); 3/4 of
//! the TTL passed since the last *acknowledged* keep-alive was *sent* (the server cannot have
//! expired the lease before that, whatever happened to the connection); or the backend shuts
//! down. Then every hold registered with it is marked lost at once, and the keeper grants a new
//! lease for later acquisitions.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use etcd_client::{LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use lockcore::{ConnectionEvent, ConnectionMonitor, Error, HoldNotifier, LostReason, Result};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tracing::Instrument;

use crate::errors::{self, BACKEND};

/// The share of the TTL, counted from the send time of the last acknowledged keep-alive, for
/// which a lease is vouched for. The rest is the margin for timer lateness on a busy machine.
const VALIDITY_SHARE: f64 = 0.75;
/// Keep-alives per TTL.
const KEEPALIVES_PER_TTL: u32 = 4;
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One lease and the holds it vouches for.
pub(crate) struct Session {
    lease: i64,
    ttl: Duration,
    valid_until: StdMutex<Instant>,
    dead: watch::Sender<Option<LostReason>>,
    holds: StdMutex<HashMap<u64, Arc<HoldNotifier>>>,
    next_hold: AtomicU64,
}

impl Session {
    fn new(lease: i64, ttl: Duration, sent: Instant) -> Arc<Self> {
        let (dead, _) = watch::channel(None);
        Arc::new(Session {
            lease,
            ttl,
            valid_until: StdMutex::new(sent + ttl.mul_f64(VALIDITY_SHARE)),
            dead,
            holds: StdMutex::new(HashMap::new()),
            next_hold: AtomicU64::new(1),
        })
    }

    /// The lease id.
    pub(crate) fn lease(&self) -> i64 {
        self.lease
    }

    /// The TTL the server granted.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn valid_until(&self) -> Instant {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn extend(&self, until: Instant) {
        let mut valid = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        if until > *valid {
            *valid = until;
            // lockcore checks this deadline on the holder's clock as well, so a holder that was
            // stopped past it sees the loss as soon as it runs, before the keeper could react.
            for notifier in self
                .holds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
            {
                notifier.set_valid_until(Some(until.into_std()));
            }
        }
    }

    /// Whether the lease is still vouched for right now.
    pub(crate) fn is_alive(&self) -> bool {
        self.dead.borrow().is_none() && Instant::now() < self.valid_until()
    }

    /// Why the session died, if it did.
    pub(crate) fn death(&self) -> Option<LostReason> {
        self.dead.borrow().clone()
    }

    /// Ends the session: every registered hold is marked lost with `reason`. Only the first call
    /// has an effect; returns whether this one did.
    pub(crate) fn kill(&self, reason: LostReason) -> bool {
        let first = self.dead.send_if_modified(|dead| {
            if dead.is_none() {
                *dead = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            let holds: Vec<_> = self
                .holds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .map(|(_, n)| n)
                .collect();
            if holds.is_empty() && reason == LostReason::Abandoned {
                tracing::debug!(
                    lease = format_args!("{:x}", self.lease),
                    "etcd lease given up"
                );
            } else {
                tracing::warn!(
                    lease = format_args!("{:x}", self.lease),
                    %reason,
                    holds = holds.len(),
                    "etcd lease lost; its holds are lost"
                );
            }
            for notifier in holds {
                notifier.lost(reason.clone());
            }
        }
        first
    }

    /// Resolves when the session dies, with the reason.
    pub(crate) async fn died(&self) -> LostReason {
        let mut rx = self.dead.subscribe();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or(LostReason::Abandoned)
    }

    /// Resolves when the session dies or its validity runs out, whichever is first.
    pub(crate) async fn invalid(&self) -> LostReason {
        tokio::select! {
            reason = self.died() => reason,
            _ = self.validity_runs_out() => LostReason::Disconnected,
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

    /// Registers a hold to be marked lost when the session dies; if it is dead already, the
    /// hold is marked lost now. Returns the registration id for [`Session::unregister`].
    pub(crate) fn register(&self, notifier: Arc<HoldNotifier>) -> u64 {
        let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, notifier.clone());
        notifier.set_valid_until(Some(self.valid_until().into_std()));
        // A death between the check in the caller and the insert above must not be missed.
        if let Some(reason) = self.death() {
            self.unregister(id);
            notifier.lost(reason);
        }
        id
    }

    /// Forgets a hold (released).
    pub(crate) fn unregister(&self, id: u64) {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// The current session of a backend instance, shared by its tasks.
pub(crate) struct Leases {
    current: watch::Sender<Option<Arc<Session>>>,
    monitor: ConnectionMonitor,
    shutdown: watch::Sender<bool>,
    addr: String,
}

impl Leases {
    pub(crate) fn monitor(&self) -> &ConnectionMonitor {
        &self.monitor
    }

    /// The current live session, waiting up to `within` for one (while a new lease is granted
    /// or the connection is down).
    pub(crate) async fn live(&self, within: Duration) -> Result<Arc<Session>> {
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

    /// The current session whether alive or not (for shutdown and tests).
    pub(crate) fn current(&self) -> Option<Arc<Session>> {
        self.current.borrow().clone()
    }

    /// Stops the keeper; the current session dies with [`LostReason::Abandoned`].
    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
        if let Some(session) = self.current() {
            session.kill(LostReason::Abandoned);
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Grants the first lease (failing fast) and starts the keeper that keeps it, and its
/// successors, alive.
pub(crate) async fn start(
    client: LeaseClient,
    ttl: Duration,
    first_timeout: Duration,
    request_timeout: Duration,
    addr: String,
) -> Result<(Arc<Leases>, tokio::task::JoinHandle<()>)> {
    // Retry connection trouble (a member down, an election) until the connect deadline; fail
    // at once on anything else.
    let deadline = Instant::now() + first_timeout;
    let (first, _) = crate::inner::retry_until(deadline, first_timeout / 2, |within| {
        grant(&client, ttl, within, &addr)
    })
    .await?;
    let (current, _) = watch::channel(Some(first.clone()));
    let (shutdown, _) = watch::channel(false);
    let leases = Arc::new(Leases {
        current,
        monitor: ConnectionMonitor::new(),
        shutdown,
        addr,
    });
    let keeper = Keeper {
        client,
        ttl,
        request_timeout,
        leases: leases.clone(),
    };
    let task = tokio::spawn(keeper.run(first));
    Ok((leases, task))
}

/// Asks for a lease with `ttl` (the server may grant a longer one).
async fn grant(
    client: &LeaseClient,
    ttl: Duration,
    request_timeout: Duration,
    addr: &str,
) -> Result<Arc<Session>> {
    let sent = Instant::now();
    let mut client = client.clone();
    let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let response = errors::call(
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
    Ok(Session::new(response.id(), granted, sent))
}

/// Revokes `lease`, once, best effort (its keys go at once instead of after the TTL).
pub(crate) async fn revoke(client: &LeaseClient, lease: i64, request_timeout: Duration) -> bool {
    let mut client = client.clone();
    match timeout(request_timeout, client.revoke(lease)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if errors::is_lease_gone(&e) => true,
        Ok(Err(e)) => {
            tracing::debug!(lease = format_args!("{lease:x}"), error = %e, "lease revoke failed");
            false
        }
        Err(_) => false,
    }
}

/// The task that keeps the current lease alive and replaces it when it is lost.
struct Keeper {
    client: LeaseClient,
    ttl: Duration,
    request_timeout: Duration,
    leases: Arc<Leases>,
}

impl Keeper {
    async fn run(self, first: Arc<Session>) {
        let mut shutdown = self.leases.shutdown.subscribe();
        let mut session = first;
        loop {
            let span =
                tracing::info_span!("etcd_lease", lease = format_args!("{:x}", session.lease()));
            let reason = self.keep_alive(&session).instrument(span).await;
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
            self.leases.monitor.emit(ConnectionEvent::Lost);
            if reason != LostReason::SessionExpired {
                // Our keys may still be on the store: remove them rather than wait for the TTL.
                let client = self.client.clone();
                let (lease, timeout) = (session.lease(), self.request_timeout);
                tokio::spawn(async move {
                    revoke(&client, lease, timeout).await;
                });
            }
            let mut backoff = Duration::from_millis(50);
            session = loop {
                tokio::select! {
                    granted = grant(&self.client, self.ttl, self.request_timeout, &self.leases.addr) => match granted {
                        Ok(session) => break session,
                        Err(error) => tracing::warn!(%error, "cannot grant a new etcd lease; retrying"),
                    },
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                tokio::select! {
                    _ = sleep(backoff) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            };
            self.leases.current.send_replace(Some(session.clone()));
            self.leases.monitor.emit(ConnectionEvent::Reconnected);
        }
    }

    /// Keeps `session` alive until it is lost; returns why.
    async fn keep_alive(&self, session: &Session) -> LostReason {
        let mut shutdown = self.leases.shutdown.subscribe();
        let period = session.ttl() / KEEPALIVES_PER_TTL;
        let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut pending: VecDeque<Instant> = VecDeque::new();
        let mut next_send = Instant::now() + period;
        let mut backoff = Duration::from_millis(50);
        let mut disconnected = false;
        loop {
            if *shutdown.borrow() {
                return LostReason::Abandoned;
            }
            if let Some(reason) = session.death() {
                return reason;
            }
            let valid_until = session.valid_until();
            if Instant::now() >= valid_until {
                return if disconnected {
                    LostReason::Disconnected
                } else {
                    LostReason::RenewalFailed
                };
            }
            if stream.is_none() {
                match self.open(session, valid_until).await {
                    Ok(opened) => {
                        stream = Some(opened);
                        pending.clear();
                        next_send = Instant::now() + period;
                        backoff = Duration::from_millis(50);
                        if disconnected {
                            disconnected = false;
                            tracing::info!("etcd keep-alive stream re-established");
                            self.leases.monitor.emit(ConnectionEvent::Reconnected);
                        }
                    }
                    Err(Opened::Gone) => return LostReason::SessionExpired,
                    Err(Opened::Failed(error)) => {
                        if !disconnected {
                            tracing::warn!(%error, "etcd keep-alive stream failed; reconnecting");
                            disconnected = true;
                            self.leases.monitor.emit(ConnectionEvent::Suspended);
                        }
                        let wake = (Instant::now() + backoff).min(valid_until);
                        backoff = (backoff * 2).min(MAX_BACKOFF).min(session.ttl() / 8);
                        tokio::select! {
                            _ = sleep_until(wake) => {}
                            _ = shutdown.changed() => {}
                            _ = session.died() => {}
                        }
                        continue;
                    }
                }
            }
            let Some((keeper, responses)) = stream.as_mut() else {
                continue;
            };
            let mut broken = None;
            tokio::select! {
                _ = sleep_until(valid_until) => {}
                _ = shutdown.changed() => {}
                _ = session.died() => {}
                _ = sleep_until(next_send) => {
                    next_send = Instant::now() + period;
                    let sent = Instant::now();
                    match keeper.keep_alive().await {
                        Ok(()) => pending.push_back(sent),
                        Err(e) => broken = Some(e.to_string()),
                    }
                }
                message = responses.message() => match message {
                    Ok(Some(response)) if response.ttl() > 0 => {
                        if let Some(sent) = pending.pop_front() {
                            let ttl = Duration::from_secs(response.ttl().unsigned_abs());
                            session.extend(sent + ttl.mul_f64(VALIDITY_SHARE));
                            tracing::trace!(ttl = response.ttl(), "etcd lease renewed");
                        }
                    }
                    Ok(Some(_)) => return LostReason::SessionExpired,
                    Ok(None) => broken = Some("the server closed the stream".to_owned()),
                    Err(e) => broken = Some(e.to_string()),
                },
            }
            if let Some(error) = broken {
                tracing::warn!(%error, "etcd keep-alive stream broke; reconnecting");
                stream = None;
                disconnected = true;
                self.leases.monitor.emit(ConnectionEvent::Suspended);
            }
        }
    }

    /// Opens a keep-alive stream; its first exchange renews the lease.
    async fn open(
        &self,
        session: &Session,
        valid_until: Instant,
    ) -> std::result::Result<(LeaseKeeper, LeaseKeepAliveStream), Opened> {
        let mut client = self.client.clone();
        let sent = Instant::now();
        let limit = self.request_timeout.min(valid_until - sent);
        match timeout(limit, client.keep_alive(session.lease())).await {
            Ok(Ok(opened)) => {
                session.extend(sent + session.ttl().mul_f64(VALIDITY_SHARE));
                Ok(opened)
            }
            Ok(Err(e)) if errors::is_lease_gone(&e) => Err(Opened::Gone),
            Ok(Err(e)) => Err(Opened::Failed(e.to_string())),
            Err(_) => Err(Opened::Failed(format!(
                "no keep-alive answer within {limit:?}"
            ))),
        }
    }
}

enum Opened {
    Gone,
    Failed(String),
}
