//! # backend-zk
//!
//! tumbler's ZooKeeper backend: mutexes, read-write locks and semaphores on Curator's recipes
//! (InterProcessMutex, InterProcessReadWriteLock, InterProcessSemaphoreV2), so a Java service
//! using Curator and a Rust service using tumbler exclude each other on the same znode path.
//! See [`ZkBackend`] for the guarantees.
//!
//! ## URL
//!
//! ```text
//! zk://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][/BASE/PATH][?PARAM=VALUE&...]
//! ```
//!
//! (`zookeeper://` works too.)
//!
//! | part | meaning | default |
//! |---|---|---|
//! | `USER:PASSWORD@` | ZooKeeper `digest` credentials (percent-encode `:` `@` `/`). Nodes are created with an ACL giving these credentials every permission and everyone else READ only, so unauthenticated clients cannot delete them. | none: open ACL |
//! | `HOST:PORT,...` | the ensemble members | port 2181 |
//! | `/BASE/PATH` | znode folder under which lock names live: lock `jobs/nightly` is `/BASE/PATH/jobs/nightly` (give Curator that path) | `/` |
//! | `session_timeout` (or `ttl`) | session timeout asked of the servers, e.g. `6s`; a crashed holder frees its locks after about this long, a cut-off holder reports `lost()` after the timeout minus max(1 s, a third of it) | `10s` |
//! | `connect_timeout` | how long connecting may take | `10s` |
//! | `request_timeout` | how long one request may take | the session timeout |
//!
//! ```no_run
//! # async fn demo() -> lockcore::Result<()> {
//! let locks = backend_zk::connect_url("zk://app:secret@zk1:2181,zk2:2181,zk3:2181/locks?session_timeout=6s").await?;
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
//! | semaphore | `locks/_c_<uuid>-lock-<seq>` (a mutex) and `leases/_c_<uuid>-lease-<seq>`, one per permit |
//!
//! Folders are created as container nodes, which the servers remove once empty.
#![warn(missing_docs)]

mod backend;
mod config;
mod connection;
mod error;
mod hold;
mod inspect;
mod layout;
mod nodes;
mod queue;
mod semaphore;
mod session;

pub use backend::ZkBackend;
pub use config::{ZkConfig, MAX_PERMITS_PER_ACQUIRE, MAX_SESSION_TIMEOUT, MIN_SESSION_TIMEOUT};

/// Connects to the ensemble named by a `zk://` URL (grammar above).
pub async fn connect_url(url: &str) -> lockcore::Result<lockcore::SharedBackend> {
    ZkConfig::from_url(url)?.connect().await
}
