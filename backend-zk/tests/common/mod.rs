//! Helpers shared by the ZooKeeper backend's tests: a raw client to look at the znodes, and
//! polling with generous deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_core::SharedBackend;
use tumbler_zookeeper::{ZkBackend, ZkConfig};
use zookeeper_client as zk;

/// How long a condition that should hold soon may take on a loaded machine.
pub const PROMPT: Duration = Duration::from_secs(20);

/// Starts a standalone server, failing the test with the reason if it cannot.
pub async fn server() -> testkit::zk::ZooKeeper {
    testkit::zk::ZooKeeper::start()
        .await
        .unwrap_or_else(|e| panic!("starting zookeeper: {e}"))
}

/// A backend on `hosts` with session timeout `session`.
pub async fn backend(hosts: &str, session: Duration) -> Arc<ZkBackend> {
    let config = ZkConfig::new(hosts)
        .and_then(|c| c.session_timeout(session))
        .unwrap_or_else(|e| panic!("config for {hosts}: {e}"));
    ZkBackend::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting to {hosts}: {e}"))
}

/// A backend on `hosts` with session timeout `session` and request (and connect) timeout
/// `request`.
pub async fn configured(hosts: &str, session: Duration, request: Duration) -> Arc<ZkBackend> {
    let config = ZkConfig::new(hosts)
        .and_then(|c| c.session_timeout(session))
        .and_then(|c| c.request_timeout(request))
        .and_then(|c| c.connect_timeout(request))
        .unwrap_or_else(|e| panic!("config for {hosts}: {e}"));
    ZkBackend::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting to {hosts}: {e}"))
}

/// The same backend as the shared trait object users hold.
pub fn shared(backend: &Arc<ZkBackend>) -> SharedBackend {
    backend.clone()
}

/// A plain ZooKeeper client (no tumbler) to inspect and tamper with the znodes.
pub async fn raw(hosts: &str) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(hosts)
        .await
        .unwrap_or_else(|e| panic!("raw client for {hosts}: {e}"))
}

/// The children of `path`, sorted; empty if it does not exist.
pub async fn children(client: &zk::Client, path: &str) -> Vec<String> {
    match client.list_children(path).await {
        Ok(mut children) => {
            children.sort();
            children
        }
        Err(zk::Error::NoNode) => Vec::new(),
        Err(e) => panic!("listing {path}: {e}"),
    }
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after [`PROMPT`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PROMPT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PROMPT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the connection event `wanted`, failing the test after [`PROMPT`].
pub async fn next_event(
    events: &mut tumbler_core::ConnectionEvents,
    wanted: tumbler_core::ConnectionEvent,
) {
    tokio::time::timeout(PROMPT, async {
        while events.next().await != Some(wanted) {}
    })
    .await
    .unwrap_or_else(|_| panic!("no {wanted:?} event within {PROMPT:?}"));
}

/// Whether `name` is a Curator protected node `_c_<uuid>-<marker><10 digits>`.
pub fn is_protected(name: &str, marker: &str) -> bool {
    let Some(rest) = name.strip_prefix("_c_") else {
        return false;
    };
    if rest.len() < 37 || rest.as_bytes()[36] != b'-' {
        return false;
    }
    let uuid = &rest[..36];
    let uuid_ok = uuid.chars().enumerate().all(|(i, c)| {
        if [8, 13, 18, 23].contains(&i) {
            c == '-'
        } else {
            c.is_ascii_hexdigit()
        }
    });
    let Some(seq) = rest[37..].strip_prefix(marker) else {
        return false;
    };
    uuid_ok && seq.len() == 10 && seq.bytes().all(|b| b.is_ascii_digit())
}

/// The protection uuid of a protected node name.
pub fn uuid_of(name: &str) -> &str {
    &name[3..39]
}
