//! Parsing of `redis://`, `rediss://`, `redis+redlock://`, `rediss+redlock://`,
//! `redis+cluster://`, `rediss+cluster://` and `redis+sentinel://` URLs.

use tumbler_core::tls::TlsParams;
use tumbler_core::url::{Credentials, StoreUrl};
use tumbler_core::{Error, Result};

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
    "tls_cert",
    "tls_key",
    "tls_insecure",
    "user",
    "password",
    "min_replicas",
    "min_replicas_timeout",
    "sentinel_user",
    "sentinel_password",
];

impl RedisConfig {
    /// Parses a `redis://`, `rediss://`, `redis+redlock://`, `redis+cluster://` or
    /// `redis+sentinel://` URL, or one of their `rediss` forms (see the crate docs for the
    /// grammar). Errors are [`Error::InvalidArgument`] naming the bad part.
    pub fn from_url(url: &str) -> Result<Self> {
        parse(url)
    }
}

/// The URL schemes of this backend.
const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis+redlock",
    "rediss+redlock",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
];

/// The port of a sentinel named without one.
const SENTINEL_PORT: u16 = 26379;

/// Parses a Redis URL into a [`RedisConfig`] ([`StoreUrl`] does the grammar, the
/// percent-decoding and the credential rules); every error names the bad part.
pub(crate) fn parse(url: &str) -> Result<RedisConfig> {
    let bad = |problem: String| Error::invalid("redis URL", problem);
    let sentinel = url
        .split_once("://")
        .is_some_and(|(scheme, _)| scheme.ends_with("+sentinel"));
    let default_port = if sentinel { SENTINEL_PORT } else { 6379 };
    let mut parsed = StoreUrl::parse(url, SCHEMES, default_port)?;
    let scheme = parsed.scheme.clone();
    let tls = scheme.starts_with("rediss");
    let redlock = scheme.ends_with("+redlock");
    let cluster = scheme.ends_with("+cluster");
    if sentinel {
        return parse_sentinel(parsed, tls);
    }
    if !redlock && !cluster && parsed.hosts.len() > 1 {
        return Err(bad(format!(
            "{} hosts in a {scheme}:// URL; use {scheme}+cluster:// for the nodes of a Redis Cluster, or {scheme}+redlock:// for Redlock over independent masters",
            parsed.hosts.len()
        )));
    }
    let db = match parsed.path.trim_end_matches('/') {
        "" => 0,
        text if cluster => {
            return Err(bad(format!(
                "path /{text}: a Redis Cluster has only database 0; leave the path out"
            )))
        }
        text => database(text, "")?,
    };
    let (username, password) = login(&mut parsed)?;
    let nodes: Vec<RedisNode> = parsed
        .hosts
        .iter()
        .map(|host| {
            let mut node = RedisNode::new(host.host.clone(), host.port).db(db).tls(tls);
            node.username = username.clone();
            node.password = password.clone();
            node
        })
        .collect();
    let mut config = if redlock {
        RedisConfig::redlock(nodes)
    } else if cluster {
        RedisConfig::cluster(nodes)
    } else {
        RedisConfig::single(
            nodes
                .into_iter()
                .next()
                .ok_or_else(|| bad("no host".into()))?,
        )
    };
    config = common_params(config, &mut parsed)?;
    parsed.finish(KNOWN)?;
    Ok(config)
}

/// The database number at the end of a URL's path (`before` is the path before it, e.g.
/// `/MASTER_NAME`).
fn database(text: &str, before: &str) -> Result<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|db| *db >= 0)
        .ok_or_else(|| {
            Error::invalid(
                "redis URL",
                format!(
                    "path {before}/{text}: {text} is not a database number; write e.g. {before}/0 or leave it out"
                ),
            )
        })
}

/// `redis+sentinel://[[USER]:PASSWORD@]S1[:P1],S2[:P2],.../MASTER_NAME[/DB][?PARAMS]`: the
/// credentials and the database are the master's; `sentinel_user` / `sentinel_password` log
/// in to the sentinels.
fn parse_sentinel(mut parsed: StoreUrl, tls: bool) -> Result<RedisConfig> {
    let scheme = parsed.scheme.clone();
    let path = parsed.path.trim_end_matches('/').to_owned();
    let (master_name, db) = match path.split_once('/') {
        Some((name, db)) => (name.to_owned(), Some(db.to_owned())),
        None => (path.clone(), None),
    };
    if master_name.is_empty() {
        return Err(Error::invalid(
            "redis URL",
            format!(
                "a {scheme}:// URL names no master; write the name the sentinels monitor as its path: {scheme}://S1:26379,S2:26379/MASTER_NAME"
            ),
        ));
    }
    let db = match db {
        None => 0,
        Some(text) => database(&text, &format!("/{master_name}"))?,
    };
    let (username, password) = login(&mut parsed)?;
    let params = parsed.params();
    let sentinel_user = params.text("sentinel_user");
    let sentinel_password = params.text("sentinel_password");
    let sentinels: Vec<RedisNode> = parsed
        .hosts
        .iter()
        .map(|host| {
            let mut node = RedisNode::new(host.host.clone(), host.port).tls(tls);
            node.username = sentinel_user.clone();
            node.password = sentinel_password.clone();
            node
        })
        .collect();
    if sentinel_user.is_some() && sentinel_password.is_none() {
        return Err(Error::invalid(
            "sentinel_user",
            "sentinel_user needs sentinel_password too",
        ));
    }
    let mut config = RedisConfig::sentinel(sentinels, master_name).master_db(db);
    config = match (username, password) {
        (Some(user), password) => config.master_user(user, password.unwrap_or_default()),
        (None, Some(password)) => config.master_password(password),
        (None, None) => config,
    };
    config = common_params(config, &mut parsed)?;
    parsed.finish(KNOWN)?;
    Ok(config)
}

/// `user@` logs in as that ACL user (empty password), `:password@` as the default user.
fn login(parsed: &mut StoreUrl) -> Result<(Option<String>, Option<String>)> {
    Ok(match parsed.credentials()? {
        None => (None, None),
        Some(Credentials { user, password }) => match user.filter(|u| !u.is_empty()) {
            Some(user) => (Some(user), Some(password.unwrap_or_default())),
            None => (None, password),
        },
    })
}

/// The parameters every form of Redis URL takes.
fn common_params(mut config: RedisConfig, parsed: &mut StoreUrl) -> Result<RedisConfig> {
    let params = parsed.params();
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
    let tls_params = TlsParams::from_params(params, &[])?;
    if tls_params.cert.is_some() || tls_params.key.is_some() {
        return Err(Error::invalid(
            "tls_cert",
            "client certificates are not supported by the Redis backend yet; use ACL credentials",
        ));
    }
    if let Some(path) = tls_params.ca {
        config = config.tls_ca_file(path);
    }
    config = config.tls_insecure(tls_params.insecure);
    let params = parsed.params();
    if let Some(text) = params.text("min_replicas") {
        let n = text.parse::<u32>().map_err(|_| {
            Error::invalid(
                "min_replicas",
                format!(
                    "min_replicas={text} is not a number of replicas; write e.g. min_replicas=1"
                ),
            )
        })?;
        config = config.min_replicas(n);
    }
    if let Some(t) = params.duration("min_replicas_timeout")? {
        config = config.min_replicas_timeout(t);
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
        let c = parse("redis://h?user=alice&password=p%26w").unwrap();
        assert_eq!(
            c.nodes,
            vec![RedisNode::new("h", 6379).user("alice", "p&w")]
        );
    }

    #[test]
    fn sentinel_urls() {
        let c = parse(
            "redis+sentinel://app:pw@s1,s2:26380,[::1]:7/mymaster/3?min_replicas=1&sentinel_password=sp&ttl=5s",
        )
        .unwrap();
        let spec = c.sentinel.clone().expect("sentinel mode");
        assert_eq!(spec.master_name, "mymaster");
        assert_eq!(spec.master.db, 3);
        assert_eq!(spec.master.username.as_deref(), Some("app"));
        assert_eq!(spec.master.password.as_deref(), Some("pw"));
        assert_eq!(
            c.nodes,
            vec![
                RedisNode::new("s1", 26379).password("sp"),
                RedisNode::new("s2", 26380).password("sp"),
                RedisNode::new("::1", 7).password("sp"),
            ]
        );
        assert_eq!(c.min_replicas, 1);
        assert_eq!(c.ttl, Duration::from_secs(5));
        assert!(c.validate().is_ok());
        let c = parse("redis://h?min_replicas=2&min_replicas_timeout=100ms").unwrap();
        let settings = c.validate().unwrap();
        assert_eq!(settings.min_replicas, 2);
        assert_eq!(settings.min_replicas_timeout, Duration::from_millis(100));
    }

    #[test]
    fn cluster_urls() {
        let c = parse("redis+cluster://u:p@h1:7000,h2:7001?ttl=5s&min_replicas=1").unwrap();
        assert!(c.cluster && !c.redlock);
        assert_eq!(
            c.nodes,
            vec![
                RedisNode::new("h1", 7000).user("u", "p"),
                RedisNode::new("h2", 7001).user("u", "p"),
            ]
        );
        let settings = c.validate().unwrap();
        assert!(settings.cluster);
        assert_eq!(settings.min_replicas, 1);
        assert!(parse("redis+cluster://h1").unwrap().validate().is_ok());
        assert!(problem("redis+cluster://h1/2").contains("only database 0"));
        assert!(invalid("redis+cluster://localhost:7000,127.0.0.1:7000").contains("listed twice"));
        assert!(problem("redis+cluster://h1,,h2").contains("host"));
        assert!(problem("redis://h1,h2").contains("redis+cluster"));
    }

    fn invalid(url: &str) -> String {
        match parse(url).and_then(|c| c.validate().map(|_| ())) {
            Err(Error::InvalidArgument { what, problem }) => format!("{what}: {problem}"),
            other => panic!("expected InvalidArgument for {url}, got {other:?}"),
        }
    }

    #[test]
    fn bad_sentinel_and_min_replicas_settings_say_what_to_fix() {
        assert!(problem("redis+sentinel://s1,s2").contains("names no master"));
        assert!(problem("redis+sentinel://s1/").contains("names no master"));
        assert!(problem("redis+sentinel://s1/m/x").contains("database number"));
        assert!(problem("redis+sentinel://s1,,s2/m").contains("host"));
        assert!(problem("redis+sentinel://s1:0/m").contains("port"));
        assert!(invalid("redis+sentinel://s1,s1:26379/m").contains("same server"));
        assert!(invalid("rediss+sentinel://s1/m").contains("not supported"));
        assert!(problem("redis://h?min_replicas=-1").contains("min_replicas=-1"));
        assert!(problem("redis://h?min_replicas=two").contains("min_replicas"));
        assert!(invalid("redis://h?min_replicas=1&min_replicas_timeout=10s")
            .contains("below the request_timeout"));
        assert!(invalid("redis+redlock://a,b,c?min_replicas=1").contains("Redlock"));
        assert!(problem("redis+sentinel://s1/m?sentinel_user=u").contains("sentinel_password"));
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
        assert!(problem("redis://h?ttl").contains("ttl"));
        assert!(problem("memcached://h").contains("rediss+redlock"));
        assert!(problem("redis://::1").contains("::1"));
        assert!(problem("redis://u:p@h?user=v").contains("twice"));
        assert!(problem("redis://:p@h?password=q").contains("twice"));
    }
}
