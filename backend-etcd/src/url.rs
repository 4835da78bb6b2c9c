//! Parsing `etcd://` and `etcds://` URLs into an [`EtcdConfig`].

use tumbler_core::tls::TlsParams;
use tumbler_core::url::{Credentials, StoreUrl};
use tumbler_core::{Error, Result};

use crate::config::{EtcdConfig, DEFAULT_PORT};

/// The parameters an etcd URL may carry (besides the common TLS ones).
const KNOWN: &[&str] = &[
    "ttl",
    "timeout",
    "connect_timeout",
    "user",
    "password",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_insecure",
    "domain",
    "ca",
    "cert",
    "key",
];

/// etcd's older TLS parameter names, still accepted.
const TLS_ALIASES: &[(&str, &str)] = &[("ca", "tls_ca"), ("cert", "tls_cert"), ("key", "tls_key")];

impl EtcdConfig {
    /// Parses a URL; see the [crate documentation](crate) for the grammar.
    ///
    /// Fails with `InvalidArgument` naming what to fix: a bad scheme, host, port (0 too),
    /// duration or TLS file, credentials given twice, an unknown parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        parse(url)
    }
}

/// Parses `etcd://[user:password@]host:port[,host:port...][/key/prefix][?params]` with
/// lockcore's [`StoreUrl`].
fn parse(url: &str) -> Result<EtcdConfig> {
    let mut parsed = StoreUrl::parse(url, &["etcd", "etcds"], DEFAULT_PORT)?;
    let tls = parsed.scheme == "etcds";
    let endpoints: Vec<String> = parsed.hosts.iter().map(ToString::to_string).collect();
    let mut config = EtcdConfig::new(endpoints);
    if !parsed.path.is_empty() {
        let prefix = if parsed.path.ends_with('/') {
            parsed.path.clone()
        } else {
            format!("{}/", parsed.path)
        };
        config = config.key_prefix(prefix);
    }
    match parsed.credentials()? {
        Some(Credentials {
            user: Some(user),
            password,
        }) if !user.is_empty() => {
            config = config.credentials(user, password.unwrap_or_default());
        }
        None => {}
        Some(_) => {
            return Err(Error::invalid(
                "etcd URL credentials",
                "a password needs a user; write etcd://user:password@host:2379",
            ))
        }
    }
    let params = parsed.params();
    if let Some(ttl) = params.duration("ttl")? {
        config = config.ttl(ttl)?;
    }
    if let Some(timeout) = params.duration("timeout")? {
        config = config.request_timeout(timeout)?;
    }
    if let Some(timeout) = params.duration("connect_timeout")? {
        config = config.connect_timeout(timeout)?;
    }
    let settings = TlsParams::from_params(params, TLS_ALIASES)?;
    let domain = params.text("domain");
    config = apply_tls(config, tls, settings, domain)?;
    parsed.finish(KNOWN)?;
    config.endpoint_urls()?;
    Ok(config)
}

#[cfg(feature = "tls")]
fn apply_tls(
    config: EtcdConfig,
    tls: bool,
    settings: TlsParams,
    domain: Option<String>,
) -> Result<EtcdConfig> {
    if !tls {
        if settings.any() || settings.key.is_some() || domain.is_some() {
            return Err(Error::invalid(
                "etcd URL",
                "tls_ca, tls_cert, tls_key, tls_insecure and domain are TLS settings; use an etcds:// URL",
            ));
        }
        return Ok(config);
    }
    if settings.insecure {
        return Err(Error::invalid(
            "etcd URL parameter `tls_insecure`",
            "etcd's client always checks the members' certificates; give the CA with tls_ca (and domain= if the names differ)",
        ));
    }
    let mut tls = crate::EtcdTls::new();
    if let Some(ca) = &settings.ca {
        tls = tls.ca_pem(TlsParams::read("tls_ca", ca)?);
    }
    if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
        tls = tls.client_identity_pem(
            TlsParams::read("tls_cert", cert)?,
            TlsParams::read("tls_key", key)?,
        );
    }
    if let Some(domain) = domain {
        tls = tls.domain(domain);
    }
    Ok(config.tls(tls))
}

#[cfg(not(feature = "tls"))]
fn apply_tls(
    config: EtcdConfig,
    tls: bool,
    settings: TlsParams,
    domain: Option<String>,
) -> Result<EtcdConfig> {
    if tls || settings.any() || settings.key.is_some() || domain.is_some() {
        return Err(Error::invalid(
            "etcd URL",
            "TLS is not compiled in; enable the `tls` feature of backend-etcd",
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn problem(url: &str) -> String {
        match parse(url) {
            Err(Error::InvalidArgument { what, problem }) => format!("{what}: {problem}"),
            other => panic!("expected InvalidArgument for {url}, got {other:?}"),
        }
    }

    #[test]
    fn full_url() {
        let c =
            parse("etcd://alice:p%40ss@h1:2379,h2,h3:2381/app/locks?ttl=3s&timeout=2s").unwrap();
        assert_eq!(
            c.endpoint_urls().unwrap(),
            ["http://h1:2379", "http://h2:2379", "http://h3:2381"]
        );
        assert_eq!(c.credentials, Some(("alice".into(), "p@ss".into())));
        assert_eq!(c.prefix(), "app/locks/");
        assert_eq!(c.ttl_value(), Duration::from_secs(3));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
    }

    #[test]
    fn plain_url() {
        let c = parse("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(c.endpoint_urls().unwrap(), ["http://127.0.0.1:2379"]);
        assert_eq!(c.prefix(), "");
        assert_eq!(c.credentials, None);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(problem("etcd://h:1?tll=3s").contains("`tll`"));
        assert!(problem("etcd://h:1?ttl=0s").contains("out of range"));
        assert!(problem("etcd://h:1?ttl=1500ms").contains("whole number"));
        for (url, says) in [
            ("etcd://,h:1", "empty entry"),
            ("etcd://h:x", "h:x"),
            ("redis://h:1", "not one of etcd, etcds"),
            ("etcd://h:1?ca=a.pem&tls_ca=b.pem", "given twice"),
            ("etcds://h:1?tls_insecure=true", "tls_insecure"),
        ] {
            let text = problem(url);
            assert!(text.contains(says), "{url}: {text}");
        }
        assert!(problem("etcd://:pw@h:1").contains("needs a user"));
        assert!(problem("etcd://a:b@h:1?user=c").contains("twice"));
        assert!(problem("etcd://h:0").contains("port 0"));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_settings_need_etcds() {
        assert!(problem("etcd://h:1?domain=x").contains("etcds://"));
        let c = parse("etcds://h:1?domain=etcd.local").unwrap();
        assert_eq!(c.endpoint_urls().unwrap(), ["https://h:1"]);
        assert!(problem("etcds://h:1?ca=/nonexistent/ca.pem").contains("cannot read"));
        assert!(problem("etcds://h:1?tls_ca=/nonexistent/ca.pem").contains("cannot read"));
        assert!(problem("etcd://h:1?tls_ca=/x.pem").contains("etcds://"));
    }
}
