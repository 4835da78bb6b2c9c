//! The whole conformance suite on a real standalone ZooKeeper server.
//!
//! Every test gets its own server (a JVM start takes about a second), so restarting it in one
//! case disturbs no other. Every client reaches the server through its own fault proxy, so its
//! connection can be cut alone; sessions last 3 s. The harness is `shared/zk_harness.rs`,
//! which the explorer uses too.

#[path = "shared/zk_harness.rs"]
mod zk_harness;
#[path = "shared/zk_hooks.rs"]
mod zk_hooks;

use std::sync::Arc;

use conformance::Harness;
use zk_harness::ZkHarness;

async fn harness() -> Arc<dyn Harness> {
    Arc::new(ZkHarness::start().await)
}

conformance::suite!(harness);
