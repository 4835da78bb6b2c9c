//! TLS (`etcds://`) against an etcd that serves clients over TLS and asks for client
//! certificates.

use std::time::Duration;

use testkit::etcd_tls::EtcdTls;
use tumbler_core::Error;

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn etcds_with_ca_and_client_certificate() {
    let e = EtcdTls::start(true).await.expect("start etcd with TLS");
    let url = format!(
        "etcds://127.0.0.1:{}?ttl=2s&connect_timeout=3s&ca={}&cert={}&key={}",
        e.port(),
        e.ca_file().display(),
        e.client_cert_file().display(),
        e.client_key_file().display(),
    );
    let locks = tokio::time::timeout(LIMIT, tumbler_etcd::connect_url(&url))
        .await
        .expect("connect hung")
        .unwrap_or_else(|err| panic!("connect over TLS: {err}\n{}", e.log_tail()));
    let guard = locks.mutex("tls/job").unwrap().lock().await.unwrap();
    let waiter = tumbler_etcd::connect_url(&url)
        .await
        .expect("second client");
    assert!(waiter
        .mutex("tls/job")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    guard.release().await.unwrap();
    let next = waiter.mutex("tls/job").unwrap().try_lock().await.unwrap();
    assert!(next.is_some(), "the released lock was not free over TLS");

    // Refusals are typed errors, quickly.
    let port = e.port();
    let ca = e.ca_file();
    for (url, what) in [
        (
            format!(
                "etcds://127.0.0.1:{port}?connect_timeout=2s&ca={}",
                ca.display()
            ),
            "no client certificate",
        ),
        (
            format!("etcds://127.0.0.1:{port}?connect_timeout=2s"),
            "no CA to trust the server",
        ),
        (
            format!("etcd://127.0.0.1:{port}?connect_timeout=2s"),
            "plain text to a TLS port",
        ),
    ] {
        let result = tokio::time::timeout(LIMIT, tumbler_etcd::connect_url(&url))
            .await
            .unwrap_or_else(|_| panic!("{what}: connect hung"));
        match result {
            Err(err @ Error::Connection { .. }) => {
                let text = err.to_string();
                assert!(
                    text.contains("etcds://") || text.contains("ca="),
                    "{what}: the message should say what to check: {text}"
                );
            }
            Err(Error::Timeout { .. }) => {}
            Err(other) => panic!("{what}: unexpected error {other}"),
            Ok(_) => panic!("{what}: connected"),
        }
    }
}
