//! Parsing of `redis://`, `rediss://`, `redis+redlock://` and `rediss+redlock://` URLs.

use lockcore::params::Params;
use lockcore::{Error, Result};

use crate::config::{RedisConfig, RedisNode};

/// The query parameters a Redis URL may carry.
const KNOWN: &[&str] = &[
    "ttl",
    "drift",
    "prefix",
    "connect_timeout",
    "request_timeout",
    "retry_delay",
    "restart_delay",
    "tls_ca",
    "tls_insecure",
];

/// Parses a Redis URL into a [`RedisConfig`]; every error names the bad part.
pub(crate) fn parse(url: &str) -> Result<RedisConfig> {
    let bad = |problem: String| Error::invalid("redis URL", problem);
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad(format!(
            "{url:?} has no scheme; write e.g. redis://127.0.0.1:6379"
        ))
    })?;
    let (tls, redlock) = match scheme {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+redlock" => (false, true),
        "rediss+redlock" => (true, true),
        other => {
            return Err(bad(format!(
                "scheme {other:?} is not a Redis scheme; use redis, rediss, redis+redlock or rediss+redlock"
            )))
        }
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if let Some(fragment) = rest.find('#') {
        return Err(bad(format!(
            "unexpected '#' at {:?}; percent-encode it (%23) in a password",
            &rest[fragment..]
        )));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = decode(user).map_err(|e| bad(format!("user name: {e}")))?;
            let pass = pass
                .map(decode)
                .transpose()
                .map_err(|e| bad(format!("password: {e}")))?;
            match (user.is_empty(), pass) {
                (true, None) => (None, None),
                (true, Some(p)) => (None, Some(p)),
                (false, p) => (Some(user), Some(p.unwrap_or_default())),
            }
        }
    };
    let db = match path.trim_end_matches('/') {
        "" => 0,
        text => text
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| {
                bad(format!(
                    "path /{text} is not a database number; write e.g. /0 or leave it out"
                ))
            })?,
    };
    if hosts.is_empty() {
        return Err(bad(format!(
            "{url:?} names no host; write e.g. redis://127.0.0.1:6379"
        )));
    }
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let (host, port) = split_host_port(host).map_err(bad)?;
        let mut node = RedisNode::new(host, port).db(db).tls(tls);
        node.username = username.clone();
        node.password = password.clone();
        nodes.push(node);
    }
    if !redlock && nodes.len() > 1 {
        return Err(bad(format!(
            "{} hosts in a {scheme}:// URL; use {scheme}+redlock:// for Redlock over several masters",
            nodes.len()
        )));
    }
    let mut config = if redlock {
        RedisConfig::redlock(nodes)
    } else {
        RedisConfig::single(nodes.remove(0))
    };
    let pairs = query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => Ok((
                decode(k).map_err(|e| bad(format!("parameter {k:?}: {e}")))?,
                decode(v).map_err(|e| bad(format!("parameter {k:?}: {e}")))?,
            )),
            None => Err(Error::invalid(
                "redis URL query",
                format!("{part:?} has no value; write key=value"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut params = Params::new(scheme, pairs);
    if let Some(ttl) = params.duration("ttl")? {
        config = config.ttl(ttl);
    }
    if let Some(drift) = params.duration("drift")? {
        config = config.drift(drift);
    }
    if let Some(prefix) = params.text("prefix") {
        config = config.prefix(prefix);
    }
    if let Some(t) = params.duration("connect_timeout")? {
        config = config.connect_timeout(t);
    }
    if let Some(t) = params.duration("request_timeout")? {
        config = config.request_timeout(t);
    }
    if let Some(t) = params.duration("retry_delay")? {
        config = config.retry_delay(t);
    }
    if let Some(t) = params.duration("restart_delay")? {
        config = config.restart_delay(t);
    }
    if let Some(path) = params.text("tls_ca") {
        config = config.tls_ca_file(path);
    }
    if let Some(yes) = params.bool("tls_insecure")? {
        config = config.tls_insecure(yes);
    }
    params.finish(KNOWN)?;
    Ok(config)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 6379.
fn split_host_port(text: &str) -> std::result::Result<(String, u16), String> {
    let port_of = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} of {text:?} is not a port number (1-65535)"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text:?} opens '[' without closing it"))?;
        let port = match after {
            "" => 6379,
            p => port_of(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after [{host}]"))?,
            )?,
        };
        return Ok((host.to_owned(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, port_of(p)?),
        None => (text, 6379),
    };
    if host.is_empty() {
        return Err(format!("{text:?} has an empty host name"));
    }
    if host.contains(':') {
        return Err(format!(
            "{text:?}: write IPv6 addresses in brackets, e.g. [::1]:6379"
        ));
    }
    Ok((host.to_owned(), port))
}

/// Percent-decodes `text` (UTF-8).
fn decode(text: &str) -> std::result::Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at {:?}", &text[i..]))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent escapes do not decode to UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn problem(url: &str) -> String {
        match parse(url) {
            Err(Error::InvalidArgument { what, problem }) => format!("{what}: {problem}"),
            Err(other) => panic!("expected InvalidArgument for {url}, got {other}"),
            Ok(c) => panic!("expected an error for {url}, got {c:?}"),
        }
    }

    #[test]
    fn single_server_urls() {
        let c = parse("redis://127.0.0.1:7000/2?ttl=2s&prefix=app%3A").unwrap();
        assert_eq!(c.nodes, vec![RedisNode::new("127.0.0.1", 7000).db(2)]);
        assert_eq!(c.ttl, Duration::from_secs(2));
        assert_eq!(c.prefix, "app:");
        assert!(!c.redlock);
        let c = parse("rediss://alice:p%40ss@cache.example").unwrap();
        assert_eq!(
            c.nodes,
            vec![RedisNode::new("cache.example", 6379)
                .user("alice", "p@ss")
                .tls(true)]
        );
        let c = parse("redis://:only-pass@[::1]:6380").unwrap();
        assert_eq!(
            c.nodes,
            vec![RedisNode::new("::1", 6380).password("only-pass")]
        );
        assert_eq!(c.nodes[0].display_addr(), "redis://[::1]:6380");
    }

    #[test]
    fn redlock_urls() {
        let c = parse("redis+redlock://u:p@h1:1,h2:2,h3?retry_delay=20ms").unwrap();
        assert!(c.redlock);
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.nodes[2], RedisNode::new("h3", 6379).user("u", "p"));
        assert_eq!(c.retry_delay, Duration::from_millis(20));
    }

    #[test]
    fn bad_urls_say_what_to_fix() {
        assert!(problem("redis://").contains("no host"));
        assert!(problem("redis://h:0").contains("port"));
        assert!(problem("redis://h:99999").contains("port"));
        assert!(problem("redis://h1,h2").contains("redis+redlock"));
        assert!(problem("redis://h/x").contains("database"));
        assert!(problem("redis://h?ttl=soon").contains("ttl=soon"));
        assert!(problem("redis://h?tll=1s").contains("`tll`"));
        assert!(problem("redis://h?ttl").contains("no value"));
        assert!(problem("memcached://h").contains("not a Redis scheme"));
        assert!(problem("redis://::1").contains("brackets"));
        assert!(problem("redis://u:%zz@h").contains("password"));
    }
}
