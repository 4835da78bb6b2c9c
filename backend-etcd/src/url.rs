//! Parsing `etcd://` and `etcds://` URLs into an [`EtcdConfig`].

use lockcore::params::Params;
use lockcore::{Error, Result};

use crate::config::EtcdConfig;

const KNOWN: &[&str] = &[
    "ttl",
    "timeout",
    "connect_timeout",
    "user",
    "password",
    "ca",
    "cert",
    "key",
    "domain",
];

/// Parses `etcd://[user:password@]host:port[,host:port...][/key/prefix][?params]`.
pub(crate) fn parse(url: &str) -> Result<EtcdConfig> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        Error::invalid(
            "etcd URL",
            format!("{url:?} has no scheme; write etcd://host:2379 or etcds://host:2379"),
        )
    })?;
    let tls = match scheme {
        "etcd" => false,
        "etcds" => true,
        other => {
            return Err(Error::invalid(
                "etcd URL",
                format!("scheme {other:?} is not etcd or etcds"),
            ))
        }
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let endpoints: Vec<&str> = hosts.split(',').collect();
    if endpoints.iter().any(|h| h.is_empty()) {
        return Err(Error::invalid(
            "etcd URL",
            format!("{url:?} has an empty host; write host:port[,host:port...]"),
        ));
    }
    let mut config = EtcdConfig::new(endpoints);

    let prefix = decode("etcd URL path", path.trim_start_matches('/'))?;
    if !prefix.is_empty() {
        let prefix = if prefix.ends_with('/') {
            prefix
        } else {
            format!("{prefix}/")
        };
        config = config.key_prefix(prefix);
    }

    let mut params = Params::new(scheme, query_pairs(query)?);
    let mut user = None;
    let mut password = None;
    if let Some(userinfo) = userinfo {
        let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        user = Some(decode("etcd URL user", u)?);
        password = Some(decode("etcd URL password", p)?);
    }
    if let Some(u) = params.text("user") {
        user = Some(u);
    }
    if let Some(p) = params.text("password") {
        password = Some(p);
    }
    match (user, password) {
        (Some(u), p) if !u.is_empty() => config = config.credentials(u, p.unwrap_or_default()),
        (None, None) => {}
        _ => {
            return Err(Error::invalid(
                "etcd URL credentials",
                "a password needs a user; write etcd://user:password@host:2379",
            ))
        }
    }
    if let Some(ttl) = params.duration("ttl")? {
        config = config.ttl(ttl)?;
    }
    if let Some(timeout) = params.duration("timeout")? {
        config = config.request_timeout(timeout)?;
    }
    if let Some(timeout) = params.duration("connect_timeout")? {
        config = config.connect_timeout(timeout)?;
    }
    let tls_params = [
        params.text("ca"),
        params.text("cert"),
        params.text("key"),
        params.text("domain"),
    ];
    config = apply_tls(config, tls, tls_params)?;
    params.finish(KNOWN)?;
    config.endpoint_urls()?;
    Ok(config)
}

#[cfg(feature = "tls")]
fn apply_tls(
    config: EtcdConfig,
    tls: bool,
    [ca, cert, key, domain]: [Option<String>; 4],
) -> Result<EtcdConfig> {
    let any = ca.is_some() || cert.is_some() || key.is_some() || domain.is_some();
    if !tls {
        if any {
            return Err(Error::invalid(
                "etcd URL",
                "ca, cert, key and domain are TLS settings; use an etcds:// URL",
            ));
        }
        return Ok(config);
    }
    let mut settings = crate::EtcdTls::new();
    if let Some(ca) = ca {
        settings = settings.ca_file(ca)?;
    }
    match (cert, key) {
        (Some(cert), Some(key)) => settings = settings.client_identity_files(cert, key)?,
        (None, None) => {}
        _ => {
            return Err(Error::invalid(
                "etcds URL",
                "a client certificate needs both cert= and key=",
            ))
        }
    }
    if let Some(domain) = domain {
        settings = settings.domain(domain);
    }
    Ok(config.tls(settings))
}

#[cfg(not(feature = "tls"))]
fn apply_tls(config: EtcdConfig, tls: bool, params: [Option<String>; 4]) -> Result<EtcdConfig> {
    if tls || params.iter().any(Option::is_some) {
        return Err(Error::invalid(
            "etcd URL",
            "TLS is not compiled in; enable the `tls` feature of backend-etcd",
        ));
    }
    Ok(config)
}

/// Splits `a=1&b=2` into percent-decoded pairs.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => Ok((decode("etcd URL query", k)?, decode("etcd URL query", v)?)),
            None => Err(Error::invalid(
                "etcd URL query",
                format!("{part:?} has no value; write key=value"),
            )),
        })
        .collect()
}

/// Percent-decodes `text` (`%2F` → `/`).
fn decode(what: &str, text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => {
                    return Err(Error::invalid(
                        what,
                        format!("{text:?} has a % not followed by two hex digits"),
                    ))
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| Error::invalid(what, format!("{text:?} does not decode to UTF-8")))
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
        assert!(problem("etcd://,h:1").contains("empty host"));
        assert!(problem("etcd://h:x").contains("not a number"));
        assert!(problem("redis://h:1").contains("not etcd"));
        assert!(problem("etcd://h:1/%zz").contains("hex digits"));
        assert!(problem("etcd://:pw@h:1").contains("needs a user"));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_settings_need_etcds() {
        assert!(problem("etcd://h:1?domain=x").contains("etcds://"));
        let c = parse("etcds://h:1?domain=etcd.local").unwrap();
        assert_eq!(c.endpoint_urls().unwrap(), ["https://h:1"]);
        assert!(problem("etcds://h:1?ca=/nonexistent/ca.pem").contains("cannot read"));
    }
}
