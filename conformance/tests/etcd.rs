//! The whole conformance suite on real etcd: `standalone::*` on one server, `cluster::*` on a
//! 3-member cluster whose leader is killed while each case runs.
//!
//! Every case gets its own server or cluster, so restarting it in one case disturbs no other.
//! Every client reaches each member through its own fault proxy, so its connection can be cut
//! alone. Leases last 2 s (5 s on the cluster). The harness is `shared/etcd_harness.rs`, whose
//! standalone variant the explorer uses too.

#[path = "shared/etcd_harness.rs"]
mod etcd_harness;

use std::sync::Arc;

use conformance::Harness;
use etcd_harness::EtcdHarness;

/// Logs to the test output when `RUST_LOG` is set.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
}

mod standalone {
    use super::*;

    async fn harness() -> Arc<dyn Harness> {
        init_logging();
        Arc::new(EtcdHarness::standalone().await)
    }

    conformance::suite!(harness);
}

mod cluster {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// When, after a case's first client connects, the leader is killed: cases differ, so
    /// the kill lands at different steps of different cases.
    fn kill_after() -> Duration {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        const DELAYS_MS: [u64; 5] = [0, 30, 80, 150, 300];
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as usize;
        Duration::from_millis(DELAYS_MS[n % DELAYS_MS.len()])
    }

    async fn harness() -> Arc<dyn Harness> {
        init_logging();
        Arc::new(EtcdHarness::cluster(kill_after()).await)
    }

    conformance::suite!(harness);
}
