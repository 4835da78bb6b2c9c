//! Turning the redis crate's errors into [`tumbler_core::Error`]s that say what to fix.

use std::fmt;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use tumbler_core::{Error, LockName};

/// The backend's name in errors and capabilities.
pub(crate) const BACKEND: &str = "redis";

/// The error code a script raises on data tumbler did not write (see [`crate::scripts`]).
const FOREIGN_CODE: &str = "TUMBLERCONFLICT";

/// A request the server answered with an error: the redis crate's error is the source.
#[derive(Debug)]
struct RequestFailed {
    what: String,
    addr: String,
    source: RedisError,
}

impl fmt::Display for RequestFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.what, self.addr, self.source)
    }
}

impl std::error::Error for RequestFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A script found data tumbler did not write; [`for_name`] turns it into
/// [`Error::Conflict`] once the lock name is known.
#[derive(Debug)]
pub(crate) struct ForeignData {
    /// `key K is a hash, not ...`, as the script said it.
    detail: String,
}

impl fmt::Display for ForeignData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; tumbler did not write it: remove that key, or give tumbler keys of its own with the `prefix` URL parameter",
            self.detail
        )
    }
}

impl std::error::Error for ForeignData {}

/// Maps an error from the server at `addr` while doing `what`.
pub(crate) fn map(addr: &str, what: &str, error: RedisError) -> Error {
    let code = error.code().unwrap_or_default().to_owned();
    match error.kind() {
        ErrorKind::AuthenticationFailed => auth(addr, &error),
        _ if matches!(code.as_str(), "WRONGPASS" | "NOAUTH" | "INVALIDPASSWORD") => {
            auth(addr, &error)
        }
        _ if code == FOREIGN_CODE => {
            let detail = error.detail().unwrap_or_default();
            // Redis appends " script: SHA, on @user_script:N." to errors raised by scripts.
            let detail = detail.split(" script: ").next().unwrap_or(detail);
            Error::backend(
                BACKEND,
                ForeignData {
                    detail: detail.trim().to_owned(),
                },
            )
        }
        ErrorKind::Server(ServerErrorKind::NoPerm) => Error::Auth {
            backend: BACKEND,
            addr: addr.to_owned(),
            message: format!(
                "{error} (while {what}); the user needs +@scripting +@pubsub +@read +@write +time (+info) and access to the lock keys (~*) and channels (&*)"
            ),
        },
        _ if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error() =>
        {
            Error::connection(BACKEND, addr, format!("{what}: {error}")).with_source(error)
        }
        ErrorKind::Server(ServerErrorKind::BusyLoading) => Error::connection(
            BACKEND,
            addr,
            format!("{what}: the server is still loading its data set; retry shortly"),
        ),
        _ => Error::backend(
            BACKEND,
            RequestFailed {
                what: what.to_owned(),
                addr: addr.to_owned(),
                source: error,
            },
        ),
    }
}

/// Turns a script's report of foreign data into [`Error::Conflict`] on `name`; other errors
/// pass unchanged.
pub(crate) fn for_name(name: &LockName) -> impl FnOnce(Error) -> Error + '_ {
    move |error| match error {
        Error::Backend { source, .. } if source.is::<ForeignData>() => Error::Conflict {
            name: name.clone(),
            problem: source.to_string(),
        },
        other => other,
    }
}

/// One master's error inside a Redlock summary, without the prefixes the summary already has
/// ("cannot reach the redis store at ...", "... did not finish within").
pub(crate) fn brief(error: &Error) -> String {
    match error {
        Error::Connection { addr, .. } | Error::Timeout { addr, .. } | Error::Auth { addr, .. } => {
            format!("{addr}: {}", detail(error))
        }
        other => other.to_string(),
    }
}

/// What went wrong, without the server's address: for a message that names it already.
pub(crate) fn detail(error: &Error) -> String {
    match error {
        Error::Connection { message, .. } => message.clone(),
        Error::Timeout {
            operation, after, ..
        } => format!("{operation}: no answer within {after:.1?}"),
        Error::Auth { message, .. } => format!("refused the credentials: {message}"),
        other => other.to_string(),
    }
}

/// Several masters' errors in one line.
pub(crate) fn briefs(errors: &[Error]) -> String {
    errors.iter().map(brief).collect::<Vec<_>>().join("; ")
}

fn auth(addr: &str, error: &RedisError) -> Error {
    Error::Auth {
        backend: BACKEND,
        addr: addr.to_owned(),
        message: error.to_string(),
    }
}

/// True for errors after which the connection should be dropped and made again.
pub(crate) fn breaks_connection(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
}

/// True for replies that say the server is a replica (after a failover demoted it):
/// `READONLY` on a write, or `WAIT` refused on a replica.
pub(crate) fn is_replica_reply(error: &RedisError) -> bool {
    error.code() == Some("READONLY")
        || matches!(error.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly))
        || error
            .detail()
            .is_some_and(|d| d.contains("cannot be used with replica instances"))
}

/// The transient error of a request that met a replica where the master was.
pub(crate) fn now_replica(addr: &str, what: &str, error: RedisError) -> Error {
    Error::connection(
        BACKEND,
        addr,
        format!(
            "{what}: the server answered as a replica ({error}); a failover moved the master, the next connection goes to the new one; retry"
        ),
    )
    .with_source(error)
}

/// `WAIT` confirmed fewer replicas than `min_replicas` asks for: the source of the
/// [`Error::Connection`] of a grant that was undone, or of a renewal that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicasMissing {
    /// `min_replicas`: how many replicas had to acknowledge.
    pub wanted: u32,
    /// How many did within the timeout.
    pub acknowledged: u32,
    /// How long `WAIT` waited (`min_replicas_timeout`).
    pub waited: std::time::Duration,
    /// The write that was not confirmed (`the grant`, `the renewal`).
    pub what: String,
}

impl fmt::Display for ReplicasMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replicas did not acknowledge {}: {} of min_replicas={} within {} (WAIT); check that the replicas are up and linked, or lower min_replicas / raise min_replicas_timeout",
            self.what,
            self.acknowledged,
            self.wanted,
            tumbler_core::params::format_duration(self.waited)
        )
    }
}

impl std::error::Error for ReplicasMissing {}

/// A reply of an unexpected shape.
pub(crate) fn bad_reply(what: &str, reply: &redis::Value) -> Error {
    Error::backend(
        BACKEND,
        format!("unexpected reply to {what}: {reply:?}; is this a Redis 6.2 or newer server?"),
    )
}

/// What the restart delay is, for messages and warnings.
pub(crate) const RECOVERY_ADVICE: &str = "the server does not persist every write (appendonly yes + appendfsync always), so its data set may be younger than locks still in use; the `restart_delay` URL parameter sets this delay (default: the ttl), `restart_delay=0s` turns it off (safe only on a server provisioned empty just now)";

/// The restart delay refuses grants for another `remaining` (see the crate docs on restarts).
pub(crate) fn recovering(addr: &str, remaining: std::time::Duration) -> Error {
    Error::Recovering {
        backend: BACKEND,
        addr: addr.to_owned(),
        remaining,
        advice: RECOVERY_ADVICE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_their_source() {
        let error = map(
            "redis://h:1",
            "acquiring a lock",
            RedisError::from((ErrorKind::UnexpectedReturnType, "boom")),
        );
        let source = std::error::Error::source(&error).expect("a source");
        let inner = source.source().expect("the redis error under it");
        assert!(inner.to_string().contains("boom"), "{inner}");
    }
}
