//! # tumbler-etcd
//!
//! tumbler's etcd backend: every lockcore primitive (mutex, read-write lock, semaphore, leader
//! election, cooperative revocation, `state()`) on an etcd v3 cluster.
//!
//! - **Go-compatible mutex.** The mutex follows `clientv3/concurrency.Mutex`: the key
//!   `NAME/<lease id in hex>`, the lowest create revision under `NAME/` owns, and each waiter
//!   waits only for the key just before its own. So `etcdctl lock NAME` and Go services
//!   exclude with tumbler on the same name.
//! - **Two leases per backend instance**, each kept alive on its own stream and shared by all
//!   its locks: the *hold lease* (the `ttl` parameter) carries every granted key, the *waiting
//!   lease* (2 s) every queued key. When a waiter is granted, its key is put again with the
//!   hold lease; a put keeps the create revision, so the order and the fencing token stay.
//!   A queued key vouches for no hold, so the waiting lease is kept while the server may
//!   still have it (keep-alives go on for 10 TTLs without an answer): waiters keep their place
//!   through a leader election however long it lasts, as the new leader extends every lease.
//!   **Bounds:** a crashed holder's locks free up after the hold TTL (plus up to 1 s); a
//!   crashed or killed *waiter* stops blocking others within about 2.5 s (the waiting lease's
//!   2 s plus etcd's 500 ms expiry check), whatever the TTL; a cancelled or timed-out waiter
//!   deletes its key at once, on a connection and thread of its own, so even a process that
//!   exits right after giving up leaves nothing.
//! - **Losses**: a hold's `lost()` fires with `SessionExpired` when the lease expired or was
//!   revoked, `RenewalFailed` when keep-alives failed for 3/4 of the TTL (counted from the send
//!   time of the last acknowledged one, so before the server can expire the lease), `Deleted`
//!   when its key was deleted by someone else, `Abandoned` on shutdown.
//! - **Unreachable is an error**: a `try_lock` on a store that does not answer fails with
//!   `Timeout` (naming the time really spent) or `Connection` within the `timeout` parameter;
//!   a waiting acquisition fails once a request gets no answer within it. The first failed
//!   request reports `ConnectionEvent::Suspended`, the next answer `Reconnected`; a lost hold
//!   lease `Lost`, then `Reconnected` once a new one is granted.
//! - **Fencing token**: the key's create revision, which strictly increases per name.
//! - **Fast hand-off.** Waiters watch from the current revision, so their watchers are synced
//!   on the server and see a release at once; Go's Mutex watches from a past revision and waits
//!   for the server's 100 ms catch-up loop on every hand-off.
//! - **Read-write lock** (`NAME/#read/…`, `NAME/#write/…`, ordered by create revision):
//!   readers wait for the last writer before them, a writer for the last key before it. A
//!   downgrade rewrites the write key's value to `read` in place, keeping its create revision
//!   and so its place: no writer queued behind it can get in between.
//! - **Semaphore**: keys `NAME/#sem/…` with value `<permits>/<limit>`; the earliest contenders
//!   whose permits add up to at most the limit hold. Acquiring `n` is all-or-nothing and
//!   first-come first-served; a contender with another limit gets `Conflict`.
//! - **Leader election**, Go's `concurrency.Election` layout (`etcdctl elect NAME PROPOSAL`
//!   and Go services see our leader, we see theirs): a candidate's key is the mutex key
//!   `NAME/<lease hex>` with its proposal as value, the oldest candidate leads, the others wait
//!   in line as mutex waiters do (same waiting lease, cancellation and `lost()`). The term is
//!   the leader key's create revision; `proclaim` rewrites the value in place (same term);
//!   `leader()` reads the oldest key; `observe()` watches the leader's key. Values may be up to
//!   [`MAX_VALUE_LEN`] bytes (etcd's default 1.5 MiB request limit, which a campaign's first
//!   request fills with the value twice). An election and a mutex of one name share their keys
//!   in Go's recipes; tumbler tells them apart by the value (a mutex key is empty, a proposal
//!   never is) and refuses one as the other (`Conflict`). Go's clients check nothing: an
//!   `etcdctl lock` on an election's name queues among its candidates (and once its key is the
//!   oldest, tumbler candidates behind it get `Conflict`), and a Go candidate with an empty
//!   proposal counts as a mutex contender.
//! - **One name, one kind**: a name used as a mutex, read-write lock or semaphore and asked for
//!   as another kind gives `Conflict` naming both (the name's oldest key decides). A key
//!   directly under `NAME/` that neither tumbler nor Go's Mutex writes gives `Conflict` naming
//!   the key.
//! - **Nested names are independent**: the keys of the lock `a/b` lie under `a/`, but no lock
//!   `a` counts them (its own keys are `a/<hex>` and `a/#…/…`), for waiting, `try_lock` and
//!   `state()` alike.
//! - **Revocation**: `request_revoke` puts a marker key `NAME/#revoke/…` and deletes it at
//!   once; every holder's watcher sees the deletion and fires `revoke_requested()`.
//! - **Cheap waiting and watching**: a waiter watches only what can let it in (the key just
//!   before its own, the last writer before a reader; a semaphore waiter the one before it, or
//!   the holders' releases if it is the first to wait), so a release is delivered to the
//!   waiters it may admit, not to every contender (see the `acquire` module). A holder's own
//!   key and the lock's revocation markers are followed by watchers shared by every wait and
//!   hold of that name in the instance, which linger a few seconds after their last use; all
//!   watchers share one watch stream. An uncontended lock + unlock costs two requests (one
//!   transaction each way), like Go's Mutex.
//!
//! Two acquisitions of the same mutex name from one backend instance would share Go's key
//! `NAME/<lease>` (Go's Mutex lets a second `Lock` on the same session succeed at once). Here
//! the second one uses `NAME/<lease>_<n>` instead, a different key in the same queue, so the two
//! exclude each other like any two clients, and Go clients see just another contender.
//!
//! Choose a TTL well above the cluster's leader-election time: while a new leader is elected,
//! no keep-alive is answered, and a hold whose renewals fail for 3/4 of the TTL is reported
//! lost (and its lease revoked) rather than risk overlapping with the next holder. A waiter
//! whose waiting lease cannot be renewed for 1.5 s loses its place and queues again.
//!
//! Call `shutdown()` before the process exits: it revokes both leases, so every hold and
//! waiter of the instance is gone at once rather than after the TTL.
//!
//! # URLs
//!
//! ```text
//! etcd://[user:password@]host[:port][,host[:port]...][/key/prefix][?param=value&...]
//! etcds://...   (TLS; feature `tls`, on by default)
//! ```
//!
//! Give every member of the cluster, comma-separated; the port defaults to 2379 (port 0 is
//! refused). The path, if
//! any, is a key prefix for every key (`etcd://h:2379/app/locks` puts the lock `x` under
//! `app/locks/x/`); without one, keys are exactly those of `etcdctl lock NAME`. User and
//! password may be percent-encoded.
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `ttl` | lease TTL, whole seconds from 1s to 24h (a crashed holder's locks free up after about this long) | `10s` |
//! | `timeout` | deadline of one request | `5s` |
//! | `connect_timeout` | deadline to connect, log in and grant the lease | `5s` |
//! | `user`, `password` | credentials (instead of `user:password@`, not both) | none |
//! | `tls_ca` (or `ca`) | `etcds` only: PEM file of the CA that signed the members' certificates | none |
//! | `tls_cert`, `tls_key` (or `cert`, `key`) | `etcds` only: PEM files of a client certificate and its key | none |
//! | `domain` | `etcds` only: name to check the members' certificates against | the host |
//!
//! ```no_run
//! # async fn demo() -> tumbler_core::Result<()> {
//! let locks = tumbler_etcd::connect_url(
//!     "etcd://alice:secret@10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/myapp?ttl=15s",
//! ).await?;
//! let pool = locks.semaphore("db/connections", 10)?;
//! let lease = pool.acquire(2).await?;
//! lease.release().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod acquire;
mod backend;
mod cleaner;
mod config;
mod election;
mod error_map;
mod hold;
mod instance;
mod key_watch;
mod keys;
mod lease;
mod members;
mod queue;
mod retry;
mod shared_watchers;
mod state;
mod tls;
mod url;
mod watch;

pub use backend::{EtcdBackend, MAX_VALUE_LEN};
pub use config::{
    EtcdConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TTL,
    MAX_TTL, MIN_TTL,
};
#[cfg(feature = "tls")]
pub use tls::EtcdTls;
pub(crate) use tls::EtcdTls as TlsSettings;

/// Connects to the etcd cluster named by `url` (see the [crate documentation](crate) for the
/// grammar) and returns a shared backend.
///
/// Fails with `InvalidArgument` for a malformed URL, `Auth` for refused credentials, and
/// `Connection` or `Timeout` when no member answers within the connect timeout.
pub async fn connect_url(url: &str) -> tumbler_core::Result<tumbler_core::SharedBackend> {
    let backend = EtcdConfig::from_url(url)?.connect().await?;
    Ok(tumbler_core::share(backend))
}
