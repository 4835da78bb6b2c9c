//! The one error type of every tumbler operation.

use std::time::Duration;

use crate::name::{LockName, NameRule};

/// A boxed error from a store's client library, kept as the source of [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for `std::result::Result<T, tumbler_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, phrased so that the message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A lock name broke one of the [`LockName`] rules.
    #[error("invalid lock name {}: {rule}", crate::url::shorten_quoted(.name))]
    InvalidName {
        /// The rejected input.
        name: String,
        /// The rule it broke.
        rule: NameRule,
    },

    /// An argument was out of range or inconsistent (zero permits, a zero TTL, a bad URL, ...).
    #[error("invalid {what}: {problem}")]
    InvalidArgument {
        /// Which argument, e.g. `"permits"` or `"ttl"`.
        what: String,
        /// What is wrong with it and what to use instead.
        problem: String,
    },

    /// An operation other than a lock wait did not finish in time.
    #[error("{operation} did not finish within {}; check that the store at {addr} is reachable and healthy", crate::params::format_duration(*.after))]
    Timeout {
        /// The operation, e.g. `"connect"` or `"release of jobs/nightly"`.
        operation: String,
        /// The store's address.
        addr: String,
        /// How long we waited.
        after: Duration,
    },

    /// The store could not be reached or the connection broke.
    #[error("cannot reach the {backend} store at {addr}: {message}")]
    Connection {
        /// Which backend, e.g. `"redis"`.
        backend: &'static str,
        /// The address we tried.
        addr: String,
        /// What the client library reported.
        message: String,
        /// The client library's error, where there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The store refused our credentials.
    #[error("the {backend} store at {addr} refused the credentials: {message}; check the user, password or token in the URL")]
    Auth {
        /// Which backend.
        backend: &'static str,
        /// The address.
        addr: String,
        /// What the store said.
        message: String,
    },

    /// The session or lease behind a hold expired, so the hold is gone.
    #[error("the session holding {name} expired; the lock may now be held by someone else, so stop the work it protected")]
    SessionExpired {
        /// The lock that was held.
        name: LockName,
    },

    /// A release or extend was refused because this guard no longer owns the lock.
    #[error("{name} is no longer held by this guard (it expired, was lost or was taken over); work done under it may have overlapped with another holder, so use fencing tokens")]
    NotOwner {
        /// The lock.
        name: LockName,
    },

    /// A read lock cannot be upgraded to a write lock.
    #[error("cannot upgrade the read lock on {name} to a write lock: two upgrading readers would deadlock; release the read guard, then call write()")]
    UpgradeRefused {
        /// The lock.
        name: LockName,
    },

    /// The backend does not offer this capability.
    #[error("the {backend} backend does not support {capability}; see Capabilities for what each store offers")]
    Unsupported {
        /// The missing capability, e.g. `"rwlock"`.
        capability: &'static str,
        /// Which backend.
        backend: &'static str,
    },

    /// A primitive was asked for a name in a way that conflicts with how it is used already.
    #[error("conflicting use of {name}: {problem}")]
    Conflict {
        /// The lock.
        name: LockName,
        /// What conflicts and how to resolve it.
        problem: String,
    },

    /// The store may have lost locks in a restart, so the backend grants nothing until the
    /// locks granted before it could have expired.
    #[error("the {backend} store at {addr} may have lost locks in a recent restart, so no lock is granted for another {}; {advice}", crate::params::format_duration(*.remaining))]
    Recovering {
        /// Which backend.
        backend: &'static str,
        /// The address.
        addr: String,
        /// How much longer the protection lasts.
        remaining: Duration,
        /// What controls it (e.g. the URL parameter).
        advice: String,
    },

    /// The backend was shut down; create a new one.
    #[error("the {backend} backend has been shut down; connect again")]
    Closed {
        /// Which backend.
        backend: &'static str,
    },

    /// The store answered with an error of its own.
    #[error("the {backend} store reported an error: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
}

/// `kind` with "a" or "an" before it (`a mutex`, `an election`), for the messages of
/// [`Error::Conflict`] that name two kinds of lock.
pub fn with_article(kind: &str) -> String {
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(what: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            problem: problem.into(),
        }
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Shorthand for [`Error::Timeout`].
    pub fn timeout(operation: impl Into<String>, addr: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            operation: operation.into(),
            addr: addr.into(),
            after,
        }
    }

    /// Shorthand for [`Error::Connection`].
    pub fn connection(
        backend: &'static str,
        addr: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Self {
        Error::Connection {
            backend,
            addr: addr.into(),
            message: message.to_string(),
            source: None,
        }
    }

    /// Keeps `cause` as the source of an [`Error::Connection`]; other errors are returned as
    /// they are.
    pub fn with_source(self, cause: impl Into<BoxError>) -> Self {
        match self {
            Error::Connection {
                backend,
                addr,
                message,
                source: _,
            } => Error::Connection {
                backend,
                addr,
                message,
                source: Some(cause.into()),
            },
            other => other,
        }
    }

    /// [`Error::Connection`] keeping the client library's error as its source; the message is
    /// the error's own text.
    pub fn connection_caused(
        backend: &'static str,
        addr: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        let source = source.into();
        Error::Connection {
            backend,
            addr: addr.into(),
            message: source.to_string(),
            source: Some(source),
        }
    }

    /// True for errors that a retry may cure (connection trouble, timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connection { .. } | Error::Timeout { .. } | Error::Recovering { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_keep_their_source() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::connection("redis", "h:1", "connect: refused").with_source(io);
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("refused")
        );
        let e = Error::connection_caused("etcd", "h:2", std::io::Error::other("reset"));
        assert!(
            e.to_string().contains("reset") && e.source().is_some(),
            "{e}"
        );
        assert!(Error::connection("zk", "h", "x").source().is_none());
    }

    #[test]
    fn durations_in_messages_read_as_people_write_them() {
        let e = Error::timeout("connect", "h:1", Duration::ZERO).to_string();
        assert!(e.contains("within 0s;"), "{e}");
        let e = Error::Recovering {
            backend: "redis",
            addr: "h:1".into(),
            remaining: Duration::from_millis(1_500),
            advice: "wait".into(),
        }
        .to_string();
        assert!(e.contains("for another 1.5s;"), "{e}");
    }
}
