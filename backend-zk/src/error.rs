//! Turning ZooKeeper client errors into lockcore errors that say what to do.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tumbler_core::{Error, LockName};
use zookeeper_client as zk;

/// The backend's name in errors and capabilities.
pub(crate) const BACKEND: &str = "zookeeper";

/// Runs one request with a time limit; a request that does not finish in time fails with
/// [`zk::Error::Timeout`], which callers treat like a connection loss (outcome unknown).
pub(crate) async fn limited<T>(
    limit: Duration,
    request: impl Future<Output = Result<T, zk::Error>>,
) -> Result<T, zk::Error> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result,
        Err(_) => Err(zk::Error::Timeout),
    }
}

/// Whether the request may or may not have been applied (the reply was lost). The client
/// reports a broken connection as `ConnectionLoss`, or as the I/O error itself (`Custom`).
pub(crate) fn outcome_unknown(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::ConnectionLoss
            | zk::Error::Timeout
            | zk::Error::Custom(_)
            | zk::Error::UnexpectedError(_)
    )
}

/// Whether the session behind the request is gone for good.
pub(crate) fn session_gone(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::SessionExpired
            | zk::Error::SessionMoved
            | zk::Error::ClientClosed
            | zk::Error::AuthFailed
    )
}

/// A lockcore error for `error`, which happened while doing `what` against `addr`.
pub(crate) fn convert(error: zk::Error, addr: &str, what: &str) -> Error {
    match error {
        zk::Error::ConnectionLoss
        | zk::Error::Timeout
        | zk::Error::NoHosts
        | zk::Error::Custom(_)
        | zk::Error::UnexpectedError(_) => Error::connection(
            BACKEND,
            addr,
            format!("{what}: {error}; check that the ensemble is up and reachable"),
        )
        .with_source(error),
        zk::Error::NoAuth => Error::Auth {
            backend: BACKEND,
            addr: addr.to_owned(),
            message: format!(
                "{what}: not authorized; the lock's znodes were created by another ZooKeeper user, so connect with the same credentials (zk://user:password@host)"
            ),
        },
        zk::Error::AuthFailed => Error::Auth {
            backend: BACKEND,
            addr: addr.to_owned(),
            message: format!("{what}: authentication failed"),
        },
        zk::Error::ClientClosed => Error::Closed { backend: BACKEND },
        zk::Error::SessionExpired | zk::Error::SessionMoved => Error::connection(
            BACKEND,
            addr,
            format!("{what}: the ZooKeeper session expired; the next operation opens a new one"),
        ),
        other => Error::backend(
            BACKEND,
            Failed {
                what: what.to_owned(),
                source: other,
            },
        ),
    }
}

/// A request the servers refused, kept as the source of [`Error::Backend`] so the client's own
/// error stays reachable through `source()`.
#[derive(Debug)]
struct Failed {
    what: String,
    source: zk::Error,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// [`convert`] for a request about lock `name` that started at `started`: a request that ran
/// out of time is [`Error::Timeout`] with the real time taken, an expired session
/// [`Error::SessionExpired`].
pub(crate) fn convert_for(
    error: zk::Error,
    addr: &str,
    name: &LockName,
    what: &str,
    started: Instant,
) -> Error {
    match error {
        zk::Error::Timeout => Error::Timeout {
            operation: what.to_owned(),
            addr: addr.to_owned(),
            after: started.elapsed(),
        },
        zk::Error::SessionExpired | zk::Error::SessionMoved => {
            Error::SessionExpired { name: name.clone() }
        }
        other => convert(other, addr, what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_client_error_as_source() {
        let error = convert(zk::Error::BadVersion, "zk://h:2181", "write of x");
        let Error::Backend { source, .. } = &error else {
            panic!("{error:?}");
        };
        let inner = std::error::Error::source(source.as_ref()).expect("a source");
        assert_eq!(inner.to_string(), zk::Error::BadVersion.to_string());
        assert!(error.to_string().contains("write of x"), "{error}");
    }
}
