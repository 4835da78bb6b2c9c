//! Leader election (DESIGN "Leader election"): at most one leader per term at any instant, terms
//! strictly increase, a lost leader hears of it before another is elected, followers see every
//! leader they can in order, and a campaign that gives up leaves nothing behind.
//!
//! The exclusion and fencing cases run on elections too, through [`crate::util::Exclusive`]'s
//! `Leadership` adapter; the cases here check what only an election has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_core::{Error, LeaderInfo, Observer, SharedBackend};

use crate::util::{answered, needs_strict_fencing, unique_name, CaseResult, Context, Verdict};
use crate::util::{wait_until_queued, PROMPT};
use crate::{ensure, hook, Harness, TestClient};

/// Skips the case on a backend without elections.
fn needs_election(locks: &SharedBackend) -> Option<Verdict> {
    let caps = locks.capabilities();
    (!caps.election).then(|| Verdict::Skipped(format!("{} has no elections", caps.backend)))
}

/// The leader as `client` reads it, retried past transient errors (a cluster's election).
async fn leader_of(
    client: &TestClient,
    name: &tumbler_core::LockName,
) -> Result<Option<LeaderInfo>, String> {
    let election = client.locks.election(name).ctx("election")?;
    let answer = answered(|| async { Ok(Some(election.leader().await?)) })
        .await
        .ctx("leader()")?;
    Ok(answer.flatten())
}

/// Campaigns on `client` until elected; a failure names `who` ("A", "B").
async fn campaign(
    client: &TestClient,
    name: &tumbler_core::LockName,
    value: &str,
    who: &str,
) -> Result<tumbler_core::Leadership, String> {
    client
        .locks
        .election(name)
        .ctx("election")?
        .campaign(value)
        .await
        .ctx(&format!("{who}'s campaign"))
}

/// Reads from `observer` until it reports a leadership for which `wanted` holds, checking on
/// the way that every report differs from the one before and that terms never go backwards.
async fn observe_until(
    observer: &mut Observer,
    seen: &mut Vec<Option<LeaderInfo>>,
    what: &str,
    wanted: impl Fn(&Option<LeaderInfo>) -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        if seen.last().is_some_and(&wanted) {
            return Ok(());
        }
        let next = tokio::time::timeout_at(deadline, observer.next())
            .await
            .map_err(|_| {
                format!(
                    "the observer did not report {what} within {PROMPT:?}; it reported {seen:?}"
                )
            })?;
        let next = match next {
            Ok(next) => next,
            Err(e) if e.is_transient() => continue,
            Err(e) => return Err(format!("observe: {e}")),
        };
        if let Some(last) = seen.last() {
            ensure!(
                *last != next || seen.is_empty(),
                "the observer reported {next:?} twice in a row"
            );
        }
        let last_term = seen.iter().flatten().map(|l| l.term).max();
        if let (Some(last_term), Some(now)) = (last_term, next.as_ref()) {
            ensure!(
                now.term >= last_term,
                "the observer went back from term {last_term} to {now:?}"
            );
        }
        seen.push(next);
    }
}

/// The leader advertises its value and term; proclaim changes the value under the same term;
/// after resigning nobody leads, and the next leader's term is higher.
pub async fn leader_reports_value_and_term(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    if let Some(skip) = needs_election(&a.locks) {
        return Ok(skip);
    }
    let name = unique_name("election-value");
    ensure!(
        leader_of(&b, &name).await?.is_none(),
        "a new election already has a leader"
    );
    let election = a.locks.election(&name).ctx("election")?;
    let mut leadership = election.campaign("candidate-a").await.ctx("A's campaign")?;
    let term = leadership.term();
    let seen = leader_of(&b, &name)
        .await?
        .ok_or("B sees no leader while A leads")?;
    ensure!(
        seen.value == b"candidate-a" && seen.term == term,
        "B sees {seen:?}, not A's value \"candidate-a\" with term {term}"
    );
    leadership
        .proclaim("candidate-a/v2")
        .await
        .ctx("A's proclaim")?;
    ensure!(
        leadership.value() == b"candidate-a/v2",
        "the guard kept the old value"
    );
    let seen = leader_of(&b, &name)
        .await?
        .ok_or("B sees no leader after A proclaimed")?;
    ensure!(
        seen.value == b"candidate-a/v2" && seen.term == term,
        "after A's proclaim B sees {seen:?}, not \"candidate-a/v2\" with the same term {term}"
    );
    let b_election = b.locks.election(&name).ctx("election")?;
    ensure!(
        b_election
            .try_campaign("candidate-b")
            .await
            .ctx("B's try_campaign")?
            .is_none(),
        "B was elected while A led"
    );
    leadership.resign().await.ctx("A's resign")?;
    ensure!(
        leader_of(&b, &name).await?.is_none(),
        "somebody still leads after the only leader resigned"
    );
    let next = b_election
        .try_campaign("candidate-b")
        .await
        .ctx("B's try_campaign")?
        .ok_or("B was not elected in an election nobody led")?;
    if needs_strict_fencing(&b.locks.capabilities()).is_none() {
        ensure!(
            next.term() > term,
            "B's term {} is not above A's {term}",
            next.term()
        );
    }
    next.resign().await.ctx("B's resign")?;
    Ok(Verdict::Passed)
}

/// A follower's observer reports the leaders in order: A, A's new value, B after A resigned,
/// nobody after B resigned; every report differs from the last and terms never go backwards.
pub async fn observe_delivers_changes_in_order(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    if let Some(skip) = needs_election(&a.locks) {
        return Ok(skip);
    }
    let name = unique_name("election-observe");
    let mut observer = c.locks.election(&name).ctx("election")?.observe();
    let mut seen = Vec::new();
    observe_until(&mut observer, &mut seen, "nobody leading", Option::is_none).await?;

    let mut first = campaign(&a, &name, "a", "A").await?;
    let a_term = first.term();
    let is = |value: &'static [u8], term: u64| {
        move |l: &Option<LeaderInfo>| {
            l.as_ref()
                .is_some_and(|l| l.value == value && l.term == term)
        }
    };
    observe_until(&mut observer, &mut seen, "A leading", is(b"a", a_term)).await?;

    let b_election = b.locks.election(&name).ctx("election")?;
    let b_campaign = tokio::spawn(async move { b_election.campaign("b").await });
    wait_until_queued(&c.locks, &name, 1).await?;
    first.proclaim("a2").await.ctx("A's proclaim")?;
    observe_until(&mut observer, &mut seen, "A's new value", is(b"a2", a_term)).await?;

    first.resign().await.ctx("A's resign")?;
    let second = tokio::time::timeout(PROMPT, b_campaign)
        .await
        .map_err(|_| format!("B was not elected within {PROMPT:?} of A resigning"))?
        .ctx("B's task")?
        .ctx("B's campaign")?;
    let b_term = second.term();
    observe_until(&mut observer, &mut seen, "B leading", is(b"b", b_term)).await?;
    second.resign().await.ctx("B's resign")?;
    observe_until(
        &mut observer,
        &mut seen,
        "nobody leading at the end",
        Option::is_none,
    )
    .await?;

    // Nothing reported that never was: every leader seen is A (either value) or B.
    for report in seen.iter().flatten() {
        let known = (report.term == a_term && (report.value == b"a" || report.value == b"a2"))
            || (report.term == b_term && report.value == b"b");
        ensure!(known, "the observer reported {report:?}, which never led");
    }
    if needs_strict_fencing(&c.locks.capabilities()).is_none() {
        ensure!(
            b_term > a_term,
            "B's term {b_term} is not above A's {a_term}"
        );
    }
    Ok(Verdict::Passed)
}

/// The store ends the leader's session: the leader's `lost()` has fired by the time the waiting
/// candidate is elected, within the crash bound, with a higher term; the old leader's proclaim
/// is refused.
pub async fn lost_leader_replaced_after_it_knows(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    if let Some(skip) = needs_election(&a.locks) {
        return Ok(skip);
    }
    let name = unique_name("election-lost");
    let mut leader = campaign(&a, &name, "a", "A").await?;
    let b_election = b.locks.election(&name).ctx("election")?;
    let bound = h.crash_release_bound();
    let waiting = tokio::spawn(async move { b_election.campaign_timeout("b", bound).await });
    wait_until_queued(&b.locks, &name, 1).await?;
    hook!(h.expire_session(&a).await);
    let started = Instant::now();
    let next = waiting
        .await
        .ctx("B's task")?
        .ctx("B's campaign")?
        .ok_or_else(|| format!("B was not elected within {bound:?} of A's session ending"))?;
    ensure!(
        leader.lost_reason().is_some(),
        "B was elected but A's lost() had not fired"
    );
    tracing::info!(after = ?started.elapsed(), "the lost leader was replaced");
    if needs_strict_fencing(&b.locks.capabilities()).is_none() {
        ensure!(
            next.term() > leader.term(),
            "B's term {} is not above A's {}",
            next.term(),
            leader.term()
        );
    }
    match leader.proclaim("a-again").await {
        Err(e) if !e.is_transient() => {}
        Err(e) => {
            return Err(format!(
                "A's proclaim after losing failed as transient: {e}"
            ))
        }
        Ok(()) => return Err("A's proclaim after losing its leadership succeeded".into()),
    }
    let seen = leader_of(&b, &name)
        .await?
        .ok_or("nobody leads while B does")?;
    ensure!(
        seen.value == b"b" && seen.term == next.term(),
        "B leads but leader() says {seen:?}"
    );
    next.resign().await.ctx("B's resign")?;
    drop(leader);
    Ok(Verdict::Passed)
}

/// A campaign that gives up (timed out, or dropped at many points) leaves nothing behind: the
/// next candidate is elected as soon as the leader resigns, and the election ends up empty.
pub async fn cancelled_campaign_leaks_nothing(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b, c) = (h.client().await?, h.client().await?, h.client().await?);
    if let Some(skip) = needs_election(&a.locks) {
        return Ok(skip);
    }
    let name = unique_name("election-cancel");
    let leader = campaign(&a, &name, "a", "A").await?;
    let b_election = b.locks.election(&name).ctx("election")?;
    ensure!(
        b_election
            .campaign_timeout("b", Duration::from_millis(300))
            .await
            .ctx("B's campaign_timeout")?
            .is_none(),
        "B was elected while A led"
    );
    let c_election = c.locks.election(&name).ctx("election")?;
    let c_campaign = tokio::spawn(async move { c_election.campaign("c").await });
    wait_until_queued(&a.locks, &name, 1).await?;
    leader.resign().await.ctx("A's resign")?;
    let next = tokio::time::timeout(PROMPT, c_campaign)
        .await
        .map_err(|_| {
            format!("C was not elected within {PROMPT:?}: B's timed-out campaign still blocks")
        })?
        .ctx("C's task")?
        .ctx("C's campaign")?;
    ensure!(
        leader_of(&a, &name).await?.is_some_and(|l| l.value == b"c"),
        "C leads but leader() does not say so"
    );
    next.resign().await.ctx("C's resign")?;
    // Campaigns on a free election dropped at many points.
    for step in 0..20u64 {
        if let Ok(elected) =
            tokio::time::timeout(Duration::from_micros(200 * step), b_election.campaign("b")).await
        {
            elected
                .ctx("B's campaign")?
                .resign()
                .await
                .ctx("B's resign")?;
        }
    }
    let last = a
        .locks
        .election(&name)
        .ctx("election")?
        .campaign_timeout("a", PROMPT)
        .await
        .ctx("A's campaign")?
        .ok_or("a cancelled campaign left a leadership or a candidate behind")?;
    ensure!(
        leader_of(&c, &name).await?.is_some_and(|l| l.value == b"a"),
        "A leads but leader() names someone else"
    );
    last.resign().await.ctx("A's resign")?;
    ensure!(
        leader_of(&c, &name).await?.is_none(),
        "somebody leads after every candidate resigned"
    );
    Ok(Verdict::Passed)
}

/// Empty and oversized values are refused with `InvalidArgument` before anything is written,
/// for campaigns and for proclaims.
pub async fn bad_values_refused(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    if let Some(skip) = needs_election(&a.locks) {
        return Ok(skip);
    }
    let name = unique_name("election-values");
    let election = a.locks.election(&name).ctx("election")?;
    let too_long = vec![b'x'; a.locks.capabilities().max_value_len + 1];
    for (what, value) in [
        ("an empty value", Vec::new()),
        ("an oversized value", too_long.clone()),
    ] {
        match election.try_campaign(value).await {
            Err(Error::InvalidArgument { .. }) => {}
            other => {
                return Err(format!(
                    "a campaign with {what} gave {other:?}, not InvalidArgument"
                ))
            }
        }
    }
    ensure!(
        leader_of(&a, &name).await?.is_none(),
        "a refused campaign left a leader behind"
    );
    let mut leadership = election.campaign("a").await.ctx("A's campaign")?;
    for (what, value) in [
        ("an empty value", Vec::new()),
        ("an oversized value", too_long),
    ] {
        match leadership.proclaim(value).await {
            Err(Error::InvalidArgument { .. }) => {}
            other => {
                return Err(format!(
                    "a proclaim of {what} gave {other:?}, not InvalidArgument"
                ))
            }
        }
    }
    ensure!(
        leader_of(&a, &name).await?.is_some_and(|l| l.value == b"a"),
        "a refused proclaim changed the advertised value"
    );
    // The largest value the store takes is taken.
    let largest = vec![b'y'; a.locks.capabilities().max_value_len];
    leadership
        .proclaim(largest.clone())
        .await
        .ctx("proclaim of the largest value")?;
    ensure!(
        leader_of(&a, &name)
            .await?
            .is_some_and(|l| l.value == largest),
        "the largest allowed value was not advertised whole"
    );
    leadership.resign().await.ctx("A's resign")?;
    Ok(Verdict::Passed)
}

/// An election and a mutex of one name are one name, two kinds: `Conflict`, both ways.
pub async fn election_name_is_not_a_lock(h: Arc<dyn Harness>) -> CaseResult {
    let (a, b) = (h.client().await?, h.client().await?);
    if let Some(skip) = needs_election(&a.locks) {
        return Ok(skip);
    }
    let name = unique_name("election-kind");
    let leadership = campaign(&a, &name, "a", "A").await?;
    match b.locks.mutex(&name).ctx("mutex")?.try_lock().await {
        Err(Error::Conflict { .. }) => {}
        other => {
            return Err(format!(
                "a mutex on a name in use as an election gave {:?}, not Conflict",
                other.map(|g| g.is_some())
            ))
        }
    }
    leadership.resign().await.ctx("A's resign")?;
    let name = unique_name("lock-kind");
    let guard = a
        .locks
        .mutex(&name)
        .ctx("mutex")?
        .lock()
        .await
        .ctx("A's lock")?;
    match b
        .locks
        .election(&name)
        .ctx("election")?
        .try_campaign("b")
        .await
    {
        Err(Error::Conflict { .. }) => {}
        other => {
            return Err(format!(
                "a campaign on a name in use as a mutex gave {:?}, not Conflict",
                other.map(|g| g.is_some())
            ))
        }
    }
    guard.release().await.ctx("A's release")?;
    Ok(Verdict::Passed)
}

/// A follower whose connection is cut gets a connection or timeout error from its observer
/// within the request timeout (and a little), never a silent wait.
pub async fn observer_of_unreachable_store_errs(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    if let Some(skip) = needs_election(&a.locks) {
        return Ok(skip);
    }
    let name = unique_name("election-cut");
    let mut observer = a.locks.election(&name).ctx("election")?.observe();
    let first = observer.next().await.ctx("first observe")?;
    ensure!(first.is_none(), "a new election has a leader: {first:?}");
    hook!(h.cut_connection(&a).await);
    let allowed = h.request_timeout() * 2 + Duration::from_secs(3);
    let started = Instant::now();
    let outcome = tokio::time::timeout(allowed, observer.next()).await;
    hook!(h.heal_connection(&a).await);
    match outcome {
        Err(_) => Err(format!(
            "the observer of a cut-off client had not returned after {allowed:?}"
        )),
        Ok(Err(e)) if e.is_transient() => {
            tracing::info!(after = ?started.elapsed(), %e, "the observer reported the cut");
            Ok(Verdict::Passed)
        }
        Ok(other) => Err(format!(
            "the observer of a cut-off client gave {other:?}, not a connection or timeout error"
        )),
    }
}

/// A leader process killed without cleanup is replaced within the crash bound by a waiting
/// candidate, with a higher term; `leader()` names the new leader.
pub async fn crashed_leader_replaced_within_bound(h: Arc<dyn Harness>) -> CaseResult {
    let b = h.client().await?;
    if let Some(skip) = needs_election(&b.locks) {
        return Ok(skip);
    }
    let name = unique_name("election-crash");
    let mut leader = hook!(h.spawn_leader(&name).await);
    let old_term = leader.token();
    let seen = leader_of(&b, &name)
        .await?
        .ok_or("nobody leads while the leader process lives")?;
    ensure!(
        seen.term == old_term,
        "leader() says term {} while the leader process has term {old_term}",
        seen.term
    );
    let election = b.locks.election(&name).ctx("election")?;
    let bound = h.crash_release_bound();
    let waiting = tokio::spawn(async move { election.campaign_timeout("b", bound).await });
    wait_until_queued(&b.locks, &name, 1).await?;
    hook!(leader.kill().await);
    let killed_at = Instant::now();
    let next = waiting
        .await
        .ctx("B's task")?
        .ctx("B's campaign")?
        .ok_or_else(|| format!("B was not elected within {bound:?} of the leader being killed"))?;
    tracing::info!(after = ?killed_at.elapsed(), "the crashed leader was replaced");
    if needs_strict_fencing(&b.locks.capabilities()).is_none() {
        ensure!(
            next.term() > old_term,
            "B's term {} is not above the crashed leader's {old_term}",
            next.term()
        );
    }
    let seen = leader_of(&b, &name)
        .await?
        .ok_or("nobody leads while B does")?;
    ensure!(
        seen.value == b"b" && seen.term == next.term(),
        "B leads but leader() says {seen:?}"
    );
    next.resign().await.ctx("B's resign")?;
    Ok(Verdict::Passed)
}
