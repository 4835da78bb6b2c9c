//! The promises of issue 12 on one real Redis server: validity from the grant, waiters that
//! stop blocking, unreachable is an error, one kind per name, foreign data, shutdown, the same
//! loss reasons and connection events as every store, and the restart delay that says so.

mod common;

use std::time::{Duration, Instant};

use common::{assert_conflict_naming, connect, eventually, fresh_redis, logs, PROMPT, TTL};
use testkit::proxy::{FaultProxy, ProxyMode};
use testkit::redis::{Redis, RedisOptions};
use tumbler_core::{ConnectionEvent, Error, LockBackend, LostReason, SharedBackend};
use tumbler_redis::{RedisConfig, MAX_WAITER_TTL};

/// A client of `url` with extra parameters (no test defaults).
async fn connect_with(url: &str, params: &str) -> SharedBackend {
    RedisConfig::from_url(&format!("{url}?{params}"))
        .expect("test URL")
        .connect()
        .await
        .expect("connect to the test redis")
}

/// A.1: a holder stalled right after `lock()` returned (here: the only runtime thread blocked)
/// sees the loss on its first look when it runs again, before any `.await`, even though the
/// watchdog never got to run.
#[tokio::test]
async fn validity_starts_at_the_grant() {
    let redis = fresh_redis().await;
    let (holder, rival) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let guard = holder.mutex("stall").unwrap().lock().await.unwrap();
    std::thread::sleep(TTL + Duration::from_millis(200));
    assert!(
        guard.lost_reason().is_some(),
        "a holder stalled past its TTL still believes it holds the lock"
    );
    // Meanwhile the key expired on the server: a rival holds the lock.
    let taken = rival.mutex("stall").unwrap().try_lock().await.unwrap();
    assert!(
        taken.is_some(),
        "the stalled hold's key should have expired"
    );
    assert_eq!(guard.lost_reason(), Some(LostReason::RenewalFailed));
    taken.unwrap().release().await.unwrap();
    drop(guard);
}

/// A.2: a waiter that vanished (killed, cut off: it can neither refresh nor remove its queue
/// entry) stops blocking a free lock within `MAX_WAITER_TTL`, however long the lock TTL.
#[tokio::test]
async fn a_vanished_waiter_stops_blocking_within_3_s_whatever_the_ttl() {
    logs();
    let redis = fresh_redis().await;
    let proxy = FaultProxy::start(redis.addr()).await.unwrap();
    let params = "ttl=30s&connect_timeout=1s";
    let holder = connect_with(&redis.url(), params).await;
    let doomed = connect_with(&format!("redis://{}", proxy.addr()), params).await;
    let next = connect_with(&redis.url(), params).await;
    let held = holder.mutex("vanish").unwrap().lock().await.unwrap();
    let waiter = doomed.mutex("vanish").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    eventually(PROMPT, "the doomed waiter queued", || async {
        holder.state("vanish").await.unwrap().waiters == Some(1)
    })
    .await;
    proxy.set_mode(ProxyMode::Blackhole);
    proxy.cut_all();
    held.release().await.unwrap();
    let started = Instant::now();
    let guard = next
        .mutex("vanish")
        .unwrap()
        .lock_timeout(MAX_WAITER_TTL + Duration::from_secs(3))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        guard.is_some(),
        "the free lock was still blocked by the vanished waiter after {waited:?}"
    );
    guard.unwrap().release().await.unwrap();
    waiting.abort();
}

/// A.2 and A.6: a waiter that timed out leaves no queue entry, also when its runtime ends
/// right after (a CLI exiting after `--timeout`), with or without `shutdown()` first: the
/// next `try_lock` on the free lock succeeds at once.
#[tokio::test]
async fn a_timed_out_waiter_leaves_no_entry_behind_its_exit() {
    let redis = fresh_redis().await;
    let params = "ttl=30s&connect_timeout=1s";
    let holder = connect_with(&redis.url(), params).await;
    for shut_down in [true, false] {
        let name = format!("exit/{shut_down}");
        let held = holder.mutex(name.as_str()).unwrap().lock().await.unwrap();
        let url = format!("{}?{params}", redis.url());
        let waited = name.clone();
        // The waiting process: its own runtime, gone right after the wait timed out.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let locks = tumbler_redis::connect_url(&url).await.unwrap();
                let got = locks
                    .mutex(waited.as_str())
                    .unwrap()
                    .lock_timeout(Duration::from_millis(500))
                    .await
                    .unwrap();
                assert!(got.is_none(), "the lock is held");
                if shut_down {
                    locks.shutdown().await.unwrap();
                }
            });
        })
        .join()
        .unwrap();
        assert_eq!(
            holder.state(name.as_str()).await.unwrap().waiters,
            Some(0),
            "shutdown: {shut_down}"
        );
        held.release().await.unwrap();
        let next = holder
            .mutex(name.as_str())
            .unwrap()
            .try_lock()
            .await
            .unwrap();
        assert!(
            next.is_some(),
            "the exited waiter's entry kept the free lock (shutdown: {shut_down})"
        );
        next.unwrap().release().await.unwrap();
    }
}

/// A.6: shutdown() stops every waiting acquisition (it returns `Closed`) and removes its
/// queue entry before it returns.
#[tokio::test]
async fn shutdown_stops_waiters_and_removes_their_entries() {
    let redis = fresh_redis().await;
    let (holder, waiter_side) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let held = holder.mutex("bye/wait").unwrap().lock().await.unwrap();
    let mutex = waiter_side.mutex("bye/wait").unwrap();
    let waiting = tokio::spawn(async move { mutex.lock().await });
    eventually(PROMPT, "the waiter queued", || async {
        holder.state("bye/wait").await.unwrap().waiters == Some(1)
    })
    .await;
    waiter_side.shutdown().await.unwrap();
    assert_eq!(holder.state("bye/wait").await.unwrap().waiters, Some(0));
    let outcome = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("the waiter stopped")
        .unwrap();
    assert!(matches!(outcome, Err(Error::Closed { .. })), "{outcome:?}");
    held.release().await.unwrap();
}

/// A.6: a guard dropped outside any runtime, after the runtime it was acquired on is gone,
/// does not panic and is still released (long before its TTL).
#[test]
fn a_guard_dropped_outside_any_runtime_is_released() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (redis, guard) = runtime.block_on(async {
        let redis = fresh_redis().await;
        let locks = connect_with(&redis.url(), "ttl=30s&connect_timeout=1s").await;
        let guard = locks.mutex("orphan").unwrap().lock().await.unwrap();
        (redis, guard)
    });
    drop(runtime);
    drop(guard);
    let check = tokio::runtime::Runtime::new().unwrap();
    check.block_on(async {
        let other = connect(&redis.url()).await;
        eventually(
            Duration::from_secs(5),
            "the orphaned guard was released",
            || async { !other.state("orphan").await.unwrap().is_held() },
        )
        .await;
    });
}

/// A.3: a stalled server (SIGSTOP) is a timeout within the request timeout, every time (also
/// while the connection is being made again), and the connection is reported suspended at once.
#[tokio::test]
async fn a_stalled_server_is_a_timeout_within_the_request_timeout() {
    logs();
    let redis = fresh_redis().await;
    let locks = connect_with(
        &redis.url(),
        "ttl=10s&request_timeout=500ms&connect_timeout=5s",
    )
    .await;
    let events = locks.connection_events();
    let held = locks.mutex("stall/held").unwrap().lock().await.unwrap();
    redis.pause().unwrap();
    for attempt in 0..3 {
        let started = Instant::now();
        let outcome = locks.mutex("stall/other").unwrap().try_lock().await;
        let took = started.elapsed();
        assert!(
            matches!(outcome, Err(Error::Timeout { .. })),
            "attempt {attempt}: a server that does not answer is Timeout (as lock() says), \
             not {outcome:?}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "attempt {attempt} took {took:?}"
        );
        if let Err(Error::Timeout { after, .. }) = outcome {
            assert!(
                after <= took && after >= Duration::from_millis(400),
                "{after:?}"
            );
        }
        assert_eq!(events.current(), ConnectionEvent::Suspended);
    }
    let started = Instant::now();
    let waited = locks
        .mutex("stall/other")
        .unwrap()
        .lock_timeout(Duration::from_secs(1))
        .await;
    assert!(waited.is_err(), "busy instead of an error: {waited:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    redis.resume().unwrap();
    drop(held);
}

/// A.4: one name, one kind: a mutex, a read-write lock and a semaphore on one name exclude
/// each other with `Conflict` naming both kinds; nested names are independent locks.
#[tokio::test]
async fn one_name_is_one_kind_and_nested_names_are_independent() {
    let redis = fresh_redis().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let conflict = |outcome: String, held: &str, asked: &str| {
        assert!(
            outcome.contains("Conflict") && outcome.contains(held) && outcome.contains(asked),
            "{asked} on a name held as a {held}: {outcome}"
        )
    };
    let mutex = a.mutex("kinds/m").unwrap().lock().await.unwrap();
    let rw = b.rwlock("kinds/m").unwrap();
    conflict(
        format!("{:?}", rw.try_read().await),
        "mutex",
        "read-write lock",
    );
    conflict(
        format!("{:?}", rw.try_write().await),
        "mutex",
        "read-write lock",
    );
    let sem = b.semaphore("kinds/m", 3).unwrap();
    conflict(
        format!("{:?}", sem.try_acquire(1).await),
        "mutex",
        "semaphore",
    );
    // Nested names are other locks.
    let nested = b.mutex("kinds/m/child").unwrap().try_lock().await.unwrap();
    assert!(nested.is_some(), "a/b is independent of a");
    let parent_rw = b.rwlock("kinds").unwrap().try_write().await.unwrap();
    assert!(parent_rw.is_some(), "a is independent of a/b");
    mutex.release().await.unwrap();

    let lease = a.semaphore("kinds/s", 2).unwrap().acquire(1).await.unwrap();
    conflict(
        format!("{:?}", b.mutex("kinds/s").unwrap().try_lock().await),
        "semaphore",
        "mutex",
    );
    conflict(
        format!("{:?}", b.rwlock("kinds/s").unwrap().try_read().await),
        "semaphore",
        "read-write lock",
    );
    let other_limit = b.semaphore("kinds/s", 5).unwrap().try_acquire(1).await;
    assert!(
        matches!(other_limit, Err(Error::Conflict { .. })),
        "{other_limit:?}"
    );
    lease.release().await.unwrap();

    let read = a.rwlock("kinds/r").unwrap().read().await.unwrap();
    conflict(
        format!("{:?}", b.mutex("kinds/r").unwrap().try_lock().await),
        "read-write lock",
        "mutex",
    );
    conflict(
        format!(
            "{:?}",
            b.semaphore("kinds/r", 2).unwrap().try_acquire(1).await
        ),
        "read-write lock",
        "semaphore",
    );
    read.release().await.unwrap();
    nested.unwrap().release().await.unwrap();
    parent_rw.unwrap().release().await.unwrap();
    // Once nothing holds or waits, the name is free for any kind.
    let sem_now = b
        .semaphore("kinds/m", 3)
        .unwrap()
        .try_acquire(1)
        .await
        .unwrap();
    assert!(sem_now.is_some());
    sem_now.unwrap().release().await.unwrap();
}

/// A.5: data tumbler did not write is `Conflict` naming the key, every time: never busy for
/// ever, never a Lua error, never a token lower than one handed out.
#[tokio::test]
async fn foreign_data_is_a_conflict_naming_the_key() {
    let redis = fresh_redis().await;
    let locks = connect(&redis.url()).await;
    // A hash at the lock key.
    redis.cmd(&["HSET", "alien/hash", "f", "v"]).await.unwrap();
    let m = locks.mutex("alien/hash").unwrap();
    assert_conflict_naming(format!("{:?}", m.try_lock().await), "alien/hash");
    assert_conflict_naming(
        format!("{:?}", m.lock_timeout(Duration::from_millis(300)).await),
        "alien/hash",
    );
    assert_conflict_naming(
        format!("{:?}", locks.state("alien/hash").await),
        "alien/hash",
    );
    // A string without expiry that tumbler did not write: it would be held for ever.
    redis
        .cmd(&["SET", "alien/forever", "someone"])
        .await
        .unwrap();
    assert_conflict_naming(
        format!(
            "{:?}",
            locks.mutex("alien/forever").unwrap().try_lock().await
        ),
        "alien/forever",
    );
    // Garbage in the fencing counter.
    redis
        .cmd(&["SET", "{alien/fence}#tumbler:fence", "not a number"])
        .await
        .unwrap();
    assert_conflict_naming(
        format!("{:?}", locks.mutex("alien/fence").unwrap().try_lock().await),
        "{alien/fence}#tumbler:fence",
    );
    // An overflowing counter: refused every time, never a lower token.
    let first = locks.mutex("alien/big").unwrap().lock().await.unwrap();
    let token = first.fencing_token();
    first.release().await.unwrap();
    redis
        .cmd(&["SET", "{alien/big}#tumbler:fence", "99999999999999999999"])
        .await
        .unwrap();
    for _ in 0..2 {
        match locks.mutex("alien/big").unwrap().try_lock().await {
            Err(Error::Conflict { problem, .. }) => {
                assert!(problem.contains("{alien/big}#tumbler:fence"), "{problem}")
            }
            Ok(Some(guard)) => panic!(
                "granted token {} after {token} from an overflowed counter",
                guard.fencing_token()
            ),
            other => panic!("{other:?}"),
        }
    }
    // Garbage in the restart epoch (shared by every name) is one clear error, not a Lua error.
    redis
        .cmd(&["SET", "#tumbler:epoch", "garbage"])
        .await
        .unwrap();
    assert_conflict_naming(
        format!("{:?}", locks.mutex("alien/any").unwrap().try_lock().await),
        "#tumbler:epoch",
    );
}

/// A.7: a restart that forgot the hold is reported as `ServerRestarted`, not as a deletion.
#[tokio::test]
async fn a_restart_that_forgot_the_hold_is_server_restarted() {
    logs();
    let redis = fresh_redis().await;
    let locks = connect(&redis.url()).await;
    let held = locks.mutex("reboot").unwrap().lock().await.unwrap();
    redis.restart().await.unwrap();
    let reason = tokio::time::timeout(PROMPT, held.lost()).await.unwrap();
    assert_eq!(reason, LostReason::ServerRestarted);
}

/// A.7: a cut that outlasts the TTL is reported `Lost` (the holds are gone on the server),
/// then `Reconnected` once the server answers again.
#[tokio::test]
async fn a_cut_longer_than_the_ttl_is_reported_lost() {
    let redis = fresh_redis().await;
    let proxy = FaultProxy::start(redis.addr()).await.unwrap();
    let locks = connect(&format!("redis://{}", proxy.addr())).await;
    let mut events = locks.connection_events();
    let held = locks.mutex("cut/long").unwrap().lock().await.unwrap();
    proxy.set_mode(ProxyMode::Blackhole);
    proxy.cut_all();
    let mut seen = Vec::new();
    tokio::time::timeout(TTL * 3, async {
        while let Some(event) = events.next().await {
            seen.push(event);
            if event == ConnectionEvent::Lost {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no Lost after a cut past the TTL; saw {seen:?}"));
    assert_eq!(seen, [ConnectionEvent::Suspended, ConnectionEvent::Lost]);
    assert!(held.lost_reason().is_some());
    proxy.set_mode(ProxyMode::Pass);
    tokio::time::timeout(PROMPT, async {
        while events.next().await != Some(ConnectionEvent::Reconnected) {}
    })
    .await
    .expect("Reconnected after the cut healed");
    drop(held);
}

/// A.8: Redlock over the same master twice, also under another name for this machine, is
/// refused at connect instead of hanging every lock; so are port 0 and credentials given twice.
#[tokio::test]
async fn bad_configurations_are_refused_at_connect() {
    let refused = |url: String| async move {
        let outcome = tokio::time::timeout(PROMPT, tumbler_redis::connect_url(&url))
            .await
            .unwrap_or_else(|_| panic!("{url}: connect hung"));
        match outcome {
            Err(Error::InvalidArgument { what, problem }) => format!("{what}: {problem}"),
            Err(other) => panic!("{url}: expected InvalidArgument, got {other}"),
            Ok(_) => panic!("{url}: accepted"),
        }
    };
    let redis = fresh_redis().await;
    let others = Redis::start_many(2).await.unwrap();
    let p = redis.port();
    let q = others[0].port();
    for twice in [
        format!("redis+redlock://127.0.0.1:{p},127.0.0.1:{p},127.0.0.1:{q}"),
        format!("redis+redlock://127.0.0.1:{p},localhost:{p},127.0.0.1:{q}"),
        format!("redis+redlock://[::1]:{p},127.0.0.1:{q},LOCALHOST:{p}"),
    ] {
        let problem = refused(twice.clone()).await;
        assert!(problem.contains("same server"), "{twice}: {problem}");
    }
    assert!(refused("redis://127.0.0.1:0".to_owned())
        .await
        .contains("port"));
    assert!(refused(format!(
        "redis+redlock://127.0.0.1:{p},127.0.0.1:0,127.0.0.1:{q}"
    ))
    .await
    .contains("port"));
    assert!(
        refused(format!("redis://u:pw@127.0.0.1:{p}?password=other"))
            .await
            .contains("twice")
    );
}

/// A.10: a fresh server that persists every write (`appendonly yes`, `appendfsync always`)
/// cannot have forgotten locks in a restart: locks are granted at once, with no delay.
#[tokio::test]
async fn a_durable_server_grants_at_once() {
    let redis = Redis::start_with(RedisOptions {
        extra_args: ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let locks = connect_with(&redis.url(), "ttl=30s").await;
    assert_eq!(locks.recovering().await, None);
    let guard = locks.mutex("durable").unwrap().try_lock().await.unwrap();
    assert!(
        guard.is_some(),
        "a durable fresh server delayed the first lock"
    );
    guard.unwrap().release().await.unwrap();
}

/// A.10: where the restart delay applies it says so: `try_lock` is `Recovering` with the time
/// left and the URL parameter, and `recovering()` tells how long is left.
#[tokio::test]
async fn the_restart_delay_says_why_and_how_long() {
    let redis = Redis::start().await.unwrap();
    let locks = connect_with(&redis.url(), "ttl=30s").await;
    let left = locks
        .recovering()
        .await
        .expect("a server started just now is recovering");
    assert!(
        left > Duration::from_secs(20) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    match locks.mutex("fresh").unwrap().try_lock().await {
        Err(Error::Recovering {
            remaining, advice, ..
        }) => {
            assert!(remaining <= left, "{remaining:?} after {left:?}");
            assert!(advice.contains("restart_delay"), "{advice}");
        }
        other => panic!("try_lock during the restart delay: {other:?}"),
    }
    // The parameter turns it off.
    let unprotected = connect_with(&redis.url(), "ttl=30s&restart_delay=0s").await;
    assert_eq!(unprotected.recovering().await, None);
    let guard = unprotected
        .mutex("fresh")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    assert!(guard.is_some());
    guard.unwrap().release().await.unwrap();
}
