//! tumbler's test kit: real ZooKeeper, Redis and etcd servers on free loopback ports, clusters of
//! them, and a fault-injecting TCP proxy, for tests that must run against the real thing.
//!
//! - [`redis::Redis`]: one or many independent `redis-server`s, optionally with a password or
//!   an ACL user.
//! - [`zk::ZooKeeper`] and [`zk::ZkEnsemble`]: standalone ZooKeeper and ensembles.
//! - [`etcd::Etcd`] and [`etcd::EtcdCluster`]: standalone etcd, clusters, and etcd with
//!   authentication on.
//! - [`proxy::FaultProxy`]: pass, latency, blackhole, refuse, and reset every connection.
//!
//! Every server runs from the Debian binaries installed by `scripts/setup`, in its own temporary
//! folder, and each start waits until the server really serves (ZooKeeper: `srvr` shows a
//! `Mode:` line; etcd: `/health` is true; Redis: `PING` is answered). Every node can be killed,
//! paused (SIGSTOP), resumed and restarted on the same port and data folder; ensembles and
//! clusters can find and kill their leader.
//!
//! Servers never outlive the test process: dropping a handle kills the server (SIGKILL to its
//! process group) and waits for it, and the kernel kills every server when the test process
//! dies, even by SIGKILL (`PR_SET_PDEATHSIG`, set from one long-lived spawner thread). Every
//! server's environment carries [`OWNER_ENV`] so a leak check can find strays.
//!
//! The API is async (tests are `#[tokio::test]`); handles are `Send + Sync` with `&self`
//! methods so they can be shared in an `Arc`. Synchronous code can use [`blocking`].
//!
//! Environment knobs: `TESTKIT_START_TIMEOUT_SECS` (start deadline), `TESTKIT_KEEP_DIRS=1`
//! (keep server folders), `TESTKIT_REDIS_SERVER`, `TESTKIT_ETCD`, `TESTKIT_JAVA`,
//! `TESTKIT_ZK_CLASSPATH` (server locations).

#![warn(missing_docs)]

mod bins;
mod error;
mod http;
mod join;
mod ports;
mod process;
mod ready;
mod runtime;
mod workdir;

pub mod clock;
pub mod consul;
pub mod etcd;
pub mod etcd_tls;
pub mod pause;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod resp;
pub mod zk;

pub use error::{Error, Result};
pub use pause::Pausable;
pub use ports::{free_port, try_free_port};
pub use process::OWNER_ENV;
pub use runtime::blocking;
pub use workdir::remove_stale_dirs;

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<crate::redis::Redis>();
        send_sync::<crate::zk::ZooKeeper>();
        send_sync::<crate::zk::ZkEnsemble>();
        send_sync::<crate::etcd::Etcd>();
        send_sync::<crate::etcd::EtcdCluster>();
        send_sync::<crate::proxy::FaultProxy>();
        send_sync::<crate::Error>();
    }
}
