//! Every case of the suite, grouped by promise.

mod cancel;
mod config;
mod election;
mod events;
mod exclusion;
mod extras;
mod foreign;
mod input;
mod kinds;
mod lifetime;
mod liveness;
mod release;
mod rwlock;
pub(crate) mod semaphore;
mod unreachable;
mod validity;
mod waiters;

use crate::runner::Case;
use crate::util::Exclusive;

macro_rules! case {
    ($name:literal, $promise:literal, $run:expr) => {
        Case {
            name: $name,
            promise: $promise,
            run: |h| Box::pin($run(h)),
        }
    };
}

/// Every case, in suite order.
pub fn all() -> Vec<Case> {
    vec![
        case!(
            "mutual_exclusion_mutex",
            1,
            |h| exclusion::mutual_exclusion(h, Exclusive::Mutex)
        ),
        case!("mutual_exclusion_semaphore1", 1, |h| {
            exclusion::mutual_exclusion(h, Exclusive::Semaphore1)
        }),
        case!("mutual_exclusion_rwlock_write", 1, |h| {
            exclusion::mutual_exclusion(h, Exclusive::RwWrite)
        }),
        case!("try_lock_sees_busy_mutex", 1, |h| {
            exclusion::try_lock_sees_busy(h, Exclusive::Mutex)
        }),
        case!("try_lock_sees_busy_semaphore1", 1, |h| {
            exclusion::try_lock_sees_busy(h, Exclusive::Semaphore1)
        }),
        case!("try_lock_sees_busy_rwlock_write", 1, |h| {
            exclusion::try_lock_sees_busy(h, Exclusive::RwWrite)
        }),
        case!("mutual_exclusion_election", 1, |h| {
            exclusion::mutual_exclusion(h, Exclusive::Leadership)
        }),
        case!("try_lock_sees_busy_election", 1, |h| {
            exclusion::try_lock_sees_busy(h, Exclusive::Leadership)
        }),
        case!("fencing_tokens_increase_election", 2, |h| {
            exclusion::fencing_tokens_increase(h, Exclusive::Leadership)
        }),
        case!("fencing_tokens_increase_mutex", 2, |h| {
            exclusion::fencing_tokens_increase(h, Exclusive::Mutex)
        }),
        case!("fencing_tokens_increase_semaphore1", 2, |h| {
            exclusion::fencing_tokens_increase(h, Exclusive::Semaphore1)
        }),
        case!("fencing_tokens_increase_rwlock_write", 2, |h| {
            exclusion::fencing_tokens_increase(h, Exclusive::RwWrite)
        }),
        case!(
            "fencing_token_after_session_expiry",
            2,
            exclusion::fencing_token_after_session_expiry
        ),
        case!(
            "semaphore_never_exceeds_limit",
            3,
            semaphore::never_exceeds_limit
        ),
        case!(
            "semaphore_admits_exactly_limit",
            3,
            semaphore::admits_exactly_limit
        ),
        case!(
            "semaphore_acquire_is_all_or_nothing",
            3,
            semaphore::acquire_is_all_or_nothing
        ),
        case!("rwlock_readers_share", 4, rwlock::readers_share),
        case!("rwlock_writer_excludes", 4, rwlock::writer_excludes),
        case!("rwlock_mixed_history", 4, rwlock::mixed_history),
        case!(
            "rwlock_downgrade_keeps_hold",
            4,
            rwlock::downgrade_keeps_hold
        ),
        case!("rwlock_upgrade_refused", 4, rwlock::upgrade_refused),
        case!("rwlock_writer_not_starved", 4, rwlock::writer_not_starved),
        case!(
            "crashed_holder_frees_lock",
            5,
            liveness::crashed_holder_frees_lock
        ),
        case!(
            "paused_holder_loses_lock",
            6,
            liveness::paused_holder_loses_lock
        ),
        case!(
            "lost_fires_on_session_expiry",
            6,
            liveness::lost_fires_on_session_expiry
        ),
        case!(
            "lost_fires_on_connection_cut",
            6,
            liveness::lost_fires_on_connection_cut
        ),
        case!(
            "hold_survives_renewal_periods",
            6,
            liveness::hold_survives_renewal_periods
        ),
        case!(
            "revocation_reaches_holder",
            6,
            liveness::revocation_reaches_holder
        ),
        case!(
            "cancelled_waiter_leaves_no_entry",
            7,
            cancel::cancelled_waiter_leaves_no_entry
        ),
        case!(
            "cancel_at_any_point_leaks_nothing",
            7,
            cancel::cancel_at_any_point_leaks_nothing
        ),
        case!(
            "stale_release_keeps_successor",
            8,
            release::stale_release_keeps_successor
        ),
        case!("release_is_idempotent", 8, release::release_is_idempotent),
        case!(
            "release_during_connection_loss",
            8,
            release::release_during_connection_loss
        ),
        case!(
            "restart_loses_no_safety",
            8,
            release::restart_loses_no_safety
        ),
        case!("bad_names_rejected", 9, input::bad_names_rejected),
        case!("bad_permits_rejected", 9, input::bad_permits_rejected),
        case!("bad_ttl_rejected", 9, input::bad_ttl_rejected),
        case!(
            "unreachable_store_is_typed_error",
            9,
            input::unreachable_store_is_typed_error
        ),
        case!("state_reports_holders", 1, extras::state_reports_holders),
        case!(
            "fifo_order_when_promised",
            1,
            extras::fifo_order_when_promised
        ),
        case!(
            "multilock_all_or_nothing",
            1,
            extras::multilock_all_or_nothing
        ),
        case!(
            "reentrant_excludes_other_clients",
            1,
            extras::reentrant_excludes_other_clients
        ),
        case!(
            "connection_events_report_cut",
            6,
            extras::connection_events_report_cut
        ),
        // Issue 12 A.1: validity starts at the grant.
        case!(
            "validity_starts_at_grant",
            6,
            validity::validity_starts_at_grant
        ),
        // A.2: a waiter that stops stops blocking.
        case!(
            "killed_waiter_stops_blocking",
            7,
            waiters::killed_waiter_stops_blocking
        ),
        case!(
            "timed_out_waiter_leaves_nothing",
            7,
            waiters::timed_out_waiter_leaves_nothing
        ),
        // A.3: unreachable is an error, never busy.
        case!(
            "unreachable_is_error_not_busy",
            9,
            unreachable::unreachable_is_error_not_busy
        ),
        case!(
            "stalled_store_is_error_within_deadline",
            9,
            unreachable::stalled_store_is_error_within_deadline
        ),
        // A.4: one name, one kind.
        case!("one_name_one_kind", 1, kinds::one_name_one_kind),
        case!(
            "one_kind_after_a_waiter_gave_up",
            1,
            kinds::one_kind_after_a_waiter_gave_up
        ),
        case!(
            "nested_names_independent",
            1,
            kinds::nested_names_independent
        ),
        case!(
            "semaphore_limit_mismatch_conflict",
            3,
            kinds::semaphore_limit_mismatch_conflict
        ),
        // A.5: foreign or damaged data is a typed error.
        case!(
            "foreign_data_is_conflict",
            2,
            foreign::foreign_data_is_conflict
        ),
        // A.6: guards outlive nothing silently.
        case!(
            "drop_outside_runtime_does_not_panic",
            8,
            lifetime::drop_outside_runtime_does_not_panic
        ),
        case!(
            "drop_in_other_runtime_releases",
            8,
            lifetime::drop_in_other_runtime_releases
        ),
        case!(
            "shutdown_releases_holds_and_waiters",
            8,
            lifetime::shutdown_releases_holds_and_waiters
        ),
        // A.7: the same event has the same name everywhere.
        case!(
            "session_expiry_is_session_expired",
            6,
            events::session_expiry_is_session_expired
        ),
        case!(
            "connection_events_follow_sequence",
            6,
            events::connection_events_follow_sequence
        ),
        case!(
            "cut_past_ttl_reports_lost",
            6,
            events::cut_past_ttl_reports_lost
        ),
        // A.8 and A.11: bad configuration and names are refused up front.
        case!("bad_config_refused", 9, config::bad_config_refused),
        case!(
            "names_a_store_cannot_hold",
            9,
            config::names_a_store_cannot_hold
        ),
        // Leader election on every store.
        case!(
            "leader_reports_value_and_term",
            1,
            election::leader_reports_value_and_term
        ),
        case!(
            "observe_delivers_changes_in_order",
            1,
            election::observe_delivers_changes_in_order
        ),
        case!(
            "lost_leader_replaced_after_it_knows",
            6,
            election::lost_leader_replaced_after_it_knows
        ),
        case!(
            "cancelled_campaign_leaks_nothing",
            7,
            election::cancelled_campaign_leaks_nothing
        ),
        case!("bad_values_refused", 9, election::bad_values_refused),
        case!(
            "crashed_leader_replaced_within_bound",
            5,
            election::crashed_leader_replaced_within_bound
        ),
        case!(
            "election_name_is_not_a_lock",
            1,
            election::election_name_is_not_a_lock
        ),
        case!(
            "observer_of_unreachable_store_errs",
            9,
            election::observer_of_unreachable_store_errs
        ),
    ]
}
