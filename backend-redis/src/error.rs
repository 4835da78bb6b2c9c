//! Turning the redis crate's errors into [`lockcore::Error`]s that say what to fix.

use lockcore::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The backend's name in errors and capabilities.
pub(crate) const BACKEND: &str = "redis";

/// Maps an error from the server at `addr` while doing `what`.
pub(crate) fn map(addr: &str, what: &str, error: RedisError) -> Error {
    let code = error.code().unwrap_or_default().to_owned();
    match error.kind() {
        ErrorKind::AuthenticationFailed => auth(addr, &error),
        _ if matches!(code.as_str(), "WRONGPASS" | "NOAUTH" | "INVALIDPASSWORD") => {
            auth(addr, &error)
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
            Error::connection(BACKEND, addr, format!("{what}: {error}"))
        }
        ErrorKind::Server(ServerErrorKind::BusyLoading) => Error::connection(
            BACKEND,
            addr,
            format!("{what}: the server is still loading its data set; retry shortly"),
        ),
        _ => Error::backend(BACKEND, format!("{what} at {addr}: {error}")),
    }
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

/// A reply of an unexpected shape.
pub(crate) fn bad_reply(what: &str, reply: &redis::Value) -> Error {
    Error::backend(
        BACKEND,
        format!("unexpected reply to {what}: {reply:?}; is this a Redis 6.2 or newer server?"),
    )
}
