//! The one error type of the test kit: every failure says what went wrong and what to do about it.

use std::time::Duration;

/// What a test kit call can fail with.
///
/// Each variant's message names the thing that failed and, where there is one, the fix
/// (install the servers, read the server log tail shown, free a port).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A server binary or jar is missing from this machine.
    #[error("`{binary}` is not installed (looked for {looked_at}); {hint}")]
    NotInstalled {
        /// The program or file that is missing, e.g. `redis-server`.
        binary: String,
        /// Where it was looked for.
        looked_at: String,
        /// How to get it: always mentions `scripts/setup`.
        hint: &'static str,
    },

    /// A server did not become ready before its deadline.
    #[error("{what} was not ready after {after:?}; last lines of its log:\n{log_tail}")]
    StartTimeout {
        /// Which server, with its port(s) and folder.
        what: String,
        /// How long the kit waited.
        after: Duration,
        /// The end of the server's log file.
        log_tail: String,
    },

    /// A server process exited while the kit was waiting for it to become ready.
    #[error("{what} exited ({status}) before it was ready; last lines of its log:\n{log_tail}")]
    Exited {
        /// Which server, with its port(s) and folder.
        what: String,
        /// The exit status as the OS reported it.
        status: String,
        /// The end of the server's log file.
        log_tail: String,
    },

    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What the kit was doing, e.g. "spawning redis-server".
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A server answered something the kit did not expect.
    #[error("{what}: {detail}")]
    Protocol {
        /// Which request to which server.
        what: String,
        /// What came back, or why it could not be read.
        detail: String,
    },

    /// No leader could be found in an ensemble or cluster before the deadline.
    #[error("{what}: no leader after {after:?} ({detail})")]
    NoLeader {
        /// Which ensemble or cluster.
        what: String,
        /// How long the kit looked.
        after: Duration,
        /// What each node said last.
        detail: String,
    },

    /// An operation needs a running server, but the node was killed (call `restart`).
    #[error("{what} is not running (it was killed; call restart first)")]
    NotRunning {
        /// Which server.
        what: String,
    },

    /// A caller passed an argument the kit cannot use (e.g. an ensemble of 0 nodes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// `Result` with the test kit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with a description of what the kit was doing.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// A protocol error: `what` request got `detail` back.
    pub(crate) fn protocol(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Protocol {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// True when the failure looks like the server could not bind its port, which a retry on
    /// fresh ports fixes (another process took the port between pick and bind).
    pub(crate) fn is_address_in_use(&self) -> bool {
        match self {
            Error::StartTimeout { log_tail, .. } | Error::Exited { log_tail, .. } => {
                let l = log_tail.to_ascii_lowercase();
                l.contains("address already in use") || l.contains("bindexception")
            }
            _ => false,
        }
    }
}
