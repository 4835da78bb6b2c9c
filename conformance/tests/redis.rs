//! The whole conformance suite on a real Redis server (one server per case, one fault proxy per
//! client, lock TTL 2 s). The harness is `shared/redis_harness.rs`, which the explorer uses too.

#[path = "shared/redis_harness.rs"]
mod redis_harness;
#[path = "shared/redis_hooks.rs"]
mod redis_hooks;
#[path = "shared/redis_sentinel_harness.rs"]
mod redis_sentinel_harness;

use std::sync::Arc;

use conformance::Harness;
use redis_harness::{Mode, RedisHarness};

async fn harness() -> Arc<dyn Harness> {
    Arc::new(RedisHarness::start(Mode::Single).await)
}

conformance::suite!(harness);

/// The suite through Redis Sentinel (one master, two replicas, three sentinels), every client
/// finding the master through the sentinels.
mod sentinel {
    use std::sync::Arc;

    use conformance::Harness;

    use crate::redis_sentinel_harness::RedisSentinelHarness;

    async fn harness() -> Arc<dyn Harness> {
        Arc::new(RedisSentinelHarness::start().await)
    }

    conformance::suite!(harness);
}
