//! What every part of one backend instance shares: clients, layout, lease, watch stream, and
//! requests with deadlines and retries.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, KeyValue, KvClient, LeaseClient, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use lockcore::{Error, LockName, Result};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use crate::errors;
use crate::keys::Layout;
use crate::names::NameWatches;
use crate::session::{Leases, Session};

/// Longest pause between retries of a failed request.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(400);

pub(crate) struct Inner {
    pub(crate) kv: KvClient,
    pub(crate) lease_client: LeaseClient,
    pub(crate) layout: Layout,
    pub(crate) addr: String,
    pub(crate) request_timeout: Duration,
    pub(crate) names: NameWatches,
    pub(crate) leases: Arc<Leases>,
    mutex_keys: Arc<StdMutex<HashSet<String>>>,
    counter: AtomicU64,
    tasks: StdMutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        kv: KvClient,
        lease_client: LeaseClient,
        layout: Layout,
        addr: String,
        request_timeout: Duration,
        names: NameWatches,
        leases: Arc<Leases>,
        tasks: Vec<JoinHandle<()>>,
    ) -> Self {
        Inner {
            kv,
            lease_client,
            layout,
            addr,
            request_timeout,
            names,
            leases,
            mutex_keys: Arc::new(StdMutex::new(HashSet::new())),
            counter: AtomicU64::new(1),
            tasks: StdMutex::new(tasks),
        }
    }

    /// A number unique within this instance (for key suffixes).
    pub(crate) fn next_number(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Reserves the mutex key of `name` for one acquisition: Go's `NAME/<lease hex>` when this
    /// instance does not use it already, else `NAME/<lease hex>_<n>`. The key stays reserved
    /// until every clone of the returned [`Reservation`] is dropped, which only happens once
    /// the key is known to be gone from the store.
    pub(crate) fn reserve_mutex_key(&self, name: &LockName, lease: i64) -> (String, Reservation) {
        let mut keys = self.mutex_keys.lock().unwrap_or_else(|p| p.into_inner());
        let plain = self.layout.mutex_key(name, lease, None);
        let key = if keys.contains(&plain) {
            self.layout.mutex_key(name, lease, Some(self.next_number()))
        } else {
            plain
        };
        keys.insert(key.clone());
        let reservation = Reservation(Arc::new(ReservationInner {
            key: key.clone(),
            keys: self.mutex_keys.clone(),
        }));
        (key, reservation)
    }

    /// Runs one transaction with the request timeout.
    pub(crate) async fn txn_once(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        self.txn_within(what, txn, self.request_timeout).await
    }

    async fn txn_within(&self, what: &str, txn: Txn, within: Duration) -> Result<TxnResponse> {
        let mut kv = self.kv.clone();
        errors::call(&self.addr, || what.to_owned(), within, kv.txn(txn)).await
    }

    /// Runs an idempotent transaction, retrying connection trouble (a member down, a leader
    /// election) until the request timeout has passed.
    pub(crate) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        let deadline = Instant::now() + self.request_timeout;
        self.retry_until(deadline, |within| {
            self.txn_within(what, txn.clone(), within)
        })
        .await
        .map(|(response, _)| response)
    }

    /// Like [`Inner::txn`], and also says whether an earlier attempt may have been applied
    /// without its answer arriving.
    pub(crate) async fn txn_reporting_doubt(
        &self,
        what: &str,
        txn: Txn,
    ) -> Result<(TxnResponse, bool)> {
        let deadline = Instant::now() + self.request_timeout;
        self.retry_until(deadline, |within| {
            self.txn_within(what, txn.clone(), within)
        })
        .await
    }

    /// Runs an idempotent transaction, retrying connection trouble for as long as `session`
    /// is alive (a waiter has nothing better to do). `None` once the session died.
    pub(crate) async fn txn_while_alive(
        &self,
        what: &str,
        txn: Txn,
        session: &Session,
    ) -> Result<Option<TxnResponse>> {
        let mut pause = Duration::from_millis(25);
        let per_attempt = (self.request_timeout / 2).max(Duration::from_millis(250));
        loop {
            match self.txn_within(what, txn.clone(), per_attempt).await {
                Ok(response) => return Ok(Some(response)),
                Err(error) if error.is_transient() => {
                    if !session.is_alive() {
                        return Ok(None);
                    }
                    tracing::debug!(%error, "etcd request failed; retrying");
                    tokio::select! {
                        _ = sleep(pause) => {}
                        _ = session.invalid() => return Ok(None),
                    }
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Calls `attempt` (given the time it may take) until it succeeds, fails for a reason a
    /// retry cannot cure, or `deadline` passes. Also returns whether a failed attempt may have
    /// been applied by the store (its answer was lost).
    pub(crate) async fn retry_until<T, F, Fut>(
        &self,
        deadline: Instant,
        attempt: F,
    ) -> Result<(T, bool)>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // A request can hang on a member that just lost its leader; give each attempt half the
        // budget so a retry can reach the new leader in time.
        let per_attempt = (self.request_timeout / 2).max(Duration::from_millis(250));
        retry_until(deadline, per_attempt, attempt).await
    }

    /// Deletes `key` if it still has `revision` as create revision (or, with `revision` 0, if
    /// it is still attached to `session`'s lease). Retries while the session lives; once the
    /// lease is gone, the store removes the key by itself.
    pub(crate) async fn remove_key(&self, session: &Session, key: &str, revision: i64) {
        let mut pause = Duration::from_millis(50);
        loop {
            let guard = if revision > 0 {
                Compare::create_revision(key, CompareOp::Equal, revision)
            } else {
                Compare::lease(key, CompareOp::Equal, session.lease())
            };
            let txn = Txn::new()
                .when([guard])
                .and_then([TxnOp::delete(key, None)]);
            match self.txn_once("delete of a queue key", txn).await {
                Ok(_) => return,
                Err(error) if session.is_alive() && !self.leases.is_shut_down() => {
                    tracing::debug!(key, %error, "cannot delete etcd key yet; retrying");
                    sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(error) => {
                    tracing::debug!(key, %error, "giving up deleting etcd key; its lease is gone or going");
                    return;
                }
            }
        }
    }

    /// Stops the keeper and watch tasks.
    pub(crate) fn stop_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.leases.shut_down();
        // Revoke the lease so its keys go now rather than after the TTL (etcd #17470: a lease
        // must not outlive its owner), if a runtime is there to do it.
        if let (Some(session), Ok(runtime)) =
            (self.leases.current(), tokio::runtime::Handle::try_current())
        {
            let client = self.lease_client.clone();
            let timeout = self.request_timeout;
            runtime.spawn(async move {
                crate::session::revoke(&client, session.lease(), timeout).await;
            });
        }
        self.stop_tasks();
    }
}

/// A reserved mutex key (see [`Inner::reserve_mutex_key`]); cheap to clone.
#[derive(Clone)]
pub(crate) struct Reservation(#[allow(dead_code)] Arc<ReservationInner>);

struct ReservationInner {
    key: String,
    keys: Arc<StdMutex<HashSet<String>>>,
}

impl Drop for ReservationInner {
    fn drop(&mut self) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// The key-values of the `index`-th operation of a transaction's answer (empty if it was not a
/// range).
pub(crate) fn range_at(response: &TxnResponse, index: usize) -> Vec<KeyValue> {
    match response.op_responses().into_iter().nth(index) {
        Some(TxnOpResponse::Get(mut get)) => get.take_kvs(),
        _ => Vec::new(),
    }
}

/// The revision of a transaction's answer.
pub(crate) fn revision_of(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |h| h.revision())
}

/// Calls `attempt` (given the time it may take, at most `per_attempt`) until it succeeds, fails
/// for a reason a retry cannot cure, or `deadline` passes. Also returns whether a failed
/// attempt may have been applied by the store.
pub(crate) async fn retry_until<T, F, Fut>(
    deadline: Instant,
    per_attempt: Duration,
    mut attempt: F,
) -> Result<(T, bool)>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(25);
    let mut doubtful = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let within = left.min(per_attempt).max(Duration::from_millis(100));
        match attempt(within).await {
            Ok(value) => return Ok((value, doubtful)),
            Err(error) if error.is_transient() && Instant::now() + pause < deadline => {
                tracing::debug!(%error, "etcd request failed; retrying");
                doubtful = true;
                sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            Err(error) => return Err(error),
        }
    }
}

/// An error for an answer that does not have the shape every etcd server gives.
pub(crate) fn malformed(what: &str) -> Error {
    Error::backend(
        errors::BACKEND,
        format!("etcd answered {what} in an unexpected shape"),
    )
}
