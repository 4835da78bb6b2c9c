//! Every case of the suite, grouped by promise.

mod cancel;
mod exclusion;
mod extras;
mod input;
mod liveness;
mod release;
mod rwlock;
pub(crate) mod semaphore;

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
    ]
}
