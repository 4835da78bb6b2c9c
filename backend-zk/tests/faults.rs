//! Faults between one client and the server, through a fault proxy: a lost create reply, a
//! short blip the session survives, a silent partition, and a forced session expiry.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{backend, children, configured, eventually, next_event, raw, server, shared, PROMPT};
use testkit::proxy::{FaultProxy, ProxyMode};
use tumbler_core::{ConnectionEvent, LockBackend, LostReason};
use tumbler_zookeeper::ZkBackend;

async fn through(proxy: &FaultProxy, session: Duration) -> Arc<ZkBackend> {
    configured(&proxy.addr().to_string(), session, session * 2).await
}

/// The connection breaks after the create reached the server but before its reply came back:
/// the client adopts its node (found by uuid) instead of leaving it orphaned and queueing again.
#[tokio::test]
async fn lost_create_reply_adopts_the_node_no_orphan_no_double_hold() {
    let zk = server().await;
    let look = raw(&zk.connect_string()).await;
    let proxy = FaultProxy::start(zk.addr()).await.unwrap();
    let a = through(&proxy, Duration::from_secs(6)).await;
    let rival = backend(&zk.connect_string(), Duration::from_secs(6)).await;

    // Hold the parent folder ready so that the create is the only write in flight.
    let warm = shared(&a)
        .mutex("reply-lost")
        .unwrap()
        .lock()
        .await
        .unwrap();
    warm.release().await.unwrap();

    proxy.set_mode(ProxyMode::Latency(Duration::from_millis(700)));
    let mutex = shared(&a).mutex("reply-lost").unwrap();
    let acquiring = tokio::spawn(async move { mutex.lock().await });
    // The node exists on the server while its reply is still held in the proxy: cut now.
    let created = eventually("the create reaches the server", || async {
        let nodes = children(&look, "/reply-lost").await;
        (!nodes.is_empty()).then_some(nodes)
    })
    .await;
    proxy.cut_all();
    proxy.set_mode(ProxyMode::Pass);
    assert!(
        !acquiring.is_finished(),
        "the reply must have been lost, not delivered"
    );
    let guard = tokio::time::timeout(PROMPT, acquiring)
        .await
        .expect("the acquisition finishes after the reconnect")
        .unwrap()
        .expect("granted");

    let nodes = children(&look, "/reply-lost").await;
    assert_eq!(
        nodes, created,
        "the created node was adopted; no second node, no orphan"
    );
    let stat = look
        .check_stat(&format!("/reply-lost/{}", nodes[0]))
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(
        guard.fencing_token(),
        stat.czxid as u64,
        "the guard holds the adopted node"
    );
    assert!(
        guard.lost_reason().is_none(),
        "the session survived the cut"
    );
    let intruder = shared(&rival)
        .mutex("reply-lost")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    assert!(intruder.is_none(), "no double hold");
    guard.release().await.unwrap();
    assert!(
        children(&look, "/reply-lost").await.is_empty(),
        "nothing left behind"
    );
    let next = shared(&rival)
        .mutex("reply-lost")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    assert!(next.is_some());
}

/// A connection reset that heals well within the session timeout costs nothing: the hold stays
/// valid, `lost()` does not fire, and the events say Suspended then Reconnected.
#[tokio::test]
async fn a_short_blip_keeps_the_hold_and_fires_no_lost() {
    let zk = server().await;
    let proxy = FaultProxy::start(zk.addr()).await.unwrap();
    let a = through(&proxy, Duration::from_secs(6)).await;
    let rival = backend(&zk.connect_string(), Duration::from_secs(6)).await;
    let held = shared(&a).mutex("blip").unwrap().lock().await.unwrap();
    let mut events = a.connection_events();
    proxy.set_mode(ProxyMode::Refuse);
    proxy.cut_all();
    next_event(&mut events, ConnectionEvent::Suspended).await;
    proxy.set_mode(ProxyMode::Pass);
    next_event(&mut events, ConnectionEvent::Reconnected).await;
    assert!(held.lost_reason().is_none(), "{:?}", held.lost_reason());
    let intruder = shared(&rival)
        .mutex("blip")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    assert!(intruder.is_none(), "the hold survived the blip");
    held.release().await.unwrap();
}

/// A silent partition (nothing answers, no reset): `lost()` fires from the client's own clock
/// before the servers expire the session and a rival gets the lock.
#[tokio::test]
async fn a_silent_partition_fires_lost_before_a_rival_holds() {
    let zk = server().await;
    let proxy = FaultProxy::start(zk.addr()).await.unwrap();
    let session = Duration::from_secs(2);
    let a = through(&proxy, session).await;
    let rival = backend(&zk.connect_string(), session).await;
    let held = shared(&a).mutex("partition").unwrap().lock().await.unwrap();
    let rival_mutex = shared(&rival).mutex("partition").unwrap();
    let waiting = tokio::spawn(async move { rival_mutex.lock_timeout(PROMPT).await });
    let cut_at = Instant::now();
    proxy.set_mode(ProxyMode::Blackhole);
    let reason = tokio::time::timeout(PROMPT, held.lost()).await.unwrap();
    let lost_after = cut_at.elapsed();
    assert_eq!(reason, LostReason::RenewalFailed);
    assert!(
        lost_after < session,
        "lost() after {lost_after:?}, not before the {session:?} expiry"
    );
    let taken = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("the rival gets the lock after the expiry");
    assert!(taken.fencing_token() > held.fencing_token());
    proxy.set_mode(ProxyMode::Pass);
    taken.release().await.unwrap();
    let late = held.release().await;
    assert!(
        late.is_err(),
        "a release after the loss must not report success: {late:?}"
    );
}

/// `ZkBackend::expire_session_at` while the client's own route is cut: the servers end the
/// session, the hold reports `SessionExpired` once the client is back, and the backend carries
/// on with a new session.
#[tokio::test]
async fn forced_expiry_is_noticed_and_a_new_session_takes_over() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let proxy = FaultProxy::start(zk.addr()).await.unwrap();
    let a = through(&proxy, Duration::from_secs(6)).await;
    let before = a.session_id();
    let mut events = a.connection_events();
    let held = shared(&a).mutex("expire").unwrap().lock().await.unwrap();
    proxy.set_mode(ProxyMode::Refuse);
    proxy.cut_all();
    a.expire_session_at(&hosts).await.unwrap();
    assert!(
        children(&look, "/expire").await.is_empty(),
        "the ephemeral node died with the session"
    );
    proxy.set_mode(ProxyMode::Pass);
    let reason = tokio::time::timeout(PROMPT, held.lost()).await.unwrap();
    assert_eq!(reason, LostReason::SessionExpired);
    next_event(&mut events, ConnectionEvent::Lost).await;
    next_event(&mut events, ConnectionEvent::Reconnected).await;
    let again = shared(&a)
        .mutex("expire")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    assert!(again.is_some(), "the backend works on its new session");
    assert_ne!(a.session_id(), before);
    // The same event under the same name on every store: the session expired.
    let late = held.release().await;
    assert!(
        matches!(late, Err(tumbler_core::Error::SessionExpired { .. })),
        "{late:?}"
    );
}
