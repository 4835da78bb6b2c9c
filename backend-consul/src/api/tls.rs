//! The rustls client configuration (ring provider): the system's roots or a CA file, and an
//! optional client certificate.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tumbler_core::{Error, Result};

use crate::config::ConsulConfig;

/// Builds the TLS settings of the HTTP client. For plain http the settings are never used, so
/// they are built without loading any certificate.
pub(crate) fn client_config(config: &ConsulConfig) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?;
    let builder = if !config.https {
        builder.with_root_certificates(rustls::RootCertStore::empty())
    } else if let Some(path) = &config.ca_file {
        let mut roots = rustls::RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| file_error("ca_file", path, e))?;
        for cert in certs {
            let cert = cert.map_err(|e| file_error("ca_file", path, e))?;
            roots
                .add(cert)
                .map_err(|e| file_error("ca_file", path, e))?;
        }
        if roots.is_empty() {
            return Err(file_error("ca_file", path, "no certificate in the file"));
        }
        builder.with_root_certificates(roots)
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| tls_error("the system's certificate verifier", e))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    let mut tls = match &config.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs = CertificateDer::pem_file_iter(cert_path)
                .map_err(|e| file_error("cert_file", cert_path, e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| file_error("cert_file", cert_path, e))?;
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| file_error("key_file", key_path, e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error("the client certificate", e))?
        }
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

fn file_error(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(
        format!("consul {what} {}", path.display()),
        format!("cannot use it: {e}; give a readable PEM file"),
    )
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid("consul TLS settings", format!("{what}: {e}"))
}
