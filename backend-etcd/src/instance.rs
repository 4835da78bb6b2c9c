//! What every part of one backend instance shares: clients, layout, lease, watch stream, and
//! requests with deadlines and retries.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, KeyValue, KvClient, LeaseClient, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tumbler_core::retry::Backoff;
use tumbler_core::{ConnectionEvent, Error, LockName, Result};

use crate::cleaner::Cleaner;
use crate::error_map;
use crate::keys::Layout;
use crate::lease::{Lease, Leases};
use crate::queue::Queue;
use crate::retry::retry_until;
use crate::shared_watchers::SharedWatches;

pub(crate) struct Instance {
    pub(crate) kv: KvClient,
    pub(crate) lease_client: LeaseClient,
    pub(crate) layout: Layout,
    pub(crate) addr: String,
    pub(crate) request_timeout: Duration,
    pub(crate) watches: SharedWatches,
    /// The hold lease: every granted key is attached to it.
    pub(crate) leases: Arc<Leases>,
    /// The short waiting lease: every queued, not yet granted key is attached to it.
    pub(crate) waiting: Arc<Leases>,
    /// The runtime the backend was connected on: drop paths fall back to it.
    pub(crate) runtime: tokio::runtime::Handle,
    /// The connection for cleanups that must outlive the caller's runtime.
    cleaner: Option<Cleaner>,
    /// The keys an acquisition or hold of this instance knows (see [`Reservation`]).
    live_keys: Arc<StdMutex<HashSet<String>>>,
    /// Our keys whose deletion is under way, by lock prefix (with how many deletions each).
    cleanups: Arc<watch::Sender<Cleanups>>,
    counter: AtomicU64,
    tasks: StdMutex<Vec<JoinHandle<()>>>,
}

impl Instance {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        kv: KvClient,
        lease_client: LeaseClient,
        layout: Layout,
        addr: String,
        request_timeout: Duration,
        watches: SharedWatches,
        leases: Arc<Leases>,
        waiting: Arc<Leases>,
        cleaner: Option<Cleaner>,
        tasks: Vec<JoinHandle<()>>,
    ) -> Self {
        Instance {
            kv,
            lease_client,
            layout,
            addr,
            request_timeout,
            watches,
            leases,
            waiting,
            runtime: tokio::runtime::Handle::current(),
            cleaner,
            live_keys: Arc::new(StdMutex::new(HashSet::new())),
            cleanups: Arc::new(watch::channel(HashMap::new()).0),
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
        let mut keys = self.live_keys.lock().unwrap_or_else(|p| p.into_inner());
        let plain = self.layout.mutex_key(name, lease, None);
        let key = if keys.contains(&plain) {
            self.layout.mutex_key(name, lease, Some(self.next_number()))
        } else {
            plain
        };
        keys.insert(key.clone());
        drop(keys);
        let reservation = self.reservation(key.clone());
        (key, reservation)
    }

    /// Reserves `key`, a name unique to one acquisition, as [`Instance::reserve_mutex_key`]
    /// does.
    pub(crate) fn reserve_key(&self, key: String) -> Reservation {
        self.live_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        self.reservation(key)
    }

    fn reservation(&self, key: String) -> Reservation {
        Reservation(Arc::new(ReservationInner {
            key,
            keys: self.live_keys.clone(),
        }))
    }

    /// Our keys in `queue` (on one of `leases`) that no acquisition or hold of this instance
    /// knows: a create whose answer was lost (the request timed out while the network held
    /// it) and that the store applied after the acquisition's cleanup had run. Nobody else
    /// writes keys on our leases, so they are ours to delete; left alone, one would keep the
    /// lock for as long as its lease lives.
    pub(crate) fn orphans(&self, queue: &Queue, leases: [i64; 2]) -> Vec<(Vec<u8>, i64)> {
        let live = self.live_keys.lock().unwrap_or_else(|p| p.into_inner());
        queue
            .entries()
            .filter(|entry| leases.contains(&entry.lease))
            .filter(|entry| std::str::from_utf8(&entry.key).is_ok_and(|key| !live.contains(key)))
            .map(|entry| (entry.key.clone(), entry.create_revision))
            .collect()
    }

    /// Deletes `orphans` (see [`Instance::orphans`]), each only while it still has the create
    /// revision it was seen with, until `deadline`.
    pub(crate) async fn delete_orphans(
        &self,
        name: &LockName,
        orphans: &[(Vec<u8>, i64)],
        deadline: Instant,
    ) -> Result<()> {
        for (key, revision) in orphans {
            tracing::debug!(
                key = %String::from_utf8_lossy(key),
                "deleting a key of ours that no acquisition knows (its create's answer was lost)"
            );
            let txn = Txn::new()
                .when([Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    *revision,
                )])
                .and_then([TxnOp::delete(key.clone(), None)]);
            let what = format!("deleting a stray key of ours under {name}");
            self.txn_until(&what, txn, deadline).await?;
        }
        Ok(())
    }

    /// Reads the lock `name` and deletes our keys there that no acquisition knows (see
    /// [`Instance::orphans`]). A cancelled acquisition whose create's answer was lost runs
    /// this once its deletion is done: the create may have reached the store after it.
    pub(crate) async fn sweep_orphans(&self, name: &LockName, leases: [i64; 2]) -> Result<()> {
        let prefix = self.layout.lock_prefix(name);
        let read = TxnOp::get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        );
        let what = format!("looking for stray keys of ours under {name}");
        let response = self.txn(&what, Txn::new().and_then([read])).await?;
        let Ok(queue) = Queue::read(name, &prefix, range_at(&response, 0)) else {
            // Foreign data under the lock: the next acquisition reports it.
            return Ok(());
        };
        let orphans = self.orphans(&queue, leases);
        self.delete_orphans(name, &orphans, Instant::now() + self.request_timeout)
            .await
    }

    /// Notes that our `key` under `lock_prefix` is being deleted, until the returned ticket
    /// is dropped.
    pub(crate) fn cleanup_ticket(&self, lock_prefix: &str, key: &str) -> CleanupTicket {
        self.cleanups.send_modify(|pending| {
            *pending
                .entry(lock_prefix.to_owned())
                .or_default()
                .entry(key.to_owned())
                .or_default() += 1;
        });
        CleanupTicket {
            prefix: lock_prefix.to_owned(),
            key: key.to_owned(),
            cleanups: self.cleanups.clone(),
        }
    }

    /// Our keys under `lock_prefix` that are being deleted (abandoned by a cancelled attempt
    /// or a dropped hold). A new attempt deletes them with its enqueue, so a key of ours whose
    /// deletion is still retrying never makes this very instance look busy.
    pub(crate) fn abandoned_keys(&self, lock_prefix: &str) -> Vec<String> {
        self.cleanups
            .borrow()
            .get(lock_prefix)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs one transaction, once, with the request timeout.
    pub(crate) async fn txn_once(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        self.txn_within(what, txn, self.request_timeout).await
    }

    /// One attempt limited to `within`. Every request of the instance passes here, so a
    /// failure reports the connection Suspended at once and the next answer Reconnected.
    async fn txn_within(&self, what: &str, txn: Txn, within: Duration) -> Result<TxnResponse> {
        let mut kv = self.kv.clone();
        let answer = error_map::call(&self.addr, || what.to_owned(), within, kv.txn(txn)).await;
        let monitor = self.leases.monitor();
        match &answer {
            Err(error) if error.is_transient() => {
                if matches!(
                    monitor.current(),
                    ConnectionEvent::Connected | ConnectionEvent::Reconnected
                ) && monitor.emit(ConnectionEvent::Suspended)
                {
                    tracing::warn!(%error, "etcd request failed; connection suspended");
                }
            }
            Ok(_) => {
                let alive = self.leases.current().is_some_and(|s| s.is_alive());
                if alive && monitor.current() == ConnectionEvent::Suspended {
                    monitor.emit(ConnectionEvent::Reconnected);
                }
            }
            Err(_) => {}
        }
        answer
    }

    /// Runs an idempotent transaction, retrying connection trouble (a member down, a leader
    /// election) until the request timeout has passed.
    pub(crate) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        self.txn_until(what, txn, Instant::now() + self.request_timeout)
            .await
    }

    /// Runs an idempotent transaction, retrying connection trouble until `deadline`; the
    /// error then says how long it really took.
    pub(crate) async fn txn_until(
        &self,
        what: &str,
        txn: Txn,
        deadline: Instant,
    ) -> Result<TxnResponse> {
        self.retry_until(deadline, |within| {
            self.txn_within(what, txn.clone(), within)
        })
        .await
        .map(|(response, _)| response)
    }

    /// Like [`Instance::txn`], and also says whether an earlier attempt may have been applied
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

    /// Runs a cleanup in the background: on the cleanup connection's own runtime when there is
    /// one (it survives the caller's runtime), else on the current or the connecting runtime.
    pub(crate) fn spawn_cleanup(
        &self,
        what: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        match &self.cleaner {
            Some(cleaner) => cleaner.spawn(task),
            None => tumbler_core::cleanup::spawn_detached_on(Some(&self.runtime), what, task),
        }
    }

    /// Whether cleanups run on their own connection and thread (see [`crate::cleaner`]).
    pub(crate) fn has_cleaner(&self) -> bool {
        self.cleaner.is_some()
    }

    /// Deletes `key` if it still has `revision` as create revision (with `revision` 0: as it
    /// is; our keys' names carry our lease id and are reserved in this instance, so nobody
    /// else writes them), over the cleanup connection. Retries while the session lives; once
    /// the lease is gone, the store removes the key by itself.
    pub(crate) async fn remove_key(&self, session: &Lease, key: &str, revision: i64) {
        let kv = self
            .cleaner
            .as_ref()
            .map_or_else(|| self.kv.clone(), |c| c.kv.clone());
        let guards = if revision > 0 {
            vec![Compare::create_revision(key, CompareOp::Equal, revision)]
        } else {
            Vec::new()
        };
        let txn = Txn::new().when(guards).and_then([TxnOp::delete(key, None)]);
        let attempt = || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            let live = session.is_alive() && !self.leases.is_shut_down();
            async move {
                let answer = error_map::call(
                    &self.addr,
                    || "delete of a queue key".to_owned(),
                    self.request_timeout,
                    kv.txn(txn),
                )
                .await;
                match answer {
                    // Once the lease is gone or going, the store removes the key by itself.
                    Err(error) if !live => Err(Error::backend(error_map::BACKEND, error)),
                    other => other,
                }
            }
        };
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(250));
        if let Err(error) = tumbler_core::retry::retry(backoff, None, attempt).await {
            tracing::debug!(key, %error, "giving up deleting etcd key; its lease is gone or going");
        }
    }

    /// Whether the store says `lease` no longer exists (expired or revoked), asking until the
    /// request timeout (a leader election may be under way). False when it cannot tell.
    pub(crate) async fn lease_gone(&self, lease: i64) -> bool {
        let deadline = Instant::now() + self.request_timeout;
        let asked = self
            .retry_until(deadline, |within| {
                let mut client = self.lease_client.clone();
                async move {
                    error_map::call(
                        &self.addr,
                        || "lease lookup".to_owned(),
                        within,
                        client.time_to_live(lease, None),
                    )
                    .await
                }
            })
            .await;
        match asked {
            Ok((answer, _)) => answer.ttl() < 1,
            Err(error) => error_map::says_lease_gone(&error),
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

impl Drop for Instance {
    fn drop(&mut self) {
        // Revoke the leases so their keys go now rather than after the TTL (etcd #17470: a
        // lease must not outlive its owner).
        let sessions: Vec<_> = [&self.leases, &self.waiting]
            .into_iter()
            .filter_map(|leases| {
                let current = leases.current();
                leases.shut_down();
                current
            })
            .collect();
        if !sessions.is_empty() {
            let client = self
                .cleaner
                .as_ref()
                .map_or_else(|| self.lease_client.clone(), |c| c.leases.clone());
            let timeout = self.request_timeout;
            self.spawn_cleanup("revoke etcd leases", async move {
                for session in sessions {
                    crate::lease::revoke(&client, session.lease(), timeout).await;
                }
            });
        }
        self.stop_tasks();
    }
}

type Cleanups = HashMap<String, HashMap<String, usize>>;

/// A deletion of one of our keys under way (see [`Instance::cleanup_ticket`]).
pub(crate) struct CleanupTicket {
    prefix: String,
    key: String,
    cleanups: Arc<watch::Sender<Cleanups>>,
}

impl Drop for CleanupTicket {
    fn drop(&mut self) {
        self.cleanups.send_modify(|pending| {
            let Some(keys) = pending.get_mut(&self.prefix) else {
                return;
            };
            if let Some(count) = keys.get_mut(&self.key) {
                *count -= 1;
                if *count == 0 {
                    keys.remove(&self.key);
                }
            }
            if keys.is_empty() {
                pending.remove(&self.prefix);
            }
        });
    }
}

/// A reserved mutex key (see [`Instance::reserve_mutex_key`]); cheap to clone.
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
