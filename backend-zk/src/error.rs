//! Turning ZooKeeper client errors into lockcore errors that say what to do.

use std::future::Future;
use std::time::Duration;

use lockcore::Error;
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
        ),
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
        other => Error::backend(BACKEND, format!("{what}: {other}")),
    }
}
