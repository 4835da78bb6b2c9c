//! A standalone etcd that serves clients over TLS, with a throwaway CA, server certificate and
//! client certificate made by the `openssl` command.
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use testkit::etcd_tls::EtcdTls;
//! let e = EtcdTls::start(true).await?; // clients must present a certificate
//! println!("https://127.0.0.1:{} trusts {}", e.port(), e.ca_file().display());
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{ServerProcess, Spec};
use crate::ready::{retry_on_port_clash, start_timeout, wait_ready};
use crate::workdir::WorkDir;

/// How long an etcd start may take.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running etcd with TLS on its client port. Dropping it kills the server.
#[derive(Debug)]
pub struct EtcdTls {
    port: u16,
    proc: ServerProcess,
    dir: WorkDir,
}

impl EtcdTls {
    /// Makes a CA and certificates (server: `127.0.0.1` and `localhost`; client: CN `client`)
    /// and starts etcd with TLS on its client port; with `require_client_cert`, clients must
    /// present a certificate signed by the CA. Returns once etcd says it serves clients.
    pub async fn start(require_client_cert: bool) -> Result<EtcdTls> {
        retry_on_port_clash(|| async {
            let dir = WorkDir::new("etcd-tls")?;
            make_certificates(dir.path())?;
            let ports = crate::ports::free_ports(2)?;
            let (port, peer) = (ports[0], ports[1]);
            let d = |f: &str| dir.path().join(f).display().to_string();
            let mut args: Vec<String> = vec![
                "--name".into(),
                "tls".into(),
                "--data-dir".into(),
                d("data"),
                "--listen-client-urls".into(),
                format!("https://127.0.0.1:{port}"),
                "--advertise-client-urls".into(),
                format!("https://127.0.0.1:{port}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                format!("tls=http://127.0.0.1:{peer}"),
                "--cert-file".into(),
                d("server.pem"),
                "--key-file".into(),
                d("server.key"),
                "--unsafe-no-fsync".into(),
            ];
            if require_client_cert {
                args.extend([
                    "--client-cert-auth".into(),
                    "--trusted-ca-file".into(),
                    d("ca.pem"),
                ]);
            }
            let spec = Spec {
                name: format!(
                    "etcd with TLS on 127.0.0.1:{port} (folder {})",
                    dir.path().display()
                ),
                program: crate::bins::etcd()?,
                args: args.into_iter().map(Into::into).collect(),
                cwd: dir.path().to_path_buf(),
                log: dir.path().join("etcd.log"),
                env: Vec::new(),
            };
            let proc = ServerProcess::spawn(spec)?;
            let log = dir.path().join("etcd.log");
            wait_ready(&proc, start_timeout(START_TIMEOUT), || {
                let log = log.clone();
                async move {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("ready to serve client requests") {
                        Ok(())
                    } else {
                        Err("etcd has not said it is ready to serve client requests".into())
                    }
                }
            })
            .await?;
            Ok(EtcdTls { port, proc, dir })
        })
        .await
    }

    /// The client port (TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The CA certificate (PEM) that signed the server and client certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client certificate (PEM) signed by the CA.
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's private key (PEM).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }
}

/// Writes ca.pem/ca.key, server.pem/server.key and client.pem/client.key into `dir`.
fn make_certificates(dir: &Path) -> Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=testkit-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    )?;
    for (who, usage, names) in [
        (
            "server",
            "serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ),
        ("client", "clientAuth", "subjectAltName=DNS:client"),
    ] {
        let (key, csr, pem) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
        );
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat(),
        )?;
        let ext = format!("{who}.ext");
        std::fs::write(
            dir.join(&ext),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n{names}\n"
            ),
        )
        .map_err(|e| Error::io(format!("writing {ext}"), e))?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
    }
    Ok(())
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::io("running openssl (Debian package openssl)", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::protocol(
            format!("openssl {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}
