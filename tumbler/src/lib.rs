//! # tumbler
//!
//! Distributed locks for async Rust: one API over ZooKeeper, Redis, etcd and Consul (and an
//! in-process `memory` store), the same guarantees on every store, checked by one conformance
//! suite. Pick a store with a cargo feature (`redis`, `zookeeper`, `etcd`, `consul`, or `all`)
//! and a URL:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tumbler_locks::Result<()> {
//! let locks = tumbler_locks::connect("memory://docs").await?;
//! let guard = locks.mutex("jobs/nightly")?.lock().await?;
//! println!("token {}", guard.fencing_token());
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! See [`connect`] for the URL grammar of each store.

mod connect;
mod query;
mod scheme;

pub use connect::connect;
pub use tumbler_core::*;
