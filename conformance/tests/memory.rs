//! The whole conformance suite on the in-process memory backend: every case must pass.

use std::sync::Arc;

use conformance::memory::MemoryHarness;
use conformance::Harness;

async fn harness() -> Arc<dyn Harness> {
    Arc::new(MemoryHarness::new())
}

conformance::suite!(harness);
