//! User/password authentication against an etcd with auth enabled.

use std::time::Duration;

use testkit::etcd::{Etcd, EtcdOptions};
use tumbler_core::Error;

const LIMIT: Duration = Duration::from_secs(15);

async fn secured() -> Etcd {
    Etcd::start_with(EtcdOptions {
        auth: Some(("alice".into(), "wonder land".into())),
        ..Default::default()
    })
    .await
    .expect("start etcd with auth")
}

#[tokio::test]
async fn right_credentials_lock_and_wrong_ones_are_an_auth_error() {
    let e = secured().await;
    let port = e.port();

    // Percent-encoded password in the URL.
    let locks = tumbler_etcd::connect_url(&format!(
        "etcd://alice:wonder%20land@127.0.0.1:{port}?ttl=2s"
    ))
    .await
    .expect("connect with the right password");
    let guard = locks.mutex("auth/job").unwrap().lock().await.unwrap();
    let other = tumbler_etcd::EtcdConfig::new([format!("127.0.0.1:{port}")])
        .credentials("alice", "wonder land")
        .connect()
        .await
        .expect("connect with the typed config");
    let other: tumbler_core::SharedBackend = other;
    assert!(other
        .mutex("auth/job")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    let state = other
        .state(&tumbler_core::LockName::new("auth/job").unwrap())
        .await
        .unwrap();
    assert_eq!(state.holders.len(), 1, "{state:?}");
    guard.release().await.unwrap();

    for (url, what) in [
        (
            format!("etcd://alice:wrong@127.0.0.1:{port}"),
            "a wrong password",
        ),
        (
            format!("etcd://mallory:wonder%20land@127.0.0.1:{port}"),
            "an unknown user",
        ),
        (format!("etcd://127.0.0.1:{port}"), "no credentials"),
    ] {
        let result = tokio::time::timeout(LIMIT, tumbler_etcd::connect_url(&url))
            .await
            .unwrap_or_else(|_| panic!("connecting with {what} hung"));
        match result {
            Err(Error::Auth { message, .. }) => {
                assert!(!message.is_empty(), "{what}: empty message");
            }
            Err(other) => panic!("{what} gave {other}, expected an auth error"),
            Ok(_) => panic!("{what} was accepted"),
        }
    }
    let text = tumbler_etcd::connect_url(&format!("etcd://alice:wrong@127.0.0.1:{port}"))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("credentials"),
        "the message should say what to fix: {text}"
    );
}
