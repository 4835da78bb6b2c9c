//! Runs cases: one at a time as `#[tokio::test]`s (see [`crate::suite!`]) or all of them for a
//! report (the mutant table).

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::Harness;
use crate::util::{CaseResult, Verdict};

/// A case's future.
pub type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// One test of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// The test's name (also the `#[test]` function's name).
    pub name: &'static str,
    /// Which of the ten promises (`docs/promises.md`) it checks (1-10).
    pub promise: u8,
    /// Runs it.
    pub run: fn(Arc<dyn Harness>) -> CaseFuture,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Case({}, promise {})", self.name, self.promise)
    }
}

/// How a run of one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// Not applicable to this backend, with the reason.
    Skipped(String),
    /// A check failed (or the case panicked or timed out), with the message.
    Failed(String),
}

/// The longest a single case may run before it counts as failed (a hang is a failure).
pub const CASE_LIMIT: Duration = Duration::from_secs(240);

/// Runs one case in its own task, turning panics and hangs into failures.
pub async fn run_case(harness: Arc<dyn Harness>, case: &Case) -> Outcome {
    run_case_within(harness, case, CASE_LIMIT).await
}

/// Like [`run_case`] with a custom time limit.
pub async fn run_case_within(harness: Arc<dyn Harness>, case: &Case, limit: Duration) -> Outcome {
    let task = tokio::spawn((case.run)(harness));
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Err(_) => {
            abort.abort();
            Outcome::Failed(format!("did not finish within {limit:?} (hang)"))
        }
        Ok(Err(join)) if join.is_panic() => {
            let payload = join.into_panic();
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Outcome::Failed(format!("panicked: {text}"))
        }
        Ok(Err(join)) => Outcome::Failed(format!("task failed: {join}")),
        Ok(Ok(Ok(Verdict::Passed))) => Outcome::Passed,
        Ok(Ok(Ok(Verdict::Skipped(why)))) => Outcome::Skipped(why),
        Ok(Ok(Err(message))) => Outcome::Failed(message),
    }
}

/// Writes a line to the real stderr, past the test harness's output capture, so that skips
/// are visible in `cargo test` output.
pub fn report_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Runs the case called `name` as one `#[test]`: panics on failure, reports a skip loudly.
pub async fn run_named(harness: Arc<dyn Harness>, name: &str) {
    let Some(case) = crate::cases::all().into_iter().find(|c| c.name == name) else {
        panic!("no conformance case called {name}");
    };
    let backend = harness.name();
    match run_case(harness, &case).await {
        Outcome::Passed => {}
        Outcome::Skipped(why) => report_line(&format!("SKIPPED {backend}::{name}: {why}")),
        Outcome::Failed(message) => panic!(
            "{backend}::{name} (promise {}) failed: {message}",
            case.promise
        ),
    }
}

/// Runs every case (several at once) and returns each outcome, in suite order.
pub async fn run_all(harness: Arc<dyn Harness>, parallel: usize) -> Vec<(Case, Outcome)> {
    let cases = crate::cases::all();
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for case in cases {
        let harness = harness.clone();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let outcome = run_case(harness, &case).await;
            (case, outcome)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        match task.await {
            Ok(result) => results.push(result),
            Err(e) => report_line(&format!("runner task failed: {e}")),
        }
    }
    results
}

/// Instantiates every conformance case as a `#[tokio::test]` for one backend.
///
/// `$harness` is an `async fn() -> Arc<dyn Harness>` called once per test.
///
/// ```ignore
/// async fn harness() -> std::sync::Arc<dyn conformance::Harness> { /* ... */ }
/// conformance::suite!(harness);
/// ```
#[macro_export]
macro_rules! suite {
    ($harness:path) => {
        $crate::suite_cases!(
            $harness;
            mutual_exclusion_mutex,
            mutual_exclusion_semaphore1,
            mutual_exclusion_rwlock_write,
            try_lock_sees_busy_mutex,
            try_lock_sees_busy_semaphore1,
            try_lock_sees_busy_rwlock_write,
            mutual_exclusion_election,
            try_lock_sees_busy_election,
            fencing_tokens_increase_election,
            fencing_tokens_increase_mutex,
            fencing_tokens_increase_semaphore1,
            fencing_tokens_increase_rwlock_write,
            fencing_token_after_session_expiry,
            semaphore_never_exceeds_limit,
            semaphore_admits_exactly_limit,
            semaphore_acquire_is_all_or_nothing,
            rwlock_readers_share,
            rwlock_writer_excludes,
            rwlock_mixed_history,
            rwlock_downgrade_keeps_hold,
            rwlock_upgrade_refused,
            rwlock_writer_not_starved,
            crashed_holder_frees_lock,
            paused_holder_loses_lock,
            lost_fires_on_session_expiry,
            lost_fires_on_connection_cut,
            hold_survives_renewal_periods,
            revocation_reaches_holder,
            cancelled_waiter_leaves_no_entry,
            cancel_at_any_point_leaks_nothing,
            stale_release_keeps_successor,
            release_is_idempotent,
            release_during_connection_loss,
            restart_loses_no_safety,
            bad_names_rejected,
            bad_permits_rejected,
            bad_ttl_rejected,
            unreachable_store_is_typed_error,
            state_reports_holders,
            fifo_order_when_promised,
            multilock_all_or_nothing,
            reentrant_excludes_other_clients,
            connection_events_report_cut,
            validity_starts_at_grant,
            killed_waiter_stops_blocking,
            timed_out_waiter_leaves_nothing,
            unreachable_is_error_not_busy,
            stalled_store_is_error_within_deadline,
            one_name_one_kind,
            one_kind_after_a_waiter_gave_up,
            nested_names_independent,
            semaphore_limit_mismatch_conflict,
            foreign_data_is_conflict,
            drop_outside_runtime_does_not_panic,
            drop_in_other_runtime_releases,
            shutdown_releases_holds_and_waiters,
            session_expiry_is_session_expired,
            connection_events_follow_sequence,
            cut_past_ttl_reports_lost,
            bad_config_refused,
            names_a_store_cannot_hold,
            leader_reports_value_and_term,
            observe_delivers_changes_in_order,
            lost_leader_replaced_after_it_knows,
            cancelled_campaign_leaks_nothing,
            bad_values_refused,
            crashed_leader_replaced_within_bound,
            election_name_is_not_a_lock,
            observer_of_unreachable_store_errs,
        );
    };
}

/// Implementation detail of [`suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! suite_cases {
    ($harness:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::runner::run_named($harness().await, stringify!($case)).await;
            }
        )*

        #[test]
        fn suite_lists_every_case() {
            let listed = [$(stringify!($case)),*];
            $crate::runner::check_listing(&listed);
        }
    };
}

/// Panics unless `listed` names exactly the suite's cases.
pub fn check_listing(listed: &[&str]) {
    let all: Vec<&str> = crate::cases::all().iter().map(|c| c.name).collect();
    for name in &all {
        assert!(listed.contains(name), "suite! macro misses case {name}");
    }
    for name in listed {
        assert!(all.contains(name), "suite! macro lists unknown case {name}");
    }
}
