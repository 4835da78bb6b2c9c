//! Elections on a real etcd, in the layout of Go's `concurrency.Election`: the candidate key and
//! its value on the store, terms, first-come first-served succession, a lost leader knowing
//! before its follower is elected, observers, cancelled campaigns, one name one kind, and
//! interop both ways with Debian's `etcdctl elect`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{conflict_text, connect, connect_both, name};
use testkit::etcd::Etcd;
use testkit::proxy::{FaultProxy, ProxyMode};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;
use tumbler_core::{Error, HoldMode, LockName, LostReason, SharedBackend};

const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until the store shows `waiters` candidates waiting in `name`.
async fn wait_for_waiters(locks: &SharedBackend, name: &LockName, waiters: usize) {
    let start = Instant::now();
    loop {
        let state = locks.state(name).await.expect("state");
        if state.waiters == Some(waiters) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "state never showed {waiters} waiter(s): {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the keys under `prefix` number `count`.
async fn wait_for_key_count(e: &Etcd, prefix: &str, count: usize) {
    let start = Instant::now();
    loop {
        let keys = e.range(prefix).await.expect("range");
        if keys.len() == count {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never {count} key(s) under {prefix}: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn campaign_uses_gos_key_and_value_then_proclaim_and_resign() {
    let e = Etcd::start().await.expect("etcd");
    let (a, a_etcd) = connect_both(e.port(), "ttl=2s").await;
    let b = connect(&e).await;
    let n = name("services/indexer");
    let election = a.election(&n).unwrap();
    let mut leading = election.campaign("host-a:8080").await.unwrap();

    // Go's Election key: NAME/<lease hex>, the proposal as value, on the hold lease.
    let keys = e.range("services/indexer/").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let lease = a_etcd.lease_id().expect("lease");
    assert_eq!(keys[0].key, format!("services/indexer/{lease:x}"));
    assert_eq!(keys[0].value, "host-a:8080");
    assert_eq!(keys[0].lease, lease);
    let term = leading.term();
    assert_eq!(u64::try_from(keys[0].create_revision).unwrap(), term);

    let seen = b
        .election(&n)
        .unwrap()
        .leader()
        .await
        .unwrap()
        .expect("a leader");
    assert_eq!(seen.value, b"host-a:8080");
    assert_eq!(seen.term, term);
    assert_eq!(seen.id, keys[0].key);
    let state = b.state(&n).await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    assert_eq!(state.holders[0].mode, HoldMode::Leader);

    leading.proclaim("host-a:9090").await.unwrap();
    let keys = e.range("services/indexer/").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].value, "host-a:9090");
    let seen = b.election(&n).unwrap().leader().await.unwrap().unwrap();
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"host-a:9090"[..], term)
    );

    let b_election = b.election(&n).unwrap();
    assert!(b_election.try_campaign("host-b").await.unwrap().is_none());
    // The busy try left nothing behind.
    assert_eq!(e.range("services/indexer/").await.unwrap().len(), 1);

    leading.resign().await.unwrap();
    assert!(b_election.leader().await.unwrap().is_none());
    assert!(e.range("services/indexer/").await.unwrap().is_empty());
    let next = b_election
        .try_campaign("host-b")
        .await
        .unwrap()
        .expect("free");
    assert!(next.term() > term, "{} <= {term}", next.term());
    next.resign().await.unwrap();
}

#[tokio::test]
async fn candidates_succeed_in_campaign_order_with_increasing_terms() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b, c) = (connect(&e).await, connect(&e).await, connect(&e).await);
    let n = name("succession");
    let first = a.election(&n).unwrap().campaign("a").await.unwrap();
    let b_campaign = tokio::spawn({
        let election = b.election(&n).unwrap();
        async move { election.campaign("b").await }
    });
    wait_for_waiters(&a, &n, 1).await;
    let c_campaign = tokio::spawn({
        let election = c.election(&n).unwrap();
        async move { election.campaign("c").await }
    });
    wait_for_waiters(&a, &n, 2).await;

    let first_term = first.term();
    first.resign().await.unwrap();
    let second = tokio::time::timeout(DEADLINE, b_campaign)
        .await
        .expect("b was not elected")
        .unwrap()
        .unwrap();
    assert!(second.term() > first_term);
    assert!(!c_campaign.is_finished(), "c was elected before b resigned");
    let seen = a.election(&n).unwrap().leader().await.unwrap().unwrap();
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"b"[..], second.term())
    );

    let second_term = second.term();
    second.resign().await.unwrap();
    let third = tokio::time::timeout(DEADLINE, c_campaign)
        .await
        .expect("c was not elected")
        .unwrap()
        .unwrap();
    assert!(third.term() > second_term);
    third.resign().await.unwrap();
}

/// The leader's connection goes silent: its lost() fires (renewals failed for 3/4 of the TTL)
/// before the store expires its lease and the follower is elected, and its proclaim is refused.
#[tokio::test]
async fn a_silent_leader_knows_it_lost_before_the_follower_is_elected() {
    let e = Etcd::start().await.expect("etcd");
    let proxy = FaultProxy::start(e.addr()).await.expect("proxy");
    let a = connect_both(proxy.port(), "ttl=2s&timeout=1s").await.0;
    let b = connect(&e).await;
    let n = name("silent-leader");
    let mut leading = a.election(&n).unwrap().campaign("a").await.unwrap();
    let b_campaign = tokio::spawn({
        let election = b.election(&n).unwrap();
        async move { election.campaign("b").await }
    });
    wait_for_waiters(&b, &n, 1).await;
    proxy.set_mode(ProxyMode::Blackhole);
    let next = tokio::time::timeout(DEADLINE, b_campaign)
        .await
        .expect("b was not elected after a's lease expired")
        .unwrap()
        .unwrap();
    assert!(
        leading.lost_reason().is_some(),
        "b was elected before a's lost() fired"
    );
    assert!(next.term() > leading.term());
    proxy.set_mode(ProxyMode::Pass);
    match leading.proclaim("a-again").await {
        Err(Error::NotOwner { .. }) => {}
        other => panic!("a lost leader's proclaim gave {other:?}, not NotOwner"),
    }
    let seen = b.election(&n).unwrap().leader().await.unwrap().unwrap();
    assert_eq!((seen.value.as_slice(), seen.term), (&b"b"[..], next.term()));
    next.resign().await.unwrap();
}

/// An operator revokes the leader's lease: the follower is elected, the old leader's lost()
/// fires with SessionExpired, and its proclaim and resign say NotOwner.
#[tokio::test]
async fn a_revoked_leader_is_replaced_and_told() {
    let e = Etcd::start().await.expect("etcd");
    let (a, a_etcd) = connect_both(e.port(), "ttl=30s").await;
    let b = connect(&e).await;
    let n = name("revoked-leader");
    let mut leading = a.election(&n).unwrap().campaign("a").await.unwrap();
    let b_campaign = tokio::spawn({
        let election = b.election(&n).unwrap();
        async move { election.campaign("b").await }
    });
    wait_for_waiters(&b, &n, 1).await;
    e.revoke_lease(a_etcd.lease_id().unwrap()).await.unwrap();
    let next = tokio::time::timeout(DEADLINE, b_campaign)
        .await
        .expect("b was not elected")
        .unwrap()
        .unwrap();
    let reason = tokio::time::timeout(DEADLINE, leading.lost())
        .await
        .expect("a's lost() did not fire");
    assert_eq!(reason, LostReason::SessionExpired);
    match leading.proclaim("a-again").await {
        Err(Error::NotOwner { .. }) => {}
        other => panic!("a revoked leader's proclaim gave {other:?}, not NotOwner"),
    }
    assert!(matches!(
        leading.resign().await,
        Err(Error::NotOwner { .. })
    ));
    next.resign().await.unwrap();
}

#[tokio::test]
async fn observers_wake_on_each_change() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b, c) = (connect(&e).await, connect(&e).await, connect(&e).await);
    let n = name("observed");
    let mut observer = c.election(&n).unwrap().observe();
    assert_eq!(observer.next().await.unwrap(), None);

    let mut first = a.election(&n).unwrap().campaign("a").await.unwrap();
    let seen = tokio::time::timeout(DEADLINE, observer.next())
        .await
        .expect("no wake on a's election")
        .unwrap()
        .expect("a leads");
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"a"[..], first.term())
    );

    // A candidate queueing changes nothing; a proclaim does.
    let b_campaign = tokio::spawn({
        let election = b.election(&n).unwrap();
        async move { election.campaign("b").await }
    });
    wait_for_waiters(&c, &n, 1).await;
    first.proclaim("a2").await.unwrap();
    let seen = tokio::time::timeout(DEADLINE, observer.next())
        .await
        .expect("no wake on a's proclaim")
        .unwrap()
        .unwrap();
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"a2"[..], first.term())
    );

    let a_term = first.term();
    first.resign().await.unwrap();
    let second = tokio::time::timeout(DEADLINE, b_campaign)
        .await
        .expect("b was not elected")
        .unwrap()
        .unwrap();
    // The observer may see nobody in between, then b.
    let mut seen = tokio::time::timeout(DEADLINE, observer.next())
        .await
        .expect("no wake on a's resignation")
        .unwrap();
    if seen.is_none() {
        seen = tokio::time::timeout(DEADLINE, observer.next())
            .await
            .expect("no wake on b's election")
            .unwrap();
    }
    let seen = seen.expect("b leads");
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"b"[..], second.term())
    );
    assert!(seen.term > a_term);

    second.resign().await.unwrap();
    let seen = tokio::time::timeout(DEADLINE, observer.next())
        .await
        .expect("no wake on b's resignation")
        .unwrap();
    assert_eq!(seen, None);
}

/// An observer whose store goes silent returns a connection or timeout error within the
/// request timeout (and the time a read may take to fail), not a silent wait.
#[tokio::test]
async fn an_observer_of_a_silent_store_errs_within_the_request_timeout() {
    let e = Etcd::start().await.expect("etcd");
    let proxy = FaultProxy::start(e.addr()).await.expect("proxy");
    let a = connect_both(proxy.port(), "ttl=5s&timeout=2s").await.0;
    let n = name("observed-silence");
    let mut observer = a.election(&n).unwrap().observe();
    assert_eq!(observer.next().await.unwrap(), None);
    proxy.set_mode(ProxyMode::Blackhole);
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(4), observer.next()).await;
    match outcome {
        Ok(Err(error)) if error.is_transient() => {
            assert!(started.elapsed() < Duration::from_secs(4));
        }
        other => panic!("the observer of a silent store gave {other:?}"),
    }
    proxy.set_mode(ProxyMode::Pass);
    // Once the store answers again, observing goes on: a leader elected meanwhile is seen.
    let b = connect(&e).await;
    let leading = b.election(&n).unwrap().campaign("b").await.unwrap();
    let start = Instant::now();
    loop {
        let next = tokio::time::timeout(DEADLINE, observer.next())
            .await
            .expect("the observer did not report b's election");
        match next {
            Ok(Some(seen)) => {
                assert_eq!(
                    (seen.value.as_slice(), seen.term),
                    (&b"b"[..], leading.term())
                );
                break;
            }
            Err(error) if error.is_transient() && start.elapsed() < DEADLINE => {}
            other => panic!("observing after the silence gave {other:?}"),
        }
    }
    leading.resign().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_campaign_leaves_no_key() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let n = name("cancelled");
    let leading = a.election(&n).unwrap().campaign("a").await.unwrap();
    let b_election = b.election(&n).unwrap();
    assert!(b_election
        .campaign_timeout("b", Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
    for step in 0..10u64 {
        let _ =
            tokio::time::timeout(Duration::from_millis(5 * step), b_election.campaign("b")).await;
    }
    wait_for_key_count(&e, "cancelled/", 1).await;
    leading.resign().await.unwrap();
    wait_for_key_count(&e, "cancelled/", 0).await;
    assert!(b_election.leader().await.unwrap().is_none());
}

/// etcd's own recipes put the same key for a mutex and an election of one name; tumbler tells
/// them apart by the value and refuses one as the other.
#[tokio::test]
async fn a_mutex_and_an_election_of_one_name_conflict() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let n = name("one-kind/election");
    let leading = a.election(&n).unwrap().campaign("a").await.unwrap();
    let problem = conflict_text(b.mutex(&n).unwrap().try_lock().await);
    assert!(problem.contains("election"), "{problem}");
    leading.resign().await.unwrap();

    let m = name("one-kind/mutex");
    let held = a.mutex(&m).unwrap().lock().await.unwrap();
    let problem = conflict_text(b.election(&m).unwrap().try_campaign("b").await);
    assert!(problem.contains("mutex"), "{problem}");
    let problem = conflict_text(b.election(&m).unwrap().leader().await);
    assert!(problem.contains("mutex"), "{problem}");
    // The refused campaign took its key away again.
    assert_eq!(e.range("one-kind/mutex/").await.unwrap().len(), 1);
    held.release().await.unwrap();
}

#[tokio::test]
async fn foreign_keys_conflict_and_nested_locks_do_not_count() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    // A nested lock's key is older than the candidate: it neither leads nor blocks.
    let child = a.mutex("nest/child").unwrap().lock().await.unwrap();
    let leading = b.election("nest").unwrap().campaign("b").await.unwrap();
    let seen = a.election("nest").unwrap().leader().await.unwrap().unwrap();
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"b"[..], leading.term())
    );
    leading.resign().await.unwrap();
    assert!(a
        .election("nest")
        .unwrap()
        .leader()
        .await
        .unwrap()
        .is_none());
    child.release().await.unwrap();

    e.put("strange/notes.txt", "hello").await.unwrap();
    let problem = conflict_text(a.election("strange").unwrap().leader().await);
    assert!(problem.contains("strange/notes.txt"), "{problem}");
    let problem = conflict_text(a.election("strange").unwrap().try_campaign("a").await);
    assert!(problem.contains("strange/notes.txt"), "{problem}");
}

#[tokio::test]
async fn the_largest_value_is_advertised_whole() {
    let e = Etcd::start().await.expect("etcd");
    let (a, b) = (connect(&e).await, connect(&e).await);
    let n = name("large");
    let largest = vec![b'x'; tumbler_etcd::MAX_VALUE_LEN];
    assert_eq!(a.capabilities().max_value_len, tumbler_etcd::MAX_VALUE_LEN);
    let mut leading = a
        .election(&n)
        .unwrap()
        .campaign(largest.clone())
        .await
        .unwrap();
    // A second candidate with the largest value queues (its create carries it twice).
    let waiting = tokio::spawn({
        let election = b.election(&n).unwrap();
        let value = vec![b'y'; tumbler_etcd::MAX_VALUE_LEN];
        async move { election.campaign(value).await }
    });
    wait_for_waiters(&a, &n, 1).await;
    let seen = b.election(&n).unwrap().leader().await.unwrap().unwrap();
    assert_eq!(seen.value, largest);
    leading
        .proclaim(vec![b'z'; tumbler_etcd::MAX_VALUE_LEN])
        .await
        .unwrap();
    leading.resign().await.unwrap();
    let next = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the second candidate was not elected")
        .unwrap()
        .unwrap();
    assert_eq!(next.value().len(), tumbler_etcd::MAX_VALUE_LEN);
    next.resign().await.unwrap();
}

// ---- interop with `etcdctl elect` ---------------------------------------------------------

/// `etcdctl elect ARGS...` with piped stdout.
fn etcdctl_elect(e: &Etcd, args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let program = std::env::var("TESTKIT_ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    let mut child = Command::new(program)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", e.endpoint()))
        .arg("elect")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start etcdctl (Debian package etcd-client)");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) -> String {
    tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("etcdctl did not print {what}"))
        .expect("read etcdctl")
        .unwrap_or_else(|| panic!("etcdctl ended before printing {what}"))
}

fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("etcdctl pid");
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {pid} failed");
}

/// `etcdctl elect NAME PROPOSAL` leads: tumbler reads its proposal, cannot be elected, and
/// its waiting campaign wins once etcdctl is killed and its lease is gone.
#[tokio::test]
async fn etcdctl_leads_and_tumbler_follows() {
    let e = Etcd::start().await.expect("etcd");
    let locks = connect(&e).await;
    let n = name("interop/elect-etcdctl-first");
    let (mut etcdctl, mut out) = etcdctl_elect(&e, &[n.as_str(), "go-proposal"]);
    // Elected, it prints its key and proposal.
    let key = next_line(&mut out, "its key").await;
    assert!(key.starts_with("interop/elect-etcdctl-first/"), "{key}");
    assert_eq!(next_line(&mut out, "its proposal").await, "go-proposal");

    let election = locks.election(&n).unwrap();
    let seen = election.leader().await.unwrap().expect("etcdctl leads");
    assert_eq!(seen.value, b"go-proposal");
    assert_eq!(seen.id, key);
    assert!(election.try_campaign("rust-1").await.unwrap().is_none());

    let waiting = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("rust-1").await }
    });
    wait_for_waiters(&locks, &n, 1).await;
    assert!(
        !waiting.is_finished(),
        "tumbler was elected while etcdctl led"
    );
    // SIGKILL: no resignation; the key goes with etcdctl's lease (60 s TTL), which an
    // operator revokes here instead of waiting.
    signal(&etcdctl, "KILL");
    let _ = etcdctl.wait().await;
    let lease = i64::from_str_radix(key.rsplit('/').next().unwrap(), 16).unwrap();
    e.revoke_lease(lease).await.unwrap();
    let leading = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("tumbler was not elected after etcdctl's lease went")
        .unwrap()
        .unwrap();
    assert!(leading.term() > seen.term);
    let now = election.leader().await.unwrap().unwrap();
    assert_eq!(
        (now.value.as_slice(), now.term),
        (&b"rust-1"[..], leading.term())
    );
    leading.resign().await.unwrap();
}

/// tumbler leads with "rust-1": `etcdctl elect -l` prints it, and `etcdctl elect NAME other`
/// waits until tumbler resigns, then leads (and resigns on SIGINT).
#[tokio::test]
async fn tumbler_leads_and_etcdctl_follows() {
    let e = Etcd::start().await.expect("etcd");
    let locks = connect(&e).await;
    let n = name("interop/elect-tumbler-first");
    let election = locks.election(&n).unwrap();
    let leading = election.campaign("rust-1").await.unwrap();
    let ours = election.leader().await.unwrap().unwrap();

    let (_observer, mut observed) = etcdctl_elect(&e, &["-l", n.as_str()]);
    assert_eq!(next_line(&mut observed, "the leader's key").await, ours.id);
    assert_eq!(
        next_line(&mut observed, "the leader's value").await,
        "rust-1"
    );

    let (mut candidate, mut out) = etcdctl_elect(&e, &[n.as_str(), "other"]);
    wait_for_waiters(&locks, &n, 1).await;
    let early = tokio::time::timeout(Duration::from_millis(500), out.next_line()).await;
    assert!(
        early.is_err(),
        "etcdctl was elected while tumbler led: {early:?}"
    );
    leading.resign().await.unwrap();
    let key = next_line(&mut out, "its key after tumbler resigned").await;
    assert_eq!(next_line(&mut out, "its proposal").await, "other");
    let theirs = election.leader().await.unwrap().expect("etcdctl leads");
    assert_eq!(
        (theirs.value.as_slice(), theirs.id.as_str()),
        (&b"other"[..], key.as_str())
    );
    assert!(theirs.term > ours.term);
    // The observer saw the new leader as well.
    assert_eq!(next_line(&mut observed, "the new leader's key").await, key);
    assert_eq!(
        next_line(&mut observed, "the new leader's value").await,
        "other"
    );

    // SIGINT: etcdctl resigns on its way out.
    signal(&candidate, "INT");
    let status = tokio::time::timeout(DEADLINE, candidate.wait())
        .await
        .expect("etcdctl did not exit")
        .unwrap();
    assert!(status.success(), "etcdctl exited with {status}");
    let start = Instant::now();
    while election.leader().await.unwrap().is_some() {
        assert!(start.elapsed() < DEADLINE, "etcdctl did not resign");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
