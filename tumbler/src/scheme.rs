//! The scheme of a store URL: found, normalised, and near misses answered with what to write.
//!
//! Schemes are case-insensitive (RFC 3986), so `REDIS://` is `redis://`; whitespace around the
//! URL (a trailing newline from `$(cat url.txt)`) is dropped. A URL without `://` that starts
//! with a known scheme (`redis:host:6379`), a bare `host:port` on a store's well-known port and
//! `http://`/`https://` each get an error that says what to write instead.

use tumbler_core::{Error, Result};

/// Every scheme `tumbler_locks::connect` knows, whether or not its feature is enabled.
pub(crate) const KNOWN: &[&str] = &[
    "memory",
    "redis",
    "rediss",
    "redis+redlock",
    "rediss+redlock",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
    "zk",
    "zookeeper",
    "zk+tls",
    "zookeeper+tls",
    "etcd",
    "etcds",
    "consul",
    "consuls",
];

/// Well-known ports and the scheme of the store that listens there.
const PORTS: &[(&str, &str)] = &[
    ("6379", "redis"),
    ("2181", "zk"),
    ("2379", "etcd"),
    ("8500", "consul"),
];

const EXAMPLES: &str =
    "memory://name, redis://host:6379, zk://host:2181, etcd://host:2379 or consul://host:8500";

/// A URL split at its scheme.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SchemeUrl {
    /// The scheme in lower case, e.g. `redis+redlock`.
    pub scheme: String,
    /// The whole URL, trimmed, with the scheme in lower case: what the backends parse.
    pub url: String,
}

impl SchemeUrl {
    /// What follows `scheme://`.
    pub fn rest(&self) -> &str {
        &self.url[self.scheme.len() + 3..]
    }
}

/// Splits `url` at `://`, or says what to write instead.
pub(crate) fn split(url: &str) -> Result<SchemeUrl> {
    let url = url.trim();
    if url.is_empty() {
        return Err(Error::invalid(
            "URL",
            format!("the URL is empty; write e.g. {EXAMPLES}"),
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::invalid("URL", no_scheme(url)));
    };
    let scheme = scheme.to_ascii_lowercase();
    if !KNOWN.contains(&scheme.as_str()) {
        return Err(Error::invalid("URL scheme", unknown(&scheme)));
    }
    Ok(SchemeUrl {
        url: format!("{scheme}://{rest}"),
        scheme,
    })
}

fn no_scheme(url: &str) -> String {
    let shown = shorten(url);
    if let Some((head, tail)) = url.split_once(':') {
        let head = head.to_ascii_lowercase();
        if KNOWN.contains(&head.as_str()) {
            let tail = tail.trim_start_matches('/');
            return format!(
                "{shown:?} lacks the `//` after `{head}:`; write {head}://{}",
                shorten(tail)
            );
        }
        let port = tail.split(['/', '?']).next().unwrap_or_default();
        if let Some((_, scheme)) = PORTS.iter().find(|(p, _)| *p == port) {
            return format!(
                "{shown:?} has no scheme; port {port} is usually {scheme}, so write \
                 {scheme}://{shown}"
            );
        }
    }
    format!("{shown:?} has no scheme; write e.g. {EXAMPLES}")
}

fn unknown(scheme: &str) -> String {
    let shown = shorten(scheme);
    match scheme {
        "http" | "https" => format!(
            "{shown:?} is not a store scheme: name the store instead, e.g. consul://host:8500 \
             (consuls:// for https) or etcd://host:2379 (etcds:// for TLS)"
        ),
        _ => format!(
            "{shown:?} is not a known store; use one of {}",
            KNOWN.join(", ")
        ),
    }
}

/// At most 100 characters of user input in a message.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 100;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(url: &str) -> String {
        match split(url) {
            Err(Error::InvalidArgument { problem, .. }) => problem,
            other => panic!("{url:?}: expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn schemes_are_case_insensitive_and_whitespace_is_dropped() {
        for url in ["REDIS://h:1", "Redis://h:1", " redis://h:1\n"] {
            let split = split(url).expect(url);
            assert_eq!(split.scheme, "redis");
            assert_eq!(split.url, "redis://h:1");
            assert_eq!(split.rest(), "h:1");
        }
        assert_eq!(
            split("Redis+Redlock://a:1,b:2").unwrap().url,
            "redis+redlock://a:1,b:2"
        );
    }

    #[test]
    fn near_misses_say_what_to_write() {
        assert!(problem("").contains("empty"));
        assert!(problem("   ").contains("empty"));
        assert!(problem("redis:/127.0.0.1:6379").contains("write redis://127.0.0.1:6379"));
        assert!(problem("redis:127.0.0.1:6379").contains("write redis://127.0.0.1:6379"));
        assert!(problem("ZK:h:2181").contains("write zk://h:2181"));
        assert!(problem("localhost:6379").contains("write redis://localhost:6379"));
        assert!(problem("10.0.0.1:2181").contains("write zk://10.0.0.1:2181"));
        assert!(problem("h:2379").contains("write etcd://h:2379"));
        assert!(problem("h:8500").contains("write consul://h:8500"));
        assert!(problem("h:1234").contains("has no scheme; write e.g."));
        assert!(problem("http://h:8500").contains("consul://host:8500"));
        assert!(problem("https://h:2379").contains("etcds://"));
        assert!(problem("mysql://x").contains("\"mysql\" is not a known store"));
    }

    #[test]
    fn long_input_is_not_echoed_whole() {
        let long = "x".repeat(10_000);
        assert!(problem(&format!("{long}://h")).len() < 400);
        assert!(problem(&long).len() < 400);
    }
}
