//! # tumbler-zookeeper
//!
//! tumbler's ZooKeeper backend: mutexes, read-write locks, semaphores and elections on Curator's
//! recipes (InterProcessMutex, InterProcessReadWriteLock, InterProcessSemaphoreV2, LeaderLatch),
//! so a Java service using Curator and a Rust service using tumbler exclude each other (and
//! elect one leader) on the same znode path.
//! See [`ZkBackend`] for the guarantees.
//!
//! ## URL
//!
//! ```text
//! zk://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][/BASE/PATH][?PARAM=VALUE&...]
//! zk+tls://...   (TLS; or ?tls=true)
//! ```
//!
//! (`zookeeper://` and `zookeeper+tls://` work too.)
//!
//! | part | meaning | default |
//! |---|---|---|
//! | `USER:PASSWORD@` (or `?user=&password=`, not both) | ZooKeeper `digest` credentials (percent-encode `:` `@` `/`). A lock's own folder and nodes are created with an ACL giving these credentials every permission and everyone else READ only, so other users cannot delete them or queue on that lock; the shared parent folders (base path, leading name segments) are open, so other users' sibling locks work. | none: open ACL |
//! | `HOST:PORT,...` | the ensemble members | port 2181 |
//! | `/BASE/PATH` | znode folder under which lock names live: lock `jobs/nightly` is `/BASE/PATH/jobs/nightly` (give Curator that path) | `/` |
//! | `session_timeout` (or `ttl`) | session timeout asked of the servers, e.g. `6s`; a crashed holder (or killed waiter) frees its locks after about this long, a cut-off holder reports `lost()` after the timeout minus max(1 s, a third of it) | `10s` |
//! | `connect_timeout` | how long connecting may take | `10s` |
//! | `request_timeout` | how long one request may take, retries included: `try_lock` on a server that does not answer fails with `Timeout` after about this long | the session timeout |
//! | `tls` | `true`: connect over TLS (the servers' `secureClientPort`, Netty) | `false` (`true` for `zk+tls://`) |
//! | `tls_ca` | PEM file of the CA that signed the servers' certificates; required with TLS | none |
//! | `tls_cert`, `tls_key` | PEM files of this client's certificate and key (ZooKeeper asks for one unless `ssl.clientAuth=none`) | none |
//! | `tls_insecure` | `true`: accept a server certificate issued for another host name (the chain is still checked against `tls_ca`) | `false` |
//!
//! ```no_run
//! # async fn demo() -> tumbler_core::Result<()> {
//! let locks = tumbler_zookeeper::connect_url("zk://app:secret@zk1:2181,zk2:2181,zk3:2181/locks?session_timeout=6s").await?;
//! let rw = locks.rwlock("config")?;
//! let writer = rw.write().await?;
//! let reader = writer.downgrade().await?; // no writer can slip in between
//! reader.release().await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout on the servers
//!
//! | primitive | znodes under the lock's folder |
//! |---|---|
//! | mutex | `_c_<uuid>-lock-<seq>` (ephemeral sequential) |
//! | read-write lock | `_c_<uuid>-__READ__<seq>`, `_c_<uuid>-__WRIT__<seq>` |
//! | semaphore | `locks/_c_<uuid>-lock-<seq>` (a mutex) and `leases/_c_<uuid>-lease-<seq>`, one per permit; the data of `leases` records the limit (`tumbler-semaphore-limit=N`) |
//! | election | `_c_<uuid>-latch-<seq>` (ephemeral sequential, data = the campaign value, LeaderLatch's participant id); the lowest leads, its czxid is the term |
//!
//! Folders are created as container nodes, which the servers remove once empty.
//!
//! ## One name, one kind
//!
//! A name is used by one kind of primitive at a time: asking for a mutex, read-write lock or
//! semaphore on a name another kind holds or waits on gives [`tumbler_core::Error::Conflict`]
//! naming both kinds, and a semaphore handle whose limit differs from the one recorded on the
//! store gives `Conflict` too; so does a campaign or `leader()` on a name used by a lock, and a
//! lock on a name used by an election. Nested names (`a` and `a/b`) are independent locks. A
//! node under a lock's folder that no lock client wrote (a persistent node named like a lock
//! node, data in `leases` that is not a limit record, an ephemeral node in an election's folder
//! that is no candidate) gives `Conflict` naming the node.
//!
//! ## Validity and events
//!
//! Each hold's signals carry a validity deadline from the grant: the send time of the last
//! request the servers answered (the acquiring request, then every heartbeat) plus the session
//! timeout minus max(1 s, a third of it). A holder stalled past it sees `lost_reason()` at its
//! next look. The servers expiring the session is [`tumbler_core::LostReason::SessionExpired`]
//! (and `Error::SessionExpired` from a late release); no answer until the deadline is
//! `RenewalFailed`. Connection events: `Suspended` on the first failed request or three missed
//! heartbeats, then `Reconnected` (session kept) or `Lost` followed by `Reconnected` once a new
//! session is usable.
//!
//! Call [`tumbler_core::LockBackend::shutdown`] before exit: it closes the session, which frees
//! every hold and waiter at once (otherwise the servers do so after the session timeout).
#![warn(missing_docs)]

mod backend;
mod config;
mod election;
mod error;
mod hold;
mod inspect;
mod kinds;
mod layout;
mod nodes;
mod queue;
mod semaphore;
mod session;
mod sessions;

pub use backend::{ZkBackend, MAX_VALUE_LEN};
pub use config::{ZkConfig, MAX_PERMITS_PER_ACQUIRE, MAX_SESSION_TIMEOUT, MIN_SESSION_TIMEOUT};

/// Connects to the ensemble named by a `zk://` URL (grammar above).
pub async fn connect_url(url: &str) -> tumbler_core::Result<tumbler_core::SharedBackend> {
    ZkConfig::from_url(url)?.connect().await
}
