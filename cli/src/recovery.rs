//! A store's restart protection, said out loud: while Redis may have lost locks in a recent
//! restart it grants none (see `tumbler_redis`'s docs on restarts), and tumbler says so, with
//! the time left and the URL parameter that sets it, instead of waiting in silence.

use std::time::Duration;

use tumbler_locks::params::format_duration;
use tumbler_locks::SharedBackend;

/// The store grants no lock for a while after a restart.
pub struct Recovery {
    /// How much longer the protection lasts.
    pub remaining: Duration,
    /// The URL parameter that sets it, if tumbler knows the store's name for it.
    pub parameter: Option<&'static str>,
    /// The store's address.
    pub addr: String,
}

impl Recovery {
    /// Asks the backend whether its restart protection holds grants back now.
    pub async fn check(locks: &SharedBackend) -> Option<Recovery> {
        let remaining = locks.recovering().await?;
        Some(Recovery {
            remaining,
            parameter: parameter(locks.capabilities().backend),
            addr: locks.address(),
        })
    }

    /// One line on what holds grants back, how long, and what sets it (the backend's own
    /// warning and `Error::Recovering` say more).
    pub fn describe(&self) -> String {
        let parameter = match self.parameter {
            Some(name) => format!(" (the `{name}` URL parameter sets this delay)"),
            None => String::new(),
        };
        format!(
            "the store at {} may have lost locks in a recent restart and grants none for \
             another {}{parameter}",
            self.addr,
            format_duration(self.remaining)
        )
    }
}

/// The URL parameter that sets a backend's restart protection.
fn parameter(backend: &str) -> Option<&'static str> {
    match backend {
        "redis" => Some("restart_delay"),
        _ => None,
    }
}
