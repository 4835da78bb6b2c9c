//! TLS against a real ZooKeeper serving its secure client port (Netty, keystore and truststore
//! made with keytool, client certificates required).

mod common;

use std::time::Duration;

use common::{children, raw, PROMPT};
use testkit::zk::ZkTls;
use tumbler_core::Error;

fn url(zk: &ZkTls, extra: &str) -> String {
    let q = |p: std::path::PathBuf| p.display().to_string().replace('/', "%2F");
    format!(
        "zk+tls://{}/tls?session_timeout=6s&connect_timeout=5s&tls_ca={}{extra}",
        zk.secure_connect_string(),
        q(zk.ca_file())
    )
    .replace("{cert}", &q(zk.client_cert_file()))
    .replace("{key}", &q(zk.client_key_file()))
}

#[tokio::test]
async fn locks_over_tls_with_a_client_certificate() {
    let zk = ZkTls::start()
        .await
        .unwrap_or_else(|e| panic!("starting zookeeper with TLS: {e}"));
    let locks = tumbler_zookeeper::connect_url(&url(&zk, "&tls_cert={cert}&tls_key={key}"))
        .await
        .unwrap_or_else(|e| panic!("connecting over TLS: {e}"));
    let guard = tokio::time::timeout(PROMPT, locks.mutex("secure").unwrap().lock())
        .await
        .expect("lock over TLS within the deadline")
        .unwrap();
    // The node is on the server, seen through its plain port.
    let look = raw(&zk.server().connect_string()).await;
    assert_eq!(children(&look, "/tls/secure").await.len(), 1);
    let rival = locks.mutex("secure").unwrap().try_lock().await.unwrap();
    assert!(rival.is_none(), "the lock is held");
    guard.release().await.unwrap();
    assert!(children(&look, "/tls/secure").await.is_empty());
}

#[tokio::test]
async fn tls_without_a_client_certificate_or_to_a_plain_port_is_refused_in_time() {
    let zk = ZkTls::start()
        .await
        .unwrap_or_else(|e| panic!("starting zookeeper with TLS: {e}"));
    // The server requires a client certificate.
    let started = std::time::Instant::now();
    let refused = tumbler_zookeeper::connect_url(&url(&zk, "")).await;
    assert!(
        matches!(
            refused,
            Err(Error::Connection { .. } | Error::Timeout { .. })
        ),
        "{:?}",
        refused.err()
    );
    assert!(started.elapsed() < Duration::from_secs(5) + PROMPT / 4);
    // A plain client on the TLS port does not get a session either.
    let plain = tumbler_zookeeper::connect_url(&format!(
        "zk://{}?session_timeout=6s&connect_timeout=3s",
        zk.secure_connect_string()
    ))
    .await;
    assert!(plain.is_err(), "a plain client connected to the TLS port");
    // A CA file that is not PEM is refused at connect, naming the parameter.
    let bad = tumbler_zookeeper::connect_url(&format!(
        "zk+tls://{}?tls_ca=%2Fdev%2Fnull",
        zk.secure_connect_string()
    ))
    .await;
    assert!(
        matches!(&bad, Err(Error::InvalidArgument { what, .. }) if what.contains("tls_ca")),
        "{:?}",
        bad.err()
    );
}
