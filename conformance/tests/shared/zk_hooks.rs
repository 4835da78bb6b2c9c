//! Fault hooks the ZooKeeper harnesses (standalone and ensemble) share.

use std::time::Duration;

use backend_zk::ZkBackend;
use conformance::{Holder, HookError, HookResult, ProcessHolder, ProxiedClients, TestClient};
use lockcore::{ConnectionEvent, LockBackend, LockName};

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
    clients.cut(client)?;
    let closed = backend.expire_session_at(hosts).await;
    clients.heal(client)?;
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
