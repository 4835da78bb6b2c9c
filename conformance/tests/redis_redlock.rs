//! The whole conformance suite on Redlock over three real Redis masters (three servers per
//! case, one fault proxy per client and master, lock TTL 2 s). Read-write locks, semaphores,
//! FIFO order and strict fencing are not offered in Redlock mode; those cases report skips.
//! The harness is `shared/redis_harness.rs`, which the explorer uses too.

#[path = "shared/redis_harness.rs"]
mod redis_harness;
#[path = "shared/redis_hooks.rs"]
mod redis_hooks;

use std::sync::Arc;

use conformance::Harness;
use redis_harness::{Mode, RedisHarness};

async fn harness() -> Arc<dyn Harness> {
    Arc::new(RedisHarness::start(Mode::Redlock).await)
}

conformance::suite!(harness);
