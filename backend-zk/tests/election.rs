//! Elections on ZooKeeper (Curator's LeaderLatch layout) against a real server: leading,
//! proclaiming and resigning, terms, FIFO succession, a leader whose session is lost, following
//! the leader, cancelled campaigns, value limits, one name one kind, and foreign nodes.

mod common;

use std::time::Duration;

use common::{
    backend, children, configured, eventually, is_protected, raw, server, shared, PROMPT,
};
use testkit::proxy::{FaultProxy, ProxyMode};
use tumbler_core::{Error, LostReason};
use zookeeper_client as zk;

const SESSION: Duration = Duration::from_secs(6);

fn is_conflict_naming(result: &tumbler_core::Result<impl std::fmt::Debug>, words: &[&str]) -> bool {
    match result {
        Err(Error::Conflict { problem, .. }) => words.iter().all(|w| problem.contains(w)),
        _ => false,
    }
}

/// Waits until the election folder `path` holds `count` candidate nodes.
async fn candidates(look: &zk::Client, path: &str, count: usize) -> Vec<String> {
    eventually(&format!("{count} candidates in {path}"), || async {
        let now = children(look, path).await;
        (now.len() == count).then_some(now)
    })
    .await
}

#[tokio::test]
async fn campaign_leader_proclaim_resign_and_terms_increase() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let a = shared(&backend(&hosts, SESSION).await);
    let b = shared(&backend(&hosts, SESSION).await);
    let ea = a.election("el/basic").unwrap();
    let eb = b.election("el/basic").unwrap();
    assert_eq!(ea.leader().await.unwrap(), None, "nobody campaigns yet");

    let mut first = ea.campaign("a:1").await.unwrap();
    // Curator's LeaderLatch node: protected, `latch-`, the value as data.
    let nodes = children(&look, "/el/basic").await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(is_protected(&nodes[0], "latch-"), "{nodes:?}");
    let path = format!("/el/basic/{}", nodes[0]);
    let (data, stat) = look.get_data(&path).await.unwrap();
    assert_eq!(data, b"a:1");
    assert_eq!(
        first.term(),
        stat.czxid as u64,
        "the term is the node's czxid"
    );

    let seen = eb.leader().await.unwrap().expect("a leads");
    assert_eq!(seen.value, b"a:1");
    assert_eq!(seen.term, first.term());
    assert!(seen.id.contains(&nodes[0]), "{seen:?}");

    first.proclaim("a:2").await.unwrap();
    assert_eq!(look.get_data(&path).await.unwrap().0, b"a:2");
    let seen = eb.leader().await.unwrap().expect("a still leads");
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"a:2"[..], first.term())
    );

    assert!(eb.try_campaign("b:1").await.unwrap().is_none(), "a leads");
    assert_eq!(
        children(&look, "/el/basic").await.len(),
        1,
        "b left no node"
    );
    let term = first.term();
    first.resign().await.unwrap();
    let second = eb.try_campaign("b:1").await.unwrap().expect("nobody leads");
    assert!(second.term() > term, "{} after {term}", second.term());
    assert_eq!(
        ea.leader().await.unwrap().map(|l| l.value),
        Some(b"b:1".to_vec())
    );
    second.resign().await.unwrap();
    assert_eq!(ea.leader().await.unwrap(), None);
}

#[tokio::test]
async fn candidates_are_elected_in_the_order_they_campaigned() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let a = shared(&backend(&hosts, SESSION).await);
    let b = shared(&backend(&hosts, SESSION).await);
    let c = shared(&backend(&hosts, SESSION).await);
    let first = a.election("fifo").unwrap().campaign("a").await.unwrap();
    let eb = b.election("fifo").unwrap();
    let second = tokio::spawn(async move { eb.campaign("b").await });
    candidates(&look, "/fifo", 2).await;
    let ec = c.election("fifo").unwrap();
    let third = tokio::spawn(async move { ec.campaign("c").await });
    candidates(&look, "/fifo", 3).await;

    let term_a = first.term();
    first.resign().await.unwrap();
    let second = tokio::time::timeout(PROMPT, second)
        .await
        .expect("b is elected after a resigned")
        .unwrap()
        .unwrap();
    assert!(second.term() > term_a);
    assert!(!third.is_finished(), "c campaigned after b");
    let term_b = second.term();
    second.resign().await.unwrap();
    let third = tokio::time::timeout(PROMPT, third)
        .await
        .expect("c is elected after b resigned")
        .unwrap()
        .unwrap();
    assert!(third.term() > term_b);
    third.resign().await.unwrap();
}

/// The leader is cut off silently: its `lost()` fires from its own clock, and only after the
/// servers expired its session is the follower elected, with a higher term.
#[tokio::test]
async fn a_leader_whose_session_is_lost_is_replaced_and_told_first() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let proxy = FaultProxy::start(zk.addr()).await.unwrap();
    let session = Duration::from_secs(2);
    let a = shared(&configured(&proxy.addr().to_string(), session, session * 2).await);
    let b = shared(&backend(&hosts, session).await);
    let leader = a.election("failover").unwrap().campaign("a").await.unwrap();
    let eb = b.election("failover").unwrap();
    let follower = tokio::spawn(async move { eb.campaign("b").await });
    candidates(&look, "/failover", 2).await;

    proxy.set_mode(ProxyMode::Blackhole);
    let elected = tokio::time::timeout(PROMPT, follower)
        .await
        .expect("the follower is elected once the leader's session expired")
        .unwrap()
        .unwrap();
    assert_eq!(
        leader.lost_reason(),
        Some(LostReason::RenewalFailed),
        "the old leader had been told before the follower was elected"
    );
    assert!(elected.term() > leader.term());
    let now = b.election("failover").unwrap().leader().await.unwrap();
    assert_eq!(now.map(|l| l.value), Some(b"b".to_vec()));
    proxy.set_mode(ProxyMode::Pass);
    assert!(
        leader.resign().await.is_err(),
        "a lost leadership resigned fine"
    );
    elected.resign().await.unwrap();
}

#[tokio::test]
async fn an_observer_wakes_on_every_change() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let a = shared(&backend(&hosts, SESSION).await);
    let b = shared(&backend(&hosts, SESSION).await);
    let watcher = shared(&backend(&hosts, SESSION).await);
    let mut observer = watcher.election("watched").unwrap().observe();
    assert_eq!(observer.next().await.unwrap(), None);

    let next = tokio::spawn(async move {
        let seen = observer.next().await;
        (observer, seen)
    });
    let mut first = a
        .election("watched")
        .unwrap()
        .campaign("a:1")
        .await
        .unwrap();
    let (mut observer, seen) = tokio::time::timeout(PROMPT, next).await.unwrap().unwrap();
    let seen = seen.unwrap().expect("a leads");
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"a:1"[..], first.term())
    );

    // A follower joining changes nothing the observer reports.
    let eb = b.election("watched").unwrap();
    let follower = tokio::spawn(async move { eb.campaign("b").await });
    candidates(&look, "/watched", 2).await;

    let next = tokio::spawn(async move {
        let seen = observer.next().await;
        (observer, seen)
    });
    first.proclaim("a:2").await.unwrap();
    let (mut observer, seen) = tokio::time::timeout(PROMPT, next).await.unwrap().unwrap();
    let seen = seen.unwrap().expect("a still leads");
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"a:2"[..], first.term())
    );

    let next = tokio::spawn(async move {
        let seen = observer.next().await;
        (observer, seen)
    });
    first.resign().await.unwrap();
    let (mut observer, seen) = tokio::time::timeout(PROMPT, next).await.unwrap().unwrap();
    let second = follower.await.unwrap().unwrap();
    let seen = seen.unwrap().expect("b leads");
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"b"[..], second.term())
    );

    let next = tokio::spawn(async move { observer.next().await });
    second.resign().await.unwrap();
    let seen = tokio::time::timeout(PROMPT, next).await.unwrap().unwrap();
    assert_eq!(seen.unwrap(), None, "nobody leads");
}

/// Cut off from the servers, a waiting observer returns a transient error within about the
/// request timeout instead of waiting for a change it could not see.
#[tokio::test]
async fn an_observer_cut_off_from_the_servers_errs_within_the_request_timeout() {
    let zk = server().await;
    let proxy = FaultProxy::start(zk.addr()).await.unwrap();
    let request = Duration::from_secs(2);
    let a = shared(&configured(&proxy.addr().to_string(), SESSION, request).await);
    let mut observer = a.election("cut").unwrap().observe();
    assert_eq!(observer.next().await.unwrap(), None);
    proxy.set_mode(ProxyMode::Blackhole);
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(PROMPT, observer.next())
        .await
        .expect("the observer returned");
    let took = started.elapsed();
    assert!(
        matches!(&outcome, Err(e) if e.is_transient()),
        "{outcome:?}"
    );
    assert!(
        took < request + Duration::from_millis(1500),
        "took {took:?}"
    );
    proxy.set_mode(ProxyMode::Pass);
}

#[tokio::test]
async fn a_cancelled_campaign_leaves_no_node() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let a = shared(&backend(&hosts, SESSION).await);
    let b = shared(&backend(&hosts, SESSION).await);
    let leader = a.election("cancel").unwrap().campaign("a").await.unwrap();
    let eb = b.election("cancel").unwrap();
    let timed_out = eb
        .campaign_timeout("b", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(timed_out.is_none(), "a leads");
    candidates(&look, "/cancel", 1).await;
    // Dropped while queued.
    let dropped = tokio::spawn({
        let eb = eb.clone();
        async move { eb.campaign("b").await }
    });
    candidates(&look, "/cancel", 2).await;
    dropped.abort();
    let left = candidates(&look, "/cancel", 1).await;
    let (data, _) = look
        .get_data(&format!("/cancel/{}", left[0]))
        .await
        .unwrap();
    assert_eq!(data, b"a", "the leader's node is the one left");
    leader.resign().await.unwrap();
    candidates(&look, "/cancel", 0).await;
}

#[tokio::test]
async fn values_are_checked_and_the_largest_one_fits() {
    let zk = server().await;
    let a = shared(&backend(&zk.connect_string(), SESSION).await);
    let election = a.election("values").unwrap();
    assert!(matches!(
        election.campaign("").await,
        Err(Error::InvalidArgument { .. })
    ));
    let too_long = vec![b'x'; tumbler_zookeeper::MAX_VALUE_LEN + 1];
    assert!(matches!(
        election.campaign(too_long).await,
        Err(Error::InvalidArgument { .. })
    ));
    // The limit is real: the longest value allowed goes through ZooKeeper's packet limit.
    let longest = vec![b'y'; tumbler_zookeeper::MAX_VALUE_LEN];
    let leader = election.campaign(longest.clone()).await.unwrap();
    let seen = election.leader().await.unwrap().expect("it leads");
    assert_eq!(seen.value, longest);
    leader.resign().await.unwrap();
}

#[tokio::test]
async fn a_name_is_a_mutex_or_an_election_not_both() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let a = shared(&backend(&hosts, SESSION).await);
    let b = shared(&backend(&hosts, SESSION).await);

    let mutex = a.mutex("both").unwrap().lock().await.unwrap();
    let election = b.election("both").unwrap();
    let tried = election.try_campaign("b").await;
    assert!(
        is_conflict_naming(&tried, &["mutex", "election"]),
        "{tried:?}"
    );
    let waited = election.campaign_timeout("b", PROMPT).await;
    assert!(
        is_conflict_naming(&waited, &["mutex", "election"]),
        "{waited:?}"
    );
    let read = election.leader().await;
    assert!(
        is_conflict_naming(&read, &["mutex", "election"]),
        "{read:?}"
    );
    mutex.release().await.unwrap();

    let leader = a.election("both2").unwrap().campaign("a").await.unwrap();
    let locked = b.mutex("both2").unwrap().try_lock().await;
    assert!(
        is_conflict_naming(&locked, &["mutex", "election"]),
        "{locked:?}"
    );
    let permits = b.semaphore("both2", 2).unwrap().try_acquire(1).await;
    assert!(
        is_conflict_naming(&permits, &["semaphore", "election"]),
        "{permits:?}"
    );
    leader.resign().await.unwrap();
}

#[tokio::test]
async fn foreign_nodes_in_an_election_are_a_conflict_naming_them() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let look = raw(&hosts).await;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let a = shared(&backend(&hosts, SESSION).await);

    // A persistent node named like a candidate would lead for ever.
    look.create("/stuck", &[], &open).await.unwrap();
    look.create("/stuck/latch-0000000000", b"mine", &open)
        .await
        .unwrap();
    let election = a.election("stuck").unwrap();
    let read = election.leader().await;
    assert!(is_conflict_naming(&read, &["latch-0000000000"]), "{read:?}");
    let tried = election.try_campaign("a").await;
    assert!(
        is_conflict_naming(&tried, &["latch-0000000000"]),
        "{tried:?}"
    );
    assert_eq!(
        children(&look, "/stuck").await,
        vec!["latch-0000000000".to_owned()],
        "our own node was removed again"
    );

    // An ephemeral node that is no candidate (and cannot be a nested name's folder).
    look.create("/junk", &[], &open).await.unwrap();
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    look.create("/junk/whatever", b"x", &ephemeral)
        .await
        .unwrap();
    let read = a.election("junk").unwrap().leader().await;
    assert!(is_conflict_naming(&read, &["/junk/whatever"]), "{read:?}");

    // Nested names are independent elections.
    let inner = a
        .election("nest/inner")
        .unwrap()
        .campaign("i")
        .await
        .unwrap();
    assert_eq!(a.election("nest").unwrap().leader().await.unwrap(), None);
    inner.resign().await.unwrap();
}
