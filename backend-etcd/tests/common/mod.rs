//! Helpers shared by the backend's integration tests: clients of a testkit etcd, names, and
//! the text of an expected `Conflict`.

#![allow(dead_code)]

use std::sync::Arc;

use testkit::etcd::Etcd;
use tumbler_core::{Error, LockName, SharedBackend};
use tumbler_etcd::{EtcdBackend, EtcdConfig};

/// A backend through lockcore's shared handle, and as itself (for its lease id).
pub async fn connect_both(port: u16, params: &str) -> (SharedBackend, Arc<EtcdBackend>) {
    let backend = EtcdConfig::from_url(&format!("etcd://127.0.0.1:{port}?{params}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    (backend.clone(), backend)
}

/// A client on `port` with URL parameters `params`.
pub async fn connect_to(port: u16, params: &str) -> SharedBackend {
    connect_both(port, params).await.0
}

/// A client of `e` with a 2 s lease TTL.
pub async fn connect(e: &Etcd) -> SharedBackend {
    connect_both(e.port(), "ttl=2s").await.0
}

/// A lock name the test knows to be valid.
pub fn name(text: &str) -> LockName {
    LockName::new(text).unwrap()
}

/// The problem of an expected `Conflict`; panics on anything else.
pub fn conflict_text<T: std::fmt::Debug>(outcome: tumbler_core::Result<T>) -> String {
    match outcome {
        Err(Error::Conflict { problem, .. }) => problem,
        other => panic!("expected Conflict, got {other:?}"),
    }
}
