//! ACL tokens (`X-Consul-Token`) and https (`consuls://`).

mod common;

use std::time::Duration;

use common::{server_with, url};
use testkit::consul::ConsulServerOptions;
use tumbler_consul::{connect_url, ConsulConfig};
use tumbler_core::Error;

const PARAMS: &str = "ttl=5s&lock_delay=0s&request_timeout=3s&connect_timeout=3s";

#[tokio::test]
async fn acl_token_is_sent_and_refusals_are_auth_errors() {
    let server = server_with(ConsulServerOptions::default().with_acl_token("s3cret")).await;
    let locks = connect_url(&url(server.addr(), &format!("{PARAMS}&token=s3cret")))
        .await
        .expect("the right token was refused");
    let held = locks.mutex("guarded").unwrap().lock().await.unwrap();
    held.release().await.unwrap();

    let wrong = connect_url(&url(server.addr(), &format!("{PARAMS}&token=nope"))).await;
    assert!(
        matches!(wrong, Err(Error::Auth { .. })),
        "{:?}",
        wrong.err()
    );
    let anonymous = connect_url(&url(server.addr(), PARAMS)).await;
    let err = anonymous
        .err()
        .expect("no token was accepted under default-deny");
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(err.to_string().contains("token"), "{err}");
}

#[tokio::test]
async fn agent_refusing_the_ttl_is_an_invalid_argument() {
    // A real agent's default minimum: 10s.
    let server = testkit::consul::ConsulServer::start().await.unwrap();
    let refused = ConsulConfig::new(server.http_addr())
        .session_ttl(Duration::from_secs(2))
        .connect()
        .await;
    let err = refused.err().expect("the agent accepted a 2s TTL");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("10s"), "{err}");
}

#[cfg(feature = "tls")]
mod tls {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsAcceptor;

    use super::*;

    /// A CA and a server certificate for `localhost` and 127.0.0.1, made with `openssl`.
    struct Certs {
        _dir: tempfile::TempDir,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn certs() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=tumbler test CA"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &ca);
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(d, &csr);
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ],
        );
        Certs {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            _dir: dir,
        }
    }

    /// Terminates TLS on a free port and forwards to `upstream` (the agent's https listener).
    async fn tls_front(certs: &Certs, upstream: SocketAddr) -> SocketAddr {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    if let Ok(mut plain) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_with_a_ca_file() {
        let server = common::server().await;
        let certs = certs();
        let front = tls_front(&certs, server.addr()).await;
        let ca = certs.ca.display().to_string();
        let secure = format!("consuls://localhost:{}/?{PARAMS}&tls_ca={ca}", front.port());
        let locks = connect_url(&secure)
            .await
            .expect("https with the CA failed");
        let held = locks.mutex("over-tls").unwrap().lock().await.unwrap();
        held.release().await.unwrap();

        // Another CA does not vouch for the agent: a typed connection error, quickly.
        let other = certs_other_ca();
        let wrong = format!(
            "consuls://localhost:{}/?{PARAMS}&ca_file={}",
            front.port(),
            other.ca.display()
        );
        let err = connect_url(&wrong)
            .await
            .err()
            .expect("an unknown CA was trusted");
        assert!(matches!(err, Error::Connection { .. }), "{err}");

        // Plain http to the https port is not mistaken for success either.
        let plain = connect_url(&format!("consul://localhost:{}/?{PARAMS}", front.port())).await;
        assert!(plain.is_err());

        let missing = connect_url(&format!(
            "consuls://localhost:{}/?{PARAMS}&ca_file=/nonexistent/ca.pem",
            front.port()
        ))
        .await;
        assert!(
            matches!(missing, Err(Error::InvalidArgument { .. })),
            "{:?}",
            missing.err()
        );
    }

    fn certs_other_ca() -> Certs {
        certs()
    }
}
