//! One parser for every store's URL, on the `url` crate:
//! `scheme://[user[:password]@]host[:port][,host[:port]…][/path][?key=value&…]`.
//!
//! User info, path and parameters are percent-decoded; every host gets a port (the store's
//! default where none is given; port 0 is refused); credentials may come from the user info or
//! from `?user=`/`?password=`, not both. Store-specific settings are read from
//! [`StoreUrl::params`] and the rest refused by [`StoreUrl::finish`].
//!
//! ```
//! use tumbler_core::url::StoreUrl;
//! let mut url = StoreUrl::parse("etcd://app:s%40cret@10.0.0.1,10.0.0.2:2380/team?ttl=10s", &["etcd"], 2379)?;
//! assert_eq!(url.hosts[1].to_string(), "10.0.0.2:2380");
//! assert_eq!(url.hosts[0].port, 2379);
//! assert_eq!(url.path, "team");
//! let creds = url.credentials()?.unwrap();
//! assert_eq!((creds.user.as_deref(), creds.password.as_deref()), (Some("app"), Some("s@cret")));
//! assert_eq!(url.params().duration("ttl")?, Some(std::time::Duration::from_secs(10)));
//! url.finish(&["ttl"])?;
//! # Ok::<(), tumbler_core::Error>(())
//! ```

use std::fmt;

use crate::error::{Error, Result};
use crate::params::Params;

/// One `host:port` of a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host name or address, without brackets for IPv6.
    pub host: String,
    /// The port (never 0).
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Credentials from a URL.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// The user name, if given (Redis allows a password alone: `redis://:pw@host`).
    pub user: Option<String>,
    /// The password, if given.
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// A parsed store URL.
#[derive(Debug, Clone)]
pub struct StoreUrl {
    /// The scheme as given, e.g. `redis` or `rediss`.
    pub scheme: String,
    /// Every host, in the order given.
    pub hosts: Vec<HostPort>,
    /// The percent-decoded path without its leading `/` (empty when none).
    pub path: String,
    userinfo: Credentials,
    params: Params,
}

impl StoreUrl {
    /// Parses `text`, whose scheme must be one of `schemes`; hosts without a port get
    /// `default_port`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming what is wrong: an unknown scheme, no host, an empty
    /// host in a list, a bad or zero port, bad percent-encoding.
    pub fn parse(text: &str, schemes: &[&str], default_port: u16) -> Result<StoreUrl> {
        let bad = |problem: String| Error::invalid("store URL", problem);
        let shown = shorten(text);
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad(format!(
                "{shown:?} has no scheme; write it as {}://host:port",
                schemes.first().copied().unwrap_or("scheme")
            )));
        };
        if !schemes.contains(&scheme) {
            return Err(bad(format!(
                "scheme {:?} is not one of {}",
                shorten(scheme),
                schemes.join(", ")
            )));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if tail.starts_with('#') || tail.contains('#') {
            return Err(bad(format!("{shown:?} has a fragment (#…); remove it")));
        }
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((info, hosts)) => (Some(info), hosts),
            None => (None, authority),
        };
        if hostlist.is_empty() {
            return Err(bad(format!(
                "{shown:?} names no host; write {scheme}://host:port"
            )));
        }
        let mut hosts = Vec::new();
        for host in hostlist.split(',') {
            hosts.push(parse_host(host, default_port).map_err(&bad)?);
        }
        let userinfo = match userinfo {
            Some(info) => parse_userinfo(info).map_err(&bad)?,
            None => Credentials::default(),
        };
        // The URL parser would resolve `.` and `..` (`/base/../x` becomes `/x`): a store
        // path is used as written, so a dot segment is refused instead of silently dropped.
        let raw_path = &tail[..tail.find('?').unwrap_or(tail.len())];
        if let Some(dots) = raw_path.split('/').find(|segment| {
            matches!(
                segment.to_ascii_lowercase().replace("%2e", ".").as_str(),
                "." | ".."
            )
        }) {
            return Err(bad(format!(
                "{shown:?}: the path has a {dots:?} segment; write the path without `.` or `..` segments"
            )));
        }
        let rest = url::Url::parse(&format!("tumbler://h{tail}"))
            .map_err(|e| bad(format!("{shown:?}: {e}")))?;
        let path = decode(rest.path().trim_start_matches('/')).map_err(&bad)?;
        let pairs = rest
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<Vec<_>>();
        Ok(StoreUrl {
            scheme: scheme.to_owned(),
            hosts,
            path,
            userinfo,
            params: Params::new(scheme, pairs),
        })
    }

    /// The credentials, from the user info or from `?user=` / `?password=`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when both places give credentials: keep one.
    pub fn credentials(&mut self) -> Result<Option<Credentials>> {
        let from_params = Credentials {
            user: self.params.text("user"),
            password: self.params.text("password"),
        };
        let in_info = self.userinfo.user.is_some() || self.userinfo.password.is_some();
        let in_params = from_params.user.is_some() || from_params.password.is_some();
        match (in_info, in_params) {
            (true, true) => Err(Error::invalid(
                "credentials",
                "given twice, in the URL's user info (user:password@) and as ?user=/?password=; \
                 keep one of them",
            )),
            (true, false) => Ok(Some(self.userinfo.clone())),
            (false, true) => Ok(Some(from_params)),
            (false, false) => Ok(None),
        }
    }

    /// The query parameters, for store-specific settings.
    pub fn params(&mut self) -> &mut Params {
        &mut self.params
    }

    /// Refuses any parameter not read yet; `known` lists the store's parameters for the message.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the first unknown parameter.
    pub fn finish(self, known: &[&str]) -> Result<()> {
        self.params.finish(known)
    }

    /// Refuses a host that appears twice, also under another name for the same machine
    /// (`127.0.0.1`, `localhost`, `[::1]`); `what` names the list in the message.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming both spellings.
    pub fn refuse_duplicate_hosts(&self, what: &str) -> Result<()> {
        for (i, a) in self.hosts.iter().enumerate() {
            for b in &self.hosts[..i] {
                if a.port == b.port && same_host(&a.host, &b.host) {
                    return Err(Error::invalid(
                        what,
                        format!("{b} and {a} are the same server; list each server once"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether two host names denote the same machine for duplicate checks: equal ignoring case,
/// or both loopback (`localhost`, `127.0.0.0/8`, `::1`).
pub fn same_host(a: &str, b: &str) -> bool {
    fn norm(h: &str) -> String {
        let h = h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let loopback = h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            "loopback".into()
        } else {
            h
        }
    }
    norm(a) == norm(b)
}

fn parse_host(text: &str, default_port: u16) -> std::result::Result<HostPort, String> {
    if text.is_empty() {
        return Err("a host list has an empty entry (two commas, or a trailing comma)".into());
    }
    let parsed = url::Url::parse(&format!("tumbler://{text}"))
        .map_err(|e| format!("host {:?}: {e}", shorten(text)))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("host {:?} has no host name", shorten(text)))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // `url` accepts an empty port ("host:"); refuse it rather than guess.
    if text.ends_with(':') {
        return Err(format!("host {:?} has an empty port", shorten(text)));
    }
    let port = parsed.port().unwrap_or(default_port);
    if port == 0 {
        return Err(format!(
            "host {:?} has port 0; give the port the store listens on",
            shorten(text)
        ));
    }
    if parsed.path() != "" && parsed.path() != "/" {
        return Err(format!("host {:?} is not host:port", shorten(text)));
    }
    Ok(HostPort {
        host: decode(host)?,
        port,
    })
}

fn parse_userinfo(info: &str) -> std::result::Result<Credentials, String> {
    let (user, password) = match info.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (info, None),
    };
    Ok(Credentials {
        user: (!user.is_empty()).then(|| decode(user)).transpose()?,
        password: password.map(decode).transpose()?,
    })
}

fn decode(text: &str) -> std::result::Result<String, String> {
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(format!(
                "{:?} has a '%' that is not followed by two hex digits; write a literal '%' as %25",
                shorten(text)
            ));
        }
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            format!(
                "{:?} is not valid UTF-8 after percent-decoding",
                shorten(text)
            )
        })
}

/// At most 80 characters of `text`, for messages.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX).collect();
    format!("{head}… ({} bytes)", text.len())
}

/// `text` quoted like `{:?}`, cut to 80 characters, for messages that echo user input.
pub(crate) fn shorten_quoted(text: &str) -> String {
    format!("{:?}", shorten(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        StoreUrl::parse(text, &["redis", "rediss"], 6379)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn hosts_ports_and_ipv6() {
        let url = StoreUrl::parse("redis://a,b:7000,[::1]:7001", &["redis"], 6379).unwrap();
        let hosts: Vec<String> = url.hosts.iter().map(|h| h.to_string()).collect();
        assert_eq!(hosts, vec!["a:6379", "b:7000", "[::1]:7001"]);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(err("127.0.0.1:6379").contains("no scheme"));
        assert!(err("http://x").contains("not one of redis, rediss"));
        assert!(err("redis://").contains("names no host"));
        assert!(err("redis://a,,b").contains("empty entry"));
        assert!(err("redis://a:0").contains("port 0"));
        assert!(err("redis://a:99999").contains("host"));
        assert!(err("redis://a:").contains("empty port"));
        assert!(err("redis://a#x").contains("fragment"));
        let long = format!("redis://{}", "x".repeat(10_000));
        assert!(err(&format!("{long}:0")).len() < 400);
    }

    #[test]
    fn credentials_once() {
        let mut u = StoreUrl::parse("redis://:p%3Aw@h", &["redis"], 1).unwrap();
        let c = u.credentials().unwrap().unwrap();
        assert_eq!((c.user, c.password.as_deref()), (None, Some("p:w")));
        let mut u = StoreUrl::parse("redis://h?user=a&password=b", &["redis"], 1).unwrap();
        assert_eq!(u.credentials().unwrap().unwrap().user.as_deref(), Some("a"));
        let mut u = StoreUrl::parse("redis://x:y@h?user=a", &["redis"], 1).unwrap();
        assert!(u
            .credentials()
            .unwrap_err()
            .to_string()
            .contains("given twice"));
        let mut u = StoreUrl::parse("redis://h", &["redis"], 1).unwrap();
        assert_eq!(u.credentials().unwrap(), None);
    }

    #[test]
    fn bad_percent_escapes_are_refused() {
        assert!(err("redis://u:%zz@h").contains("two hex digits"));
        assert!(err("redis://h/a%2").contains("two hex digits"));
        let mut u = StoreUrl::parse("redis://u:100%25@h", &["redis"], 1).unwrap();
        assert_eq!(
            u.credentials().unwrap().unwrap().password.as_deref(),
            Some("100%")
        );
    }

    #[test]
    fn duplicate_hosts_under_aliases() {
        for list in [
            "a:1,a:1",
            "127.0.0.1:1,localhost:1",
            "localhost:1,[::1]:1",
            "A:1,a:1",
        ] {
            let url = StoreUrl::parse(&format!("redis://{list}"), &["redis"], 1).unwrap();
            let e = url
                .refuse_duplicate_hosts("Redlock masters")
                .unwrap_err()
                .to_string();
            assert!(e.contains("same server"), "{list}: {e}");
        }
        let url = StoreUrl::parse("redis://localhost:1,localhost:2", &["redis"], 1).unwrap();
        assert!(url.refuse_duplicate_hosts("masters").is_ok());
    }

    #[test]
    fn dot_segments_in_the_path_are_refused() {
        for url in ["zk://h/base/../x", "etcd://h/./p", "zk://h/a/%2E%2e/b"] {
            let err = StoreUrl::parse(url, &["zk", "etcd"], 1).unwrap_err();
            assert!(err.to_string().contains("segment"), "{url}: {err}");
        }
        assert_eq!(
            StoreUrl::parse("zk://h/a.b/..c", &["zk"], 1).unwrap().path,
            "a.b/..c"
        );
    }

    #[test]
    fn path_and_params_are_decoded() {
        let mut u = StoreUrl::parse("redis://h/a%20b?prefix=x%2Fy&z=1", &["redis"], 1).unwrap();
        assert_eq!(u.path, "a b");
        assert_eq!(u.params().text("prefix").as_deref(), Some("x/y"));
        let e = u.finish(&["prefix"]).unwrap_err().to_string();
        assert!(e.contains("`z`"), "{e}");
    }
}
