//! # backend-etcd
//!
//! tumbler's etcd backend: every lockcore primitive (mutex, read-write lock, semaphore,
//! cooperative revocation, `state()`) on an etcd v3 cluster.
//!
//! - **Go-compatible mutex.** The mutex follows `clientv3/concurrency.Mutex`: the key
//!   `NAME/<lease id in hex>` attached to the backend's lease, the lowest create revision under
//!   `NAME/` owns, and each waiter waits only for the key just before its own. So
//!   `etcdctl lock NAME` and Go services exclude with tumbler on the same name.
//! - **One lease per backend instance**, kept alive on one stream and shared by all its locks.
//!   A hold's `lost()` fires when the lease expires or is revoked, when keep-alives have failed
//!   for 3/4 of the TTL (counted from the send time of the last acknowledged one, so before the
//!   server can expire the lease), or when the hold's key is deleted by someone else.
//! - **Fencing token**: the key's create revision, which strictly increases per name.
//! - **Fast hand-off.** Waiters watch from the current revision, so their watchers are synced
//!   on the server and see a release at once; Go's Mutex watches from a past revision and waits
//!   for the server's 100 ms catch-up loop on every hand-off.
//! - **Read-write lock** in the layout of etcd's `recipes` RWMutex (`NAME/read/…`,
//!   `NAME/write/…`, ordered by create revision): readers wait for the last writer before them,
//!   a writer for the last key before it. A downgrade rewrites the write key's value to `read`
//!   in place, keeping its create revision and so its place: no writer queued behind it can
//!   get in between.
//! - **Semaphore**: keys `NAME/sem/…` with value `<permits>/<limit>`; the earliest contenders
//!   whose permits add up to at most the limit hold. Acquiring `n` is all-or-nothing and
//!   first-come first-served.
//! - **Revocation**: `request_revoke` puts a marker key `NAME/#revoke/…` and deletes it at
//!   once; every holder's watcher sees the deletion and fires `revoke_requested()`.
//! - **Cheap waiting and watching**: one watcher per lock name (deletions under `NAME/` only)
//!   is shared by every wait and hold of that name in the instance and lingers a few seconds
//!   after its last use, all on one watch stream. An uncontended lock + unlock costs two
//!   requests (one transaction each way), like Go's Mutex.
//!
//! Two acquisitions of the same mutex name from one backend instance would share Go's key
//! `NAME/<lease>` (Go's Mutex lets a second `Lock` on the same session succeed at once). Here
//! the second one uses `NAME/<lease>_<n>` instead, a different key in the same queue, so the two
//! exclude each other like any two clients, and Go clients see just another contender.
//!
//! Choose a TTL well above the cluster's leader-election time: while a new leader is elected,
//! no keep-alive is answered, and a hold whose renewals fail for 3/4 of the TTL is reported
//! lost (and its lease revoked) rather than risk overlapping with the next holder.
//!
//! Names nest as in Go's Mutex: the keys of the lock `a/b` lie under `a/`, so a holder of `a/b`
//! makes the mutex `a` wait (never the other way round). Use sibling names for unrelated locks.
//!
//! # URLs
//!
//! ```text
//! etcd://[user:password@]host[:port][,host[:port]...][/key/prefix][?param=value&...]
//! etcds://...   (TLS; feature `tls`, on by default)
//! ```
//!
//! Give every member of the cluster, comma-separated; the port defaults to 2379. The path, if
//! any, is a key prefix for every key (`etcd://h:2379/app/locks` puts the lock `x` under
//! `app/locks/x/`); without one, keys are exactly those of `etcdctl lock NAME`. User and
//! password may be percent-encoded.
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `ttl` | lease TTL, whole seconds from 1s to 24h (a crashed holder's locks free up after about this long) | `10s` |
//! | `timeout` | deadline of one request | `5s` |
//! | `connect_timeout` | deadline to connect, log in and grant the lease | `5s` |
//! | `user`, `password` | credentials (instead of `user:password@`) | none |
//! | `ca` | `etcds` only: PEM file of the CA that signed the members' certificates | none |
//! | `cert`, `key` | `etcds` only: PEM files of a client certificate and its key | none |
//! | `domain` | `etcds` only: name to check the members' certificates against | the host |
//!
//! ```no_run
//! # async fn demo() -> lockcore::Result<()> {
//! let locks = backend_etcd::connect_url(
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
mod config;
mod errors;
mod hold;
mod inner;
mod keys;
mod names;
mod own_key;
mod session;
mod state;
mod tls;
mod url;
mod watch;

pub use backend::EtcdBackend;
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
pub async fn connect_url(url: &str) -> lockcore::Result<lockcore::SharedBackend> {
    let backend: lockcore::SharedBackend = EtcdConfig::from_url(url)?.connect().await?;
    Ok(backend)
}
