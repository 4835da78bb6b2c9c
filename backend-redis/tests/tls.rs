//! `rediss://`: locks over TLS against a Redis with a test CA (certificates made with openssl).

mod common;

use std::path::Path;
use std::process::Command;

use testkit::redis::{Redis, RedisOptions};
use tumbler_core::Error;

/// Writes `ca.pem`, `server.pem` and `server.key` (for `localhost` and 127.0.0.1) into `dir`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tumbler test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

#[tokio::test]
async fn locks_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let tls_port = testkit::free_port();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let redis = Redis::start_with(RedisOptions {
        password: Some("tls-pass".into()),
        extra_args: vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
        ..Default::default()
    })
    .await
    .expect("redis with TLS");
    let url = format!(
        "rediss://:tls-pass@localhost:{tls_port}?tls_ca={}",
        file("ca.pem")
    );
    let admin = common::connect_backend(&url).await;
    admin.declare_fresh_servers().await.unwrap();
    let (a, b) = (common::connect(&url).await, common::connect(&url).await);
    let held = a.mutex("tls/lock").unwrap().lock().await.unwrap();
    assert!(b
        .mutex("tls/lock")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    let waiter = b.mutex("tls/lock").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    held.release().await.unwrap();
    let next = tokio::time::timeout(common::PROMPT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    next.release().await.unwrap();
    assert_eq!(
        redis.cmd(&["EXISTS", "tls/lock"]).await.unwrap(),
        testkit::resp::Reply::Int(0)
    );

    // Without the test CA the server's certificate is not trusted.
    match tumbler_redis::connect_url(&format!(
        "rediss://:tls-pass@localhost:{tls_port}?connect_timeout=2s"
    ))
    .await
    {
        Err(Error::Connection { .. } | Error::Timeout { .. }) => {}
        Err(other) => panic!("an untrusted certificate gave {other}"),
        Ok(_) => panic!("an untrusted certificate was accepted"),
    }
}
