//! The znodes on the server follow Curator's recipes exactly, and every hold reacts to what
//! other ZooKeeper clients do to its node (delete it, write the revoke marker).

mod common;

use std::time::Duration;

use common::{backend, children, eventually, is_protected, raw, server, shared, uuid_of};
use tumbler_core::{HoldMode, LockBackend, LockName, LostReason};

const SESSION: Duration = Duration::from_secs(6);

fn name(text: &str) -> LockName {
    LockName::new(text).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn mutex_nodes_are_curator_protected_sequential_nodes_and_tokens_are_czxids() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let (a, b) = (
        backend(&hosts, SESSION).await,
        backend(&hosts, SESSION).await,
    );
    let first = shared(&a)
        .mutex("jobs/nightly")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let nodes = children(&look, "/jobs/nightly").await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(
        is_protected(&nodes[0], "lock-"),
        "not a Curator lock node: {}",
        nodes[0]
    );
    let stat = look
        .check_stat(&format!("/jobs/nightly/{}", nodes[0]))
        .await
        .unwrap()
        .expect("the lock node exists");
    assert_eq!(
        first.fencing_token(),
        stat.czxid as u64,
        "the token is the node's czxid"
    );
    assert_eq!(
        stat.ephemeral_owner,
        look_session(&a),
        "the node is ephemeral, owned by A's session"
    );

    // B queues behind A with its own node; the state lists A as holder and B as waiter.
    let b_mutex = shared(&b).mutex("jobs/nightly").unwrap();
    let waiting = tokio::spawn(async move { b_mutex.lock().await });
    let queued = eventually("B's node appears", || async {
        let nodes = children(&look, "/jobs/nightly").await;
        (nodes.len() == 2).then_some(nodes)
    })
    .await;
    assert!(
        queued.iter().all(|n| is_protected(n, "lock-")),
        "{queued:?}"
    );
    let state = b.state(&name("jobs/nightly")).await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    assert_eq!(state.holders[0].mode, HoldMode::Exclusive);
    assert_eq!(state.holders[0].token, Some(first.fencing_token()));
    assert_eq!(state.waiters, Some(1));

    first.release().await.unwrap();
    let second = waiting.await.unwrap().unwrap();
    assert!(second.fencing_token() > stat.czxid as u64);
    let nodes = children(&look, "/jobs/nightly").await;
    assert_eq!(nodes.len(), 1, "A's node is gone, B's remains: {nodes:?}");
    second.release().await.unwrap();
    assert!(children(&look, "/jobs/nightly").await.is_empty());
}

fn look_session(backend: &std::sync::Arc<tumbler_zookeeper::ZkBackend>) -> i64 {
    let id = backend.session_id().expect("a session is open");
    i64::from_str_radix(id.trim_start_matches("0x"), 16).expect("session ids print as hex")
}

#[tokio::test]
async fn a_busy_try_and_a_timed_out_wait_leave_no_node() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let (a, b) = (
        backend(&hosts, SESSION).await,
        backend(&hosts, SESSION).await,
    );
    let held = shared(&a).mutex("busy").unwrap().lock().await.unwrap();
    let b_mutex = shared(&b).mutex("busy").unwrap();
    assert!(b_mutex.try_lock().await.unwrap().is_none());
    // One attempt removes its node before it answers.
    assert_eq!(children(&look, "/busy").await.len(), 1);
    assert!(b_mutex
        .lock_timeout(Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
    // A dropped wait removes its node in the background.
    eventually("the cancelled waiter's node is removed", || async {
        (children(&look, "/busy").await.len() == 1).then_some(())
    })
    .await;
    held.release().await.unwrap();
    assert!(children(&look, "/busy").await.is_empty());
}

#[tokio::test]
async fn downgrade_swaps_the_write_node_for_a_read_node_in_its_place() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let (a, b) = (
        backend(&hosts, SESSION).await,
        backend(&hosts, SESSION).await,
    );
    let writer = shared(&a).rwlock("cfg").unwrap().write().await.unwrap();
    let nodes = children(&look, "/cfg").await;
    assert_eq!(nodes.len(), 1);
    assert!(is_protected(&nodes[0], "__WRIT__"), "{nodes:?}");
    let write_seq = nodes[0][nodes[0].len() - 10..].to_owned();

    // A second writer queues behind the write node.
    let b_rw = shared(&b).rwlock("cfg").unwrap();
    let second_writer = tokio::spawn(async move { b_rw.write().await });
    eventually("the second writer queues", || async {
        (children(&look, "/cfg").await.len() == 2).then_some(())
    })
    .await;

    let reader = writer.downgrade().await.unwrap();
    let nodes = children(&look, "/cfg").await;
    let read: Vec<_> = nodes.iter().filter(|n| n.contains("__READ__")).collect();
    assert_eq!(read.len(), 1, "{nodes:?}");
    assert!(is_protected(read[0], "__READ__"), "{nodes:?}");
    assert!(
        read[0].ends_with(&write_seq),
        "the read node keeps the write node's place: {nodes:?}"
    );
    assert_eq!(nodes.len(), 2, "the write node is gone: {nodes:?}");
    assert!(reader.fencing_token() > writer_token_floor(&look, &nodes).await);

    // The queued writer still waits; other readers share with the downgraded one.
    assert!(!second_writer.is_finished());
    let state = b.state(&name("cfg")).await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    assert_eq!(state.holders[0].mode, HoldMode::Read);
    reader.release().await.unwrap();
    let w2 = second_writer.await.unwrap().unwrap();
    w2.release().await.unwrap();
}

/// The czxid of the queued writer's node, which was created before the downgrade.
async fn writer_token_floor(look: &zookeeper_client::Client, nodes: &[String]) -> u64 {
    let writer = nodes
        .iter()
        .find(|n| n.contains("__WRIT__"))
        .expect("the queued writer's node");
    let stat = look
        .check_stat(&format!("/cfg/{writer}"))
        .await
        .unwrap()
        .expect("exists");
    stat.czxid as u64
}

#[tokio::test]
async fn semaphore_uses_one_lease_node_per_permit_and_releases_its_mutex() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let (a, b) = (
        backend(&hosts, SESSION).await,
        backend(&hosts, SESSION).await,
    );
    let lease = shared(&a)
        .semaphore("pool", 3)
        .unwrap()
        .acquire(2)
        .await
        .unwrap();
    let leases = children(&look, "/pool/leases").await;
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert!(
        leases.iter().all(|n| is_protected(n, "lease-")),
        "{leases:?}"
    );
    assert_eq!(
        uuid_of(&leases[0]),
        uuid_of(&leases[1]),
        "one acquisition, one uuid"
    );
    assert!(
        children(&look, "/pool/locks").await.is_empty(),
        "the mutex is released after the grant"
    );

    let b_sem = shared(&b).semaphore("pool", 3).unwrap();
    assert!(b_sem.try_acquire(2).await.unwrap().is_none(), "2 + 2 > 3");
    assert_eq!(
        children(&look, "/pool/leases").await.len(),
        2,
        "the busy try left nothing"
    );
    let one = b_sem
        .try_acquire(1)
        .await
        .unwrap()
        .expect("one permit is free");
    let state = a.state(&name("pool")).await.unwrap();
    let mut permits: Vec<_> = state.holders.iter().map(|h| h.mode.clone()).collect();
    permits.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        permits,
        vec![HoldMode::Permits(1), HoldMode::Permits(2)],
        "{state:?}"
    );

    // A waiter for 2 permits holds the mutex and waits on the leases.
    let waiting = tokio::spawn(async move { b_sem.acquire(2).await });
    let state = eventually("the waiter shows", || async {
        let state = a.state(&name("pool")).await.unwrap();
        (state.waiters == Some(1)).then_some(state)
    })
    .await;
    assert_eq!(
        state.holders.len(),
        2,
        "the waiter is not a holder: {state:?}"
    );
    lease.release().await.unwrap();
    let two = waiting.await.unwrap().unwrap();
    assert_eq!(children(&look, "/pool/leases").await.len(), 3);
    one.release().await.unwrap();
    two.release().await.unwrap();
    assert!(children(&look, "/pool/leases").await.is_empty());
}

#[tokio::test]
async fn deleting_the_node_from_outside_fires_lost_and_release_says_not_owner() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let a = backend(&hosts, SESSION).await;
    let held = shared(&a).mutex("admin").unwrap().lock().await.unwrap();
    let node = children(&look, "/admin").await.remove(0);
    look.delete(&format!("/admin/{node}"), None).await.unwrap();
    let reason = tokio::time::timeout(common::PROMPT, held.lost())
        .await
        .unwrap();
    assert_eq!(reason, LostReason::Deleted);
    let released = held.release().await;
    assert!(
        matches!(released, Err(tumbler_core::Error::NotOwner { .. })),
        "{released:?}"
    );
}

#[tokio::test]
async fn curators_revoke_marker_reaches_the_holder_and_request_revoke_writes_it() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let (a, b) = (
        backend(&hosts, SESSION).await,
        backend(&hosts, SESSION).await,
    );
    let held = shared(&a)
        .mutex("revoke/raw")
        .unwrap()
        .lock()
        .await
        .unwrap();
    // What Curator's Revoker.attemptRevoke does.
    let node = children(&look, "/revoke/raw").await.remove(0);
    look.set_data(&format!("/revoke/raw/{node}"), b"__REVOKE__", None)
        .await
        .unwrap();
    tokio::time::timeout(common::PROMPT, held.revoke_requested())
        .await
        .expect("revoke_requested() fires on Curator's marker");
    held.release().await.unwrap();

    let held = shared(&a)
        .mutex("revoke/ours")
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert_eq!(b.request_revoke(&name("revoke/ours")).await.unwrap(), 1);
    let node = children(&look, "/revoke/ours").await.remove(0);
    let (data, _) = look
        .get_data(&format!("/revoke/ours/{node}"))
        .await
        .unwrap();
    assert_eq!(data, b"__REVOKE__");
    tokio::time::timeout(common::PROMPT, held.revoke_requested())
        .await
        .expect("revoke_requested() fires");
    assert!(
        held.lost_reason().is_none(),
        "a revocation request is not a loss"
    );
    held.release().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_the_session_and_its_nodes() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let a = backend(&hosts, SESSION).await;
    let locks = shared(&a);
    let held = locks.mutex("bye").unwrap().lock().await.unwrap();
    assert_eq!(children(&look, "/bye").await.len(), 1);
    locks.shutdown().await.unwrap();
    assert!(
        children(&look, "/bye").await.is_empty(),
        "closing the session removed the node"
    );
    let reason = tokio::time::timeout(common::PROMPT, held.lost())
        .await
        .unwrap();
    assert_eq!(reason, LostReason::Abandoned);
    let again = locks.mutex("bye").unwrap().try_lock().await;
    assert!(
        matches!(again, Err(tumbler_core::Error::Closed { .. })),
        "{again:?}"
    );
}

#[tokio::test]
async fn base_path_and_bad_names() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let locks =
        tumbler_zookeeper::connect_url(&format!("zk://{hosts}/apps/billing?session_timeout=6s"))
            .await
            .unwrap();
    let held = locks.mutex("invoices").unwrap().lock().await.unwrap();
    assert_eq!(children(&look, "/apps/billing/invoices").await.len(), 1);
    held.release().await.unwrap();
    // Names a znode path cannot hold are refused by the name itself, before any request.
    for bad in ["a/./b", ".", "zookeeper/quota", "zookeeper"] {
        let refused = locks.mutex(bad);
        assert!(
            matches!(refused, Err(tumbler_core::Error::InvalidName { .. })),
            "{bad:?}: {refused:?}"
        );
    }
}
