//! Leader elections on Consul's leader-election guide, against the Consul test server: value,
//! term and proclaim; hand-over on resign and on a destroyed session; following changes;
//! cancellation; flag conflicts with Go's lock clients; and interop both ways with a client
//! that follows the guide with raw HTTP (a session, `PUT ?acquire=` with its data as the body).

mod common;

use std::time::Duration;

use common::{client, server, GoClient, GO_LOCK_FLAGS, GO_SEMAPHORE_FLAGS};
use serde_json::Value;
use tumbler_core::{Error, LockName};

const PARAMS: &str = "ttl=5s&lock_delay=0s&request_timeout=3s";
/// Longest a hand-over may take in these tests (a failure, not a pacing).
const PROMPT: Duration = Duration::from_secs(10);

fn name(s: &str) -> LockName {
    LockName::new(s).unwrap()
}

/// The raw value of a KV entry.
fn raw_value(entry: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(entry["Value"].as_str().unwrap_or(""))
        .unwrap()
}

/// Waits until `state()` shows `n` waiting candidates.
async fn until_waiting(c: &common::Client, election: &str, n: usize) {
    let deadline = std::time::Instant::now() + PROMPT;
    loop {
        let state = c.locks.state(&name(election)).await.unwrap();
        if state.waiters >= Some(n) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{state:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_leader_proclaim_resign() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let go = GoClient::new(&server);
    let key = a.backend.election_key(&name("web")).unwrap();
    assert_eq!(key, "tumbler/web/leader");
    let election = a.locks.election("web").unwrap();
    assert!(election.leader().await.unwrap().is_none());
    let mut leadership = election.campaign("a:8080").await.unwrap();
    let term = leadership.term();
    let seen = b
        .locks
        .election("web")
        .unwrap()
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.value, b"a:8080");
    assert_eq!(seen.term, term);
    assert_eq!(Some(seen.id.clone()), a.backend.session_id().await);
    let before = go.get(&key).await.unwrap();
    assert_eq!(before["Flags"].as_u64(), Some(0), "{before}");

    leadership.proclaim("a:9090").await.unwrap();
    let seen = b
        .locks
        .election("web")
        .unwrap()
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!((seen.value.as_slice(), seen.term), (&b"a:9090"[..], term));
    let after = go.get(&key).await.unwrap();
    assert_eq!(after["LockIndex"], before["LockIndex"]);
    assert_eq!(raw_value(&after), b"a:9090");
    assert_eq!(leadership.value(), b"a:9090");

    let b_election = b.locks.election("web").unwrap();
    assert!(b_election.try_campaign("b").await.unwrap().is_none());
    let state = b.locks.state(&name("web")).await.unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    assert_eq!(state.holders[0].token, Some(term));

    leadership.resign().await.unwrap();
    assert!(b_election.leader().await.unwrap().is_none());
    let next = b_election.try_campaign("b").await.unwrap().unwrap();
    assert!(next.term() > term, "{} <= {term}", next.term());
    let mut last = next.term();
    next.resign().await.unwrap();
    // Terms keep increasing over a few more leaderships, on one client and on the other.
    for round in 0..4 {
        let e = if round % 2 == 0 {
            &election
        } else {
            &b_election
        };
        let l = e.try_campaign(format!("r{round}")).await.unwrap().unwrap();
        assert!(l.term() > last, "round {round}: {} <= {last}", l.term());
        last = l.term();
        l.resign().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_candidate_is_elected_on_resign() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let first = a
        .locks
        .election("jobs")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let b_election = b.locks.election("jobs").unwrap();
    let waiting = tokio::spawn(async move { b_election.campaign("b").await });
    until_waiting(&a, "jobs", 1).await;
    assert!(!waiting.is_finished());
    let term = first.term();
    first.resign().await.unwrap();
    let second = tokio::time::timeout(PROMPT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(second.term() > term);
    let seen = a
        .locks
        .election("jobs")
        .unwrap()
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"b"[..], second.term())
    );
    second.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_leader_session_elects_the_follower_after_lost() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let mut leader = a.locks.election("db").unwrap().campaign("a").await.unwrap();
    let b_election = b.locks.election("db").unwrap();
    let waiting = tokio::spawn(async move { b_election.campaign("b").await });
    until_waiting(&b, "db", 1).await;
    let session = a.backend.session_id().await.unwrap();
    // An operator (or a failed health check) ends the leader's session.
    b.backend.destroy_session(&session).await.unwrap();
    let next = tokio::time::timeout(PROMPT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        leader.lost_reason().is_some(),
        "B was elected before A's lost() fired"
    );
    assert!(next.term() > leader.term());
    assert!(matches!(
        leader.proclaim("a-again").await,
        Err(Error::NotOwner { .. })
    ));
    let seen = a
        .locks
        .election("db")
        .unwrap()
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.value, b"b");
    next.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changed_wakes_on_each_change() {
    let server = server().await;
    let (a, c) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let mut observer = c.locks.election("obs").unwrap().observe();
    assert_eq!(observer.next().await.unwrap(), None);
    let next = tokio::spawn(async move {
        let first = observer.next().await;
        (observer, first)
    });
    let mut leadership = a
        .locks
        .election("obs")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let (mut observer, first) = tokio::time::timeout(PROMPT, next).await.unwrap().unwrap();
    let first = first.unwrap().unwrap();
    assert_eq!(
        (first.value.as_slice(), first.term),
        (&b"a"[..], leadership.term())
    );
    leadership.proclaim("a2").await.unwrap();
    let second = tokio::time::timeout(PROMPT, observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.value.as_slice(), second.term),
        (&b"a2"[..], first.term)
    );
    leadership.resign().await.unwrap();
    let third = tokio::time::timeout(PROMPT, observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_campaign_leaves_nothing_behind() {
    let server = server().await;
    let (a, b) = (client(&server, PARAMS).await, client(&server, PARAMS).await);
    let go = GoClient::new(&server);
    let leader = a
        .locks
        .election("gone")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let b_election = b.locks.election("gone").unwrap();
    let late = b_election
        .campaign_timeout("b", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(late.is_none());
    // Campaigns dropped at many points while A leads, then while nobody does.
    for step in 0..10u64 {
        let _ =
            tokio::time::timeout(Duration::from_micros(300 * step), b_election.campaign("b")).await;
    }
    leader.resign().await.unwrap();
    for step in 0..10u64 {
        if let Ok(won) =
            tokio::time::timeout(Duration::from_micros(300 * step), b_election.campaign("b")).await
        {
            won.unwrap().resign().await.unwrap();
        }
    }
    let deadline = std::time::Instant::now() + PROMPT;
    loop {
        let candidates = go.list("tumbler/gone/.candidates/").await;
        let held = go
            .get("tumbler/gone/leader")
            .await
            .is_some_and(|e| e["Session"].as_str().is_some_and(|s| !s.is_empty()));
        let sessions = b.backend.session_ids();
        if candidates.is_empty() && !held && sessions.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {candidates:?}, key held: {held}, sessions {sessions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the election works: A is elected at once.
    let again = a
        .locks
        .election("gone")
        .unwrap()
        .try_campaign("a")
        .await
        .unwrap()
        .unwrap();
    again.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_client_flags_on_the_key_conflict() {
    let server = server().await;
    let a = client(&server, PARAMS).await;
    let go = GoClient::new(&server);
    for (election, flags, kind) in [
        ("as-mutex", GO_LOCK_FLAGS, "mutex"),
        ("as-semaphore", GO_SEMAPHORE_FLAGS, "semaphore"),
    ] {
        let key = format!("tumbler/{election}/leader");
        let session = go.session("10s", "release").await;
        assert!(go.acquire(&key, &session, flags, b"go").await);
        let e = a.locks.election(election).unwrap();
        for outcome in [
            e.try_campaign("a").await.map(|l| l.is_some()),
            e.leader().await.map(|l| l.is_some()),
        ] {
            match outcome {
                Err(Error::Conflict { problem, .. }) => {
                    assert!(problem.contains(kind), "{problem}");
                    assert!(problem.contains("election"), "{problem}");
                    assert!(problem.contains(&key), "{problem}");
                }
                other => panic!("{election}: {other:?}"),
            }
        }
        // Still the Go client's.
        assert_eq!(
            go.get(&key).await.unwrap()["Session"].as_str(),
            Some(session.as_str())
        );
    }
    // Foreign flags, and a value written without ?acquire=, name the key.
    let key = "tumbler/foreign/leader";
    assert!(go.cas(key, 7, b"x".to_vec(), 0).await);
    let e = a.locks.election("foreign").unwrap();
    assert!(
        matches!(e.try_campaign("a").await, Err(Error::Conflict { problem, .. }) if problem.contains(key))
    );
    let key = "tumbler/plain/leader";
    assert!(go.cas(key, 0, b"x".to_vec(), 0).await);
    let e = a.locks.election("plain").unwrap();
    assert!(
        matches!(e.leader().await, Err(Error::Conflict { problem, .. }) if problem.contains(key))
    );
    // A mutex and an election of one name conflict both ways.
    let leading = a
        .locks
        .election("both")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let b = client(&server, PARAMS).await;
    assert!(matches!(
        b.locks.mutex("both").unwrap().try_lock().await,
        Err(Error::Conflict { .. })
    ));
    leading.resign().await.unwrap();
    let held = b.locks.mutex("both").unwrap().lock().await.unwrap();
    assert!(matches!(
        a.locks.election("both").unwrap().try_campaign("a").await,
        Err(Error::Conflict { .. })
    ));
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_client_leads_then_hands_over_to_us() {
    let server = server().await;
    let a = client(&server, PARAMS).await;
    let go = GoClient::new(&server);
    let key = "tumbler/svc/leader";
    let session = go.session("10s", "release").await;
    assert!(go.acquire(key, &session, 0, b"raw:1").await);
    let e = a.locks.election("svc").unwrap();
    let seen = e.leader().await.unwrap().unwrap();
    assert_eq!(seen.value, b"raw:1");
    assert_eq!(seen.id, session);
    assert!(e.try_campaign("ours").await.unwrap().is_none());
    let waiting = {
        let e = e.clone();
        tokio::spawn(async move { e.campaign("ours").await })
    };
    until_waiting(&a, "svc", 1).await;
    assert!(!waiting.is_finished());
    assert!(go.release(key, &session, 0).await);
    let ours = tokio::time::timeout(PROMPT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ours.term() > seen.term);
    let entry = go.get(key).await.unwrap();
    assert_eq!(raw_value(&entry), b"ours");
    ours.resign().await.unwrap();
    go.destroy(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_lead_and_the_guide_client_sees_it() {
    let server = server().await;
    let a = client(&server, PARAMS).await;
    let go = GoClient::new(&server);
    let key = "tumbler/api/leader";
    let leadership = a
        .locks
        .election("api")
        .unwrap()
        .campaign("a:443")
        .await
        .unwrap();
    let entry = go.get(key).await.unwrap();
    assert_eq!(raw_value(&entry), b"a:443");
    assert_eq!(
        entry["Session"].as_str().map(str::to_string),
        a.backend.session_id().await
    );
    let session = go.session("10s", "release").await;
    assert!(!go.acquire(key, &session, 0, b"raw").await);
    assert!(!go.acquire(key, &session, 0, b"raw").await);
    let term = leadership.term();
    leadership.resign().await.unwrap();
    assert!(go.acquire(key, &session, 0, b"raw").await);
    let seen = a
        .locks
        .election("api")
        .unwrap()
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (seen.value.as_slice(), seen.id.as_str()),
        (&b"raw"[..], session.as_str())
    );
    assert!(seen.term > term);
    go.destroy(&session).await;
}

/// A follower waiting for a change while the agent stops answering gets a connection or
/// timeout error within the request timeout (not after the blocking query's whole wait), and
/// follows again once the agent answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_of_a_stalled_agent_errs_within_the_request_timeout() {
    let server = server().await;
    let (a, c) = (
        client(&server, PARAMS).await,
        client(
            &server,
            "ttl=5s&lock_delay=0s&request_timeout=1s&query_wait=30s",
        )
        .await,
    );
    let mut observer = c.locks.election("stall").unwrap().observe();
    assert_eq!(observer.next().await.unwrap(), None);
    let waiting = tokio::spawn(async move {
        let outcome = observer.next().await;
        (observer, outcome, std::time::Instant::now())
    });
    // Nothing changes, so the follower waits (its reads held by the stalled agent).
    server.pause();
    let paused = std::time::Instant::now();
    let (mut observer, outcome, ended) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the follower of a stalled agent was still waiting after 5s")
        .unwrap();
    server.resume();
    match outcome {
        Err(e) => assert!(e.is_transient(), "{e}"),
        Ok(other) => panic!("the follower of a stalled agent got {other:?}"),
    }
    let took = ended - paused;
    assert!(
        took <= Duration::from_millis(1500),
        "the error took {took:?}"
    );
    let leadership = a
        .locks
        .election("stall")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let next = tokio::time::timeout(PROMPT, observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.value, b"a");
    leadership.resign().await.unwrap();
}
