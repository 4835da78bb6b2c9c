//! TLS settings for `etcds://` (feature `tls`, rustls).

#[cfg(feature = "tls")]
pub use enabled::EtcdTls;

/// Without the `tls` feature there are no TLS settings to hold.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub(crate) enum EtcdTls {}

#[cfg(feature = "tls")]
mod enabled {
    use std::fmt;
    use std::path::Path;

    use etcd_client::{Certificate, Identity, TlsOptions};
    use tumbler_core::{Error, Result};

    /// How to talk TLS to etcd: the CA that signed the members' certificates, optionally a
    /// client certificate, and the name to check the members' certificates against.
    ///
    /// ```no_run
    /// # fn demo() -> tumbler_core::Result<()> {
    /// use tumbler_etcd::{EtcdConfig, EtcdTls};
    /// let tls = EtcdTls::new()
    ///     .ca_file("/etc/etcd/ca.pem")?
    ///     .client_identity_files("/etc/etcd/client.pem", "/etc/etcd/client-key.pem")?;
    /// let config = EtcdConfig::new(["etcd-1:2379"]).tls(tls);
    /// # Ok(()) }
    /// ```
    #[derive(Clone, Default)]
    pub struct EtcdTls {
        ca_pem: Option<Vec<u8>>,
        identity: Option<(Vec<u8>, Vec<u8>)>,
        domain: Option<String>,
    }

    impl fmt::Debug for EtcdTls {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("EtcdTls")
                .field("ca", &self.ca_pem.is_some())
                .field("client_identity", &self.identity.is_some())
                .field("domain", &self.domain)
                .finish()
        }
    }

    impl EtcdTls {
        /// TLS without a custom CA or client certificate.
        pub fn new() -> Self {
            EtcdTls::default()
        }

        /// Trusts the CA certificate(s) in `pem`.
        pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.ca_pem = Some(pem.into());
            self
        }

        /// Trusts the CA certificate(s) in the PEM file at `path`.
        pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
            Ok(self.ca_pem(read("CA file", path.as_ref())?))
        }

        /// Presents this client certificate and private key (PEM) to the members.
        pub fn client_identity_pem(
            mut self,
            cert: impl Into<Vec<u8>>,
            key: impl Into<Vec<u8>>,
        ) -> Self {
            self.identity = Some((cert.into(), key.into()));
            self
        }

        /// Presents the client certificate and key in these PEM files.
        pub fn client_identity_files(
            self,
            cert: impl AsRef<Path>,
            key: impl AsRef<Path>,
        ) -> Result<Self> {
            let cert = read("client certificate file", cert.as_ref())?;
            let key = read("client key file", key.as_ref())?;
            Ok(self.client_identity_pem(cert, key))
        }

        /// Checks the members' certificates against `name` instead of the endpoint's host.
        pub fn domain(mut self, name: impl Into<String>) -> Self {
            self.domain = Some(name.into());
            self
        }

        pub(crate) fn options(&self) -> TlsOptions {
            let mut options = TlsOptions::new();
            if let Some(pem) = &self.ca_pem {
                options = options.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &self.identity {
                options = options.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &self.domain {
                options = options.domain_name(domain.clone());
            }
            options
        }
    }

    fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| {
            Error::invalid(
                format!("etcd TLS {what}"),
                format!("cannot read {}: {e}", path.display()),
            )
        })
    }
}
