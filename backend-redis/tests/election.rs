//! Elections on a real Redis server: campaign, leader, proclaim, resign; terms; FIFO hand-off
//! between candidates; a leader that stops renewing is replaced after its TTL and knows it
//! first; followers are woken by the announcements; cancelled campaigns leave nothing; kind
//! conflicts and foreign data; what an uncontended campaign costs the server.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_conflict_naming, channels, reset_stats};
use common::{command_calls, connect, connect_backend, eventually, fresh_redis, logs, PROMPT};
use testkit::proxy::{FaultProxy, ProxyMode};
use testkit::redis::Redis;
use testkit::resp::Reply;
use tumbler_core::{Error, LeaderInfo, LockName, SharedBackend};
use tumbler_redis::RedisConfig;

/// The fields of the hash at `key` (empty when missing).
async fn hash(redis: &Redis, key: &str) -> BTreeMap<String, Vec<u8>> {
    match redis.cmd(&["HGETALL", key]).await.unwrap() {
        Reply::Array(Some(items)) => items
            .chunks(2)
            .map(|pair| match pair {
                [Reply::Bulk(Some(f)), Reply::Bulk(Some(v))] => {
                    (String::from_utf8(f.clone()).unwrap(), v.clone())
                }
                other => panic!("HGETALL item {other:?}"),
            })
            .collect(),
        other => panic!("HGETALL answered {other:?}"),
    }
}

async fn int(redis: &Redis, args: &[&str]) -> i64 {
    match redis.cmd(args).await.unwrap() {
        Reply::Int(n) => n,
        other => panic!("{args:?} answered {other:?}"),
    }
}

async fn text(redis: &Redis, key: &str) -> Option<String> {
    match redis.cmd(&["GET", key]).await.unwrap() {
        Reply::Bulk(v) => v.map(|v| String::from_utf8(v).unwrap()),
        other => panic!("GET answered {other:?}"),
    }
}

fn name(text: &str) -> LockName {
    LockName::new(text).unwrap()
}

/// How many candidates wait in the queue of `election`.
async fn waiting(locks: &SharedBackend, election: &str) -> usize {
    locks.state(&name(election)).await.unwrap().waiters.unwrap()
}

#[tokio::test]
async fn campaign_leader_proclaim_resign() {
    logs();
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    assert!(a.capabilities().election);
    assert_eq!(a.capabilities().max_value_len, tumbler_redis::MAX_VALUE_LEN);
    let election = a.election("svc/indexer").unwrap();
    assert_eq!(election.leader().await.unwrap(), None);
    let mut leadership = election.campaign("worker-a:8080").await.unwrap();
    let term = leadership.term();
    assert!(term > 0);
    // The lock key holds the owner token (redis-py and rslock see the name held); the record
    // carries the value, the term and that token, and expires with the hold.
    let owner = text(&redis, "svc/indexer").await.expect("the lock key");
    assert!(owner.ends_with(&format!(":l:{term}")), "{owner}");
    let record = hash(&redis, "{svc/indexer}#tumbler:leader").await;
    assert_eq!(record.get("value").unwrap(), b"worker-a:8080");
    assert_eq!(record.get("term").unwrap(), term.to_string().as_bytes());
    assert_eq!(record.get("owner").unwrap(), owner.as_bytes());
    let (lock_ttl, record_ttl) = (
        int(&redis, &["PTTL", "svc/indexer"]).await,
        int(&redis, &["PTTL", "{svc/indexer}#tumbler:leader"]).await,
    );
    assert!(record_ttl > 0 && record_ttl <= 2000, "{record_ttl}");
    assert!(
        (lock_ttl - record_ttl).abs() < 200,
        "{lock_ttl} vs {record_ttl}"
    );
    let seen = b.election("svc/indexer").unwrap().leader().await.unwrap();
    let seen = seen.expect("b sees the leader");
    assert_eq!(
        (seen.value.as_slice(), seen.term),
        (&b"worker-a:8080"[..], term)
    );
    assert!(owner.starts_with(&seen.id), "{} vs {owner}", seen.id);
    // The state shows a leader.
    let state = b.state(&name("svc/indexer")).await.unwrap();
    assert_eq!(state.holders[0].mode, tumbler_core::HoldMode::Leader);
    // Proclaim: same term, new value; binary values go through unchanged.
    let binary = vec![0u8, 255, 10, 13, 0];
    leadership.proclaim(binary.clone()).await.unwrap();
    let now = b
        .election("svc/indexer")
        .unwrap()
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.value, now.term, now.id), (binary, term, seen.id));
    // A second candidate cannot lead meanwhile.
    assert!(b
        .election("svc/indexer")
        .unwrap()
        .try_campaign("worker-b")
        .await
        .unwrap()
        .is_none());
    // The watchdog renews the record with the lock key.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(leadership.lost_reason().is_none());
    // Unrenewed, 0.5 s would be left; renewed every third of the TTL, more than 1 s is.
    let renewed = int(&redis, &["PTTL", "{svc/indexer}#tumbler:leader"]).await;
    assert!(renewed > 1000, "the record was not renewed: PTTL {renewed}");
    leadership.resign().await.unwrap();
    assert_eq!(election.leader().await.unwrap(), None);
    for key in ["svc/indexer", "{svc/indexer}#tumbler:leader"] {
        assert_eq!(int(&redis, &["EXISTS", key]).await, 0, "{key}");
    }
}

#[tokio::test]
async fn proclaim_after_the_leadership_was_removed_is_not_owner() {
    let redis = fresh_redis().await;
    let a = connect(&redis.url()).await;
    let admin = connect_backend(&redis.url()).await;
    let mut leadership = a
        .election("svc/removed")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    assert_eq!(admin.force_release("svc/removed").await.unwrap(), 1);
    assert_eq!(
        int(&redis, &["EXISTS", "{svc/removed}#tumbler:leader"]).await,
        0,
        "the record goes with the hold"
    );
    match leadership.proclaim("b").await {
        Err(Error::NotOwner { name }) => assert_eq!(name.as_str(), "svc/removed"),
        other => panic!("proclaim without the leadership gave {other:?}"),
    }
    assert_eq!(int(&redis, &["EXISTS", "svc/removed"]).await, 0);
    assert_eq!(
        a.election("svc/removed").unwrap().leader().await.unwrap(),
        None
    );
    drop(leadership);
}

/// Candidates are elected in the order they campaigned, each with its own value, and every
/// term is higher than the one before.
#[tokio::test]
async fn candidates_are_elected_in_order_with_increasing_terms() {
    logs();
    let redis = fresh_redis().await;
    let observer = connect(&redis.url()).await;
    let first = connect(&redis.url()).await;
    let leader = first
        .election("svc/fifo")
        .unwrap()
        .campaign("c0")
        .await
        .unwrap();
    let mut terms = vec![leader.term()];
    let mut candidates = Vec::new();
    for i in 1..=3 {
        let locks = connect(&redis.url()).await;
        candidates.push(tokio::spawn(async move {
            let election = locks.election("svc/fifo").unwrap();
            let leadership = election.campaign(format!("c{i}")).await.unwrap();
            (i, leadership, locks)
        }));
        eventually(PROMPT, "the candidate is queued", || async {
            waiting(&observer, "svc/fifo").await == i
        })
        .await;
    }
    assert_eq!(
        int(&redis, &["HLEN", "{svc/fifo}#tumbler:candidates"]).await,
        3,
        "each waiting candidate's value is kept for the hand-off"
    );
    leader.resign().await.unwrap();
    for task in candidates {
        let (i, leadership, _locks) = task.await.unwrap();
        let read = observer
            .election("svc/fifo")
            .unwrap()
            .leader()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.value, format!("c{i}").into_bytes());
        assert_eq!(read.term, leadership.term());
        assert!(leadership.term() > *terms.last().unwrap(), "{terms:?}");
        terms.push(leadership.term());
        leadership.resign().await.unwrap();
    }
    assert_eq!(
        int(&redis, &["EXISTS", "{svc/fifo}#tumbler:candidates"]).await,
        0
    );
    assert_eq!(
        observer
            .election("svc/fifo")
            .unwrap()
            .leader()
            .await
            .unwrap(),
        None
    );
}

/// Waits (at most `within`) for `leader_changed(seen)` on `locks` and returns it.
async fn next_change(
    locks: &SharedBackend,
    election: &str,
    seen: Option<&LeaderInfo>,
    within: Duration,
) -> Option<LeaderInfo> {
    tokio::time::timeout(within, locks.leader_changed(&name(election), seen))
        .await
        .expect("leader_changed returned")
        .unwrap()
}

/// A follower is woken by the announcement of a proclaim, a release and a new leader: with a
/// 60 s TTL and a 12 s request timeout its own re-reads come every 3 s, so a change seen within
/// 2.5 s came by the announcement.
#[tokio::test]
async fn followers_are_woken_by_proclaim_release_and_election() {
    logs();
    let redis = fresh_redis().await;
    let url = format!("{}?ttl=60s&request_timeout=12s", redis.url());
    let long = || async {
        RedisConfig::from_url(&url)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let (a, b, follower) = (long().await, long().await, long().await);
    let mut leadership = a
        .election("svc/follow")
        .unwrap()
        .campaign("a1")
        .await
        .unwrap();
    let seen = follower.leader(&name("svc/follow")).await.unwrap();
    assert_eq!(seen.as_ref().map(|l| l.value.clone()), Some(b"a1".to_vec()));
    // Returns at once when the leader already differs.
    assert_eq!(
        next_change(&follower, "svc/follow", None, PROMPT).await,
        seen
    );
    let prompt = Duration::from_millis(2500);

    let follows = {
        let (follower, seen) = (follower.clone(), seen.clone());
        tokio::spawn(
            async move { next_change(&follower, "svc/follow", seen.as_ref(), prompt).await },
        )
    };
    eventually(PROMPT, "the follower listens", || async {
        !channels(&redis, "{svc/follow}#tumbler:leader")
            .await
            .is_empty()
    })
    .await;
    leadership.proclaim("a2").await.unwrap();
    let proclaimed = follows.await.unwrap().expect("a leader");
    assert_eq!(proclaimed.value, b"a2");
    assert_eq!(proclaimed.term, leadership.term());

    // b waits to be elected; a's release hands it over, and the follower hears of it.
    let candidate = {
        let b = b.clone();
        tokio::spawn(async move {
            b.election("svc/follow")
                .unwrap()
                .campaign("b1")
                .await
                .unwrap()
        })
    };
    eventually(PROMPT, "b is queued", || async {
        waiting(&follower, "svc/follow").await == 1
    })
    .await;
    let follows = {
        let (follower, seen) = (follower.clone(), proclaimed.clone());
        tokio::spawn(async move { next_change(&follower, "svc/follow", Some(&seen), prompt).await })
    };
    // Give the follower's read a moment to happen before the change (either order is correct).
    tokio::task::yield_now().await;
    leadership.resign().await.unwrap();
    let next = follows.await.unwrap().expect("b leads");
    let b_leads = candidate.await.unwrap();
    assert_eq!(
        (next.value.as_slice(), next.term),
        (&b"b1"[..], b_leads.term())
    );
    assert!(next.term > proclaimed.term);

    let follows = {
        let (follower, seen) = (follower.clone(), next.clone());
        tokio::spawn(async move { next_change(&follower, "svc/follow", Some(&seen), prompt).await })
    };
    tokio::task::yield_now().await;
    b_leads.resign().await.unwrap();
    assert_eq!(
        follows.await.unwrap(),
        None,
        "nobody leads after the release"
    );
}

/// A leader cut off from the server (its process stalled or its network gone: it cannot
/// renew) sees `lost()` fire before a waiting candidate is elected, and the follower is woken
/// when its hold expires, with no message from anyone.
#[tokio::test]
async fn a_cut_off_leader_knows_before_it_is_replaced() {
    logs();
    let redis = fresh_redis().await;
    let proxy = FaultProxy::start(redis.addr()).await.unwrap();
    let cut = common::connect(&format!("redis://{}", proxy.addr())).await;
    let (b, follower) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let old = cut
        .election("svc/cut")
        .unwrap()
        .campaign("old")
        .await
        .unwrap();
    let old_term = old.term();
    let seen = follower.leader(&name("svc/cut")).await.unwrap();
    let follows = {
        let (follower, seen) = (follower.clone(), seen.clone());
        tokio::spawn(async move { next_change(&follower, "svc/cut", seen.as_ref(), PROMPT).await })
    };
    proxy.set_mode(ProxyMode::Blackhole);
    proxy.cut_all();
    let old = Arc::new(old);
    let knows = {
        let old = old.clone();
        tokio::spawn(async move {
            old.lost().await;
            Instant::now()
        })
    };
    let new = b
        .election("svc/cut")
        .unwrap()
        .campaign_timeout("new", PROMPT)
        .await
        .unwrap()
        .expect("elected after the old leader's TTL");
    let elected_at = Instant::now();
    let knew_at = knows.await.unwrap();
    assert!(
        knew_at <= elected_at,
        "the old leader learnt it only after the new one was elected"
    );
    assert!(new.term() > old_term);
    // The follower was woken by the expiry (or the election right after it).
    let changed = follows.await.unwrap();
    assert!(
        changed.as_ref().is_none_or(|l| l.term == new.term()),
        "{changed:?}"
    );
    proxy.set_mode(ProxyMode::Pass);
    new.resign().await.unwrap();
}

/// A leader whose process ends without resigning (killed: nothing renews its hold any more)
/// is replaced within its TTL.
#[tokio::test]
async fn a_killed_leader_is_replaced_within_its_ttl() {
    let redis = fresh_redis().await;
    let url = common::with_test_params(&redis.url());
    let old_term = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let locks = tumbler_redis::connect_url(&url).await.unwrap();
            let leadership = locks
                .election("svc/killed")
                .unwrap()
                .campaign("old")
                .await
                .unwrap();
            let term = leadership.term();
            // The process dies: no release, no renewal.
            std::mem::forget(leadership);
            std::mem::forget(locks);
            term
        })
    })
    .join()
    .unwrap();
    let (b, follower) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let seen = follower.leader(&name("svc/killed")).await.unwrap();
    assert_eq!(seen.as_ref().map(|l| l.term), Some(old_term));
    let started = Instant::now();
    let changed = next_change(&follower, "svc/killed", seen.as_ref(), PROMPT).await;
    assert_eq!(changed, None, "the killed leader's hold expired");
    assert!(
        started.elapsed() < common::TTL * 2,
        "the killed leader was noticed after {:?}",
        started.elapsed()
    );
    let new = b
        .election("svc/killed")
        .unwrap()
        .try_campaign("new")
        .await
        .unwrap();
    let new = new.expect("free after the old leader's TTL");
    assert!(new.term() > old_term);
    new.resign().await.unwrap();
}

/// A campaign that gives up (timed out, or its future dropped) leaves no queue entry and no
/// candidate value, and is never elected afterwards.
#[tokio::test]
async fn a_cancelled_campaign_leaves_nothing() {
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let leader = a
        .election("svc/cancel")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let timed_out = b
        .election("svc/cancel")
        .unwrap()
        .campaign_timeout("b", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(timed_out.is_none());
    let dropped = {
        let b = b.clone();
        tokio::spawn(async move { b.election("svc/cancel").unwrap().campaign("c").await })
    };
    eventually(PROMPT, "the second campaign is queued", || async {
        waiting(&a, "svc/cancel").await == 1
    })
    .await;
    dropped.abort();
    let _ = dropped.await;
    eventually(PROMPT, "the dropped campaign's entry is gone", || async {
        waiting(&a, "svc/cancel").await == 0
    })
    .await;
    for key in [
        "{svc/cancel}#tumbler:queue",
        "{svc/cancel}#tumbler:queue-exp",
        "{svc/cancel}#tumbler:candidates",
    ] {
        assert_eq!(int(&redis, &["EXISTS", key]).await, 0, "{key}");
    }
    leader.resign().await.unwrap();
    assert_eq!(
        a.election("svc/cancel").unwrap().leader().await.unwrap(),
        None
    );
    assert_eq!(int(&redis, &["EXISTS", "svc/cancel"]).await, 0);
}

/// A name is an election or a lock, not both: either way round the second is a `Conflict`
/// naming both kinds.
#[tokio::test]
async fn an_election_and_a_lock_on_one_name_conflict() {
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let leadership = a.election("kind/e").unwrap().campaign("a").await.unwrap();
    let names_both = |outcome: Result<bool, Error>, other: &str| match outcome {
        Err(Error::Conflict { name, problem }) => {
            assert!(
                problem.contains("election") && problem.contains(other),
                "{name}: {problem}"
            )
        }
        other_outcome => panic!("expected a conflict naming the {other}: {other_outcome:?}"),
    };
    names_both(
        b.mutex("kind/e")
            .unwrap()
            .try_lock()
            .await
            .map(|g| g.is_some()),
        "mutex",
    );
    names_both(
        b.rwlock("kind/e")
            .unwrap()
            .try_write()
            .await
            .map(|g| g.is_some()),
        "read-write",
    );
    names_both(
        b.semaphore("kind/e", 2)
            .unwrap()
            .try_acquire(1)
            .await
            .map(|g| g.is_some()),
        "semaphore",
    );
    leadership.resign().await.unwrap();
    let guard = a.mutex("kind/m").unwrap().lock().await.unwrap();
    names_both(
        b.election("kind/m")
            .unwrap()
            .try_campaign("b")
            .await
            .map(|g| g.is_some()),
        "mutex",
    );
    names_both(
        b.election("kind/m")
            .unwrap()
            .leader()
            .await
            .map(|l| l.is_some()),
        "mutex",
    );
    guard.release().await.unwrap();
    let read = a.rwlock("kind/r").unwrap().read().await.unwrap();
    names_both(
        b.election("kind/r")
            .unwrap()
            .try_campaign("b")
            .await
            .map(|g| g.is_some()),
        "read-write",
    );
    read.release().await.unwrap();
}

/// Data in the leader record that tumbler did not write, and a lock key held by a client that
/// is not tumbler (a redis-py lock), are `Conflict`s naming the key.
#[tokio::test]
async fn foreign_data_in_an_election_is_a_conflict_naming_the_key() {
    let redis = fresh_redis().await;
    let locks = connect(&redis.url()).await;
    redis
        .cmd(&["SET", "{alien/s}#tumbler:leader", "someone"])
        .await
        .unwrap();
    redis
        .cmd(&["HSET", "{alien/h}#tumbler:leader", "who", "someone"])
        .await
        .unwrap();
    for election in ["alien/s", "alien/h"] {
        let key = format!("{{{election}}}#tumbler:leader");
        let e = locks.election(election).unwrap();
        assert_conflict_naming(format!("{:?}", e.try_campaign("v").await), &key);
        assert_conflict_naming(
            format!(
                "{:?}",
                e.campaign_timeout("v", Duration::from_millis(300)).await
            ),
            &key,
        );
        assert_conflict_naming(format!("{:?}", e.leader().await), &key);
        // Nothing was written.
        assert_eq!(int(&redis, &["EXISTS", election]).await, 0);
    }
    // A redis-py lock on the name: busy for a campaign, and no leader of the election.
    redis
        .cmd(&["SET", "alien/py", "3f2a9c", "PX", "10000"])
        .await
        .unwrap();
    let e = locks.election("alien/py").unwrap();
    assert!(e.try_campaign("v").await.unwrap().is_none());
    match e.leader().await {
        Err(Error::Conflict { problem, .. }) => {
            assert!(
                problem.contains("alien/py") && problem.contains("redis-py"),
                "{problem}"
            )
        }
        other => panic!("a redis-py holder read as {other:?}"),
    }
}

/// An uncontended campaign and resignation: 7 commands to be elected (EVALSHA, EXISTS of the
/// record, INCRBY of the counter, SET NX PX, HSET and PEXPIRE of the record, PUBLISH) and 4 to
/// resign (EVALSHA, GET, DEL of both keys, PUBLISH).
#[tokio::test]
async fn an_uncontended_campaign_and_resign_cost_eleven_commands() {
    logs();
    let redis = fresh_redis().await;
    let locks = connect(&redis.url()).await;
    let election = locks.election("count/election").unwrap();
    let warm = election.campaign("v").await.unwrap();
    let mut term = warm.term();
    warm.resign().await.unwrap();
    eventually(PROMPT, "the holder's inbox is subscribed", || async {
        channels(&redis, "*count/election*").await.len() == 1
    })
    .await;
    const CYCLES: u64 = 20;
    reset_stats(&redis).await;
    for _ in 0..CYCLES {
        let leadership = election.campaign("v").await.unwrap();
        assert!(leadership.term() > term);
        term = leadership.term();
        leadership.resign().await.unwrap();
    }
    let calls = command_calls(&redis).await;
    let expected: BTreeMap<String, u64> = [
        ("evalsha", 2),
        ("exists", 1),
        ("incrby", 1),
        ("set", 1),
        ("hset", 1),
        ("pexpire", 1),
        ("publish", 2),
        ("get", 1),
        ("del", 1),
    ]
    .into_iter()
    .map(|(c, n)| (c.to_owned(), n * CYCLES))
    .collect();
    assert_eq!(calls, expected);
}

/// Redlock mode has no elections: it says so, and a campaign is `Unsupported`.
#[tokio::test]
async fn redlock_has_no_elections() {
    let servers = Redis::start_many(3).await.unwrap();
    let hosts: Vec<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    let locks = RedisConfig::from_url(&format!(
        "redis+redlock://{}?ttl=2s&restart_delay=0s",
        hosts.join(",")
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    assert!(!locks.capabilities().election);
    match locks.election("svc/r").unwrap().campaign("v").await {
        Err(Error::Unsupported { capability, .. }) => assert_eq!(capability, "election"),
        other => panic!("a Redlock campaign gave {other:?}"),
    }
    match locks.leader(&name("svc/r")).await {
        Err(Error::Unsupported { capability, .. }) => assert_eq!(capability, "election"),
        other => panic!("a Redlock leader read gave {other:?}"),
    }
}
