//! One TLS parameter set, with the same URL parameter names on every store.
//!
//! | parameter | meaning |
//! |---|---|
//! | `tls_ca` | PEM file of the CA that signed the server's certificate (default: the system's) |
//! | `tls_cert` | PEM file of this client's certificate, for stores that check clients |
//! | `tls_key` | PEM file of that certificate's private key |
//! | `tls_insecure` | `true` skips server certificate checks (tests only) |

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::params::Params;

/// TLS settings from a store URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// The CA file (`tls_ca`).
    pub ca: Option<PathBuf>,
    /// The client certificate file (`tls_cert`).
    pub cert: Option<PathBuf>,
    /// The client key file (`tls_key`).
    pub key: Option<PathBuf>,
    /// Skip server certificate verification (`tls_insecure`).
    pub insecure: bool,
}

impl TlsParams {
    /// The parameter names, for [`Params::finish`]'s list of known parameters.
    pub const NAMES: &'static [&'static str] = &["tls_ca", "tls_cert", "tls_key", "tls_insecure"];

    /// Reads the TLS parameters; `aliases` maps older store-specific names to the common ones
    /// (e.g. `[("ca", "tls_ca")]`); giving both an alias and its name is refused.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`]: a certificate without its key (or the reverse), a value
    /// given twice, a `tls_insecure` that is not a boolean.
    pub fn from_params(params: &mut Params, aliases: &[(&str, &str)]) -> Result<Self> {
        let mut read = |name: &str| -> Result<Option<String>> {
            let main = params.text(name);
            for (alias, target) in aliases {
                if *target == name {
                    if let Some(value) = params.text(alias) {
                        if main.is_some() {
                            return Err(Error::invalid(
                                format!("URL parameter `{name}`"),
                                format!("given twice, also as `{alias}`; keep `{name}`"),
                            ));
                        }
                        return Ok(Some(value));
                    }
                }
            }
            Ok(main)
        };
        let ca = read("tls_ca")?.map(PathBuf::from);
        let cert = read("tls_cert")?.map(PathBuf::from);
        let key = read("tls_key")?.map(PathBuf::from);
        let insecure = params.bool("tls_insecure")?.unwrap_or(false);
        if cert.is_some() != key.is_some() {
            return Err(Error::invalid(
                "TLS client certificate",
                "tls_cert and tls_key go together: give both files or neither",
            ));
        }
        Ok(TlsParams {
            ca,
            cert,
            key,
            insecure,
        })
    }

    /// Whether any TLS setting was given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.insecure
    }

    /// Reads a file named by a parameter, with an error that names the parameter.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the file cannot be read.
    pub fn read(parameter: &str, path: &std::path::Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| {
            Error::invalid(
                format!("URL parameter `{parameter}`"),
                format!("cannot read {}: {e}", path.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(
            "etcd",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn names_and_aliases() {
        let mut p = params(&[("ca", "/a"), ("tls_cert", "/c"), ("tls_key", "/k")]);
        let t = TlsParams::from_params(&mut p, &[("ca", "tls_ca")]).unwrap();
        assert_eq!(t.ca, Some(PathBuf::from("/a")));
        assert!(t.any());
        let mut p = params(&[("ca", "/a"), ("tls_ca", "/b")]);
        assert!(TlsParams::from_params(&mut p, &[("ca", "tls_ca")])
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let mut p = params(&[("tls_cert", "/c")]);
        assert!(TlsParams::from_params(&mut p, &[])
            .unwrap_err()
            .to_string()
            .contains("go together"));
    }
}
