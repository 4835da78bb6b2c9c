//! Fault hooks the ZooKeeper harnesses (standalone and ensemble) share.

use std::time::Duration;

use conformance::Foreign;
use conformance::{Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient};
use tumbler_core::{ConnectionEvent, LockBackend, LockName};
use tumbler_zookeeper::ZkBackend;

/// Closes the client's session from a second connection straight to `hosts` while the
/// client's own route is cut (so it cannot win the session back), then lets the client
/// reconnect and waits until it has been told (`Lost`): the servers end a session at once, and
/// no client can learn of that before it next reaches them.
pub async fn expire_session(
    clients: &ProxiedClients<ZkBackend>,
    client: &TestClient,
    hosts: &str,
    session: Duration,
) -> HookResult {
    let backend = clients.backend(client)?;
    let mut events = backend.connection_events();
    let saved = clients.cut_for_a_while(client)?;
    let closed = backend.expire_session_at(hosts).await;
    saved.restore();
    closed.map_err(|e| HookError::Failed(format!("closing the session: {e}")))?;
    let told = tokio::time::timeout(session * 3, async {
        while events.current() != ConnectionEvent::Lost {
            if events.next().await.is_none() {
                return;
            }
        }
    })
    .await;
    told.map_err(|_| HookError::Failed("the client did not notice its expired session".into()))
}

/// A holder process on `hosts` with the harness's session timeout.
pub async fn spawn_holder(
    hosts: &str,
    session: Duration,
    name: &LockName,
) -> HookResult<Box<dyn Holder>> {
    let url = format!("zk://{hosts}?session_timeout={}ms", session.as_millis());
    ProcessHolder::spawn(
        env!("CARGO_BIN_EXE_holder"),
        &url,
        name.as_str(),
        Duration::from_secs(20),
    )
    .await
}

/// A leader process on `hosts` with the harness's session timeout.
pub async fn spawn_leader(
    hosts: &str,
    session: Duration,
    name: &LockName,
) -> HookResult<Box<dyn Holder>> {
    let url = format!("zk://{hosts}?session_timeout={}ms", session.as_millis());
    ProcessHolder::spawn_leader(
        env!("CARGO_BIN_EXE_holder"),
        &url,
        name.as_str(),
        Duration::from_secs(20),
    )
    .await
}

/// A waiter process on `hosts` with the harness's session timeout: on ZooKeeper a killed
/// waiter's queue node lives as long as its session, which is the bound (as in Curator).
pub async fn spawn_waiter(
    hosts: &str,
    session: Duration,
    name: &LockName,
) -> HookResult<Box<dyn Holder>> {
    let url = format!("zk://{hosts}?session_timeout={}ms", session.as_millis());
    ProcessHolder::spawn_waiting(
        env!("CARGO_BIN_EXE_holder"),
        &url,
        name.as_str(),
        Duration::from_secs(20),
    )
    .await
}

/// URLs `tumbler_locks::connect` must refuse (issue 12 A.8).
pub fn bad_urls(port: u16) -> Vec<(String, &'static str)> {
    vec![
        ("zk://127.0.0.1:0".to_string(), "port 0"),
        (
            format!("zk://127.0.0.1:{port},127.0.0.1:0"),
            "port 0 in the host list",
        ),
    ]
}

/// Puts a node tumbler did not write into the folder of lock `name` (under the root, the
/// harness's base path): a persistent node named like a contender, first in the queue, that no
/// session will ever remove. ZooKeeper locks keep no counter (tokens come from the store's
/// transaction ids), so the counter kinds are unsupported.
pub async fn write_foreign(hosts: &str, name: &LockName, what: Foreign) -> HookResult {
    if what != Foreign::WrongType {
        return Err(HookError::Unsupported(
            "ZooKeeper locks keep no fencing counter (tokens are transaction ids)".into(),
        ));
    }
    let failed = |what: &str, e: zookeeper_client::Error| HookError::Failed(format!("{what}: {e}"));
    let client = zookeeper_client::Client::connect(hosts)
        .await
        .map_err(|e| failed("connecting to zookeeper", e))?;
    let open =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    let dir = format!("/{name}");
    match client.mkdir(&dir, &open).await {
        Ok(()) | Err(zookeeper_client::Error::NodeExists) => {}
        Err(e) => return Err(failed("creating the lock folder", e)),
    }
    let node = format!("{dir}/_c_00000000-0000-0000-0000-000000000000-lock-0000000000");
    client
        .create(&node, b"not tumbler's", &open)
        .await
        .map_err(|e| failed("creating the foreign node", e))?;
    Ok(())
}
