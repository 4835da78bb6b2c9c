//! Turning etcd client errors into lockcore errors that say what to do.

use std::future::Future;
use std::time::Duration;

use etcd_client::Error as EtcdError;
use tonic::{Code, Status};
use tumbler_core::Error;

/// The backend name used in errors.
pub(crate) const BACKEND: &str = "etcd";

/// Maps an etcd client error to the lockcore error a caller can act on.
pub(crate) fn map(addr: &str, error: EtcdError) -> Error {
    match error {
        EtcdError::GRpcStatus(status) => map_status(addr, &status),
        EtcdError::TransportError(e) => {
            Error::connection(BACKEND, addr, describe_chain(&e)).with_source(e)
        }
        EtcdError::IoError(e) => Error::connection(BACKEND, addr, &e).with_source(e),
        EtcdError::InvalidUri(e) => Error::invalid("etcd endpoint", e.to_string()),
        EtcdError::InvalidArgs(e) => Error::invalid("etcd client setting", e),
        EtcdError::WatchError(e) | EtcdError::LeaseKeepAliveError(e) => {
            Error::connection(BACKEND, addr, e)
        }
        other => Error::backend(BACKEND, other),
    }
}

fn map_status(addr: &str, status: &Status) -> Error {
    let message = status.message();
    if is_auth_failure(status) {
        return Error::Auth {
            backend: BACKEND,
            addr: addr.to_owned(),
            message: message.to_owned(),
        };
    }
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted => Error::connection(BACKEND, addr, message),
        Code::Unknown if is_transient_message(message) => Error::connection(BACKEND, addr, message),
        // Keep the status itself as the source: its code and message stay inspectable.
        _ => Error::backend(BACKEND, status.clone()),
    }
}

fn is_auth_failure(status: &Status) -> bool {
    let message = status.message();
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    ) || message.contains("authentication failed")
        || message.contains("user name is empty")
        || message.contains("invalid auth token")
        || message.contains("permission denied")
}

/// Messages etcd sends (with code Unknown) while a leader is being elected or a request could
/// not be committed in time: a retry may succeed.
fn is_transient_message(message: &str) -> bool {
    [
        "leader changed",
        "no leader",
        "request timed out",
        "timed out",
        "too many requests",
        "not capable",
        "transport",
        "connect",
        "broken pipe",
        "reset",
        "h2 protocol",
        "stream closed",
        "operation was canceled",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Whether the error says our lease no longer exists (expired or revoked).
pub(crate) fn is_lease_gone(error: &EtcdError) -> bool {
    match error {
        EtcdError::GRpcStatus(status) => status.message().contains("lease not found"),
        EtcdError::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

/// Whether a mapped error says our lease no longer exists.
pub(crate) fn says_lease_gone(error: &Error) -> bool {
    matches!(error, Error::Backend { source, .. } if source.to_string().contains("lease not found"))
}

/// The error and its sources on one line (transport errors hide the useful part in a source).
fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// Runs one request with a deadline, mapping its error; `operation` names it in a timeout.
pub(crate) async fn call<T>(
    addr: &str,
    operation: impl FnOnce() -> String,
    timeout: Duration,
    request: impl Future<Output = Result<T, EtcdError>>,
) -> tumbler_core::Result<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(map(addr, error)),
        Err(_) => Err(Error::Timeout {
            operation: operation(),
            addr: addr.to_owned(),
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_the_status_as_their_source() {
        let status = Status::new(Code::NotFound, "etcdserver: requested lease not found");
        let error = map("etcd://h:2379/", EtcdError::GRpcStatus(status));
        assert!(says_lease_gone(&error), "{error:?}");
        let source = std::error::Error::source(&error).expect("a source");
        let kept = source.downcast_ref::<Status>().expect("the tonic status");
        assert_eq!(kept.code(), Code::NotFound);
    }

    #[test]
    fn elections_and_timeouts_are_transient() {
        for status in [
            Status::new(Code::Unavailable, "etcdserver: no leader"),
            Status::new(Code::Unknown, "etcdserver: leader changed"),
            Status::new(Code::DeadlineExceeded, "context deadline exceeded"),
        ] {
            assert!(
                map("a", EtcdError::GRpcStatus(status.clone())).is_transient(),
                "{status:?}"
            );
        }
        let denied = Status::new(Code::PermissionDenied, "etcdserver: permission denied");
        assert!(matches!(
            map("a", EtcdError::GRpcStatus(denied)),
            Error::Auth { .. }
        ));
    }
}
