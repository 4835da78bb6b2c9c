//! [`ZkConfig`]: where the ensemble is, how long sessions live, credentials; and the URL parser.

use std::time::Duration;

use lockcore::params::Params;
use lockcore::{Error, Result, SharedBackend};

/// The shortest session timeout accepted (ZooKeeper servers raise short ones to 2 ticks anyway).
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(250);
/// The longest session timeout accepted.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most permits one semaphore acquisition may take: each permit is one znode (Curator's
/// InterProcessSemaphoreV2 layout), created in one transaction.
pub const MAX_PERMITS_PER_ACQUIRE: u32 = 1000;

const DEFAULT_PORT: u16 = 2181;
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How to reach a ZooKeeper ensemble and how to hold locks on it.
///
/// Build one with [`ZkConfig::new`] and the setters, or parse a URL with
/// [`ZkConfig::from_url`]; then [`ZkConfig::connect`].
///
/// ```no_run
/// # async fn demo() -> lockcore::Result<()> {
/// use std::time::Duration;
/// let locks = backend_zk::ZkConfig::new("zk1:2181,zk2:2181,zk3:2181")?
///     .base_path("/locks")?
///     .session_timeout(Duration::from_secs(6))?
///     .digest("app", "s3cret")
///     .connect()
///     .await?;
/// let guard = locks.mutex("jobs/nightly")?.lock().await?; // znode folder /locks/jobs/nightly
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ZkConfig {
    pub(crate) hosts: Vec<(String, u16)>,
    pub(crate) base: String,
    pub(crate) session_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) credentials: Option<(String, String)>,
}

impl std::fmt::Debug for ZkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkConfig")
            .field("hosts", &self.connect_string())
            .field("base", &self.base)
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_limit())
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

impl ZkConfig {
    /// A configuration for the ensemble `hosts`: `host[:port]` entries separated by commas
    /// (port 2181 when omitted). Locks live at the root, sessions last 10 s, no credentials.
    pub fn new(hosts: &str) -> Result<Self> {
        Ok(ZkConfig {
            hosts: parse_hosts(hosts)?,
            base: String::new(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
            credentials: None,
        })
    }

    /// The znode under which lock names live, e.g. `/locks` puts lock `jobs/nightly` at
    /// `/locks/jobs/nightly` (give Curator the same path to share the lock). Missing folders are
    /// created.
    pub fn base_path(mut self, path: &str) -> Result<Self> {
        self.base = parse_base(path)?;
        Ok(self)
    }

    /// The session timeout to ask the servers for (they clamp it to their
    /// `minSessionTimeout..=maxSessionTimeout`). A holder that crashes frees its locks after
    /// about this long; a holder that is cut off reports `lost()` after the timeout minus a
    /// margin of a third of it (at least one second, or half of timeouts under two seconds).
    /// Must be within [`MIN_SESSION_TIMEOUT`]..=[`MAX_SESSION_TIMEOUT`].
    pub fn session_timeout(mut self, timeout: Duration) -> Result<Self> {
        if !(MIN_SESSION_TIMEOUT..=MAX_SESSION_TIMEOUT).contains(&timeout) {
            return Err(Error::invalid(
                "session timeout",
                format!("{timeout:?} is out of range; use {MIN_SESSION_TIMEOUT:?} to {MAX_SESSION_TIMEOUT:?} (e.g. 10s)"),
            ));
        }
        self.session_timeout = timeout;
        Ok(self)
    }

    /// How long connecting (establishing a session) may take before failing (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Result<Self> {
        self.connect_timeout = check_timeout("connect timeout", timeout)?;
        Ok(self)
    }

    /// How long one request may take before it fails with a connection error (default: the
    /// session timeout). Waiting for a busy lock is not a request and has no limit here.
    pub fn request_timeout(mut self, timeout: Duration) -> Result<Self> {
        self.request_timeout = Some(check_timeout("request timeout", timeout)?);
        Ok(self)
    }

    /// Authenticates with ZooKeeper's `digest` scheme. Lock nodes are then created with an ACL
    /// that gives this user every permission and everyone else only READ, so clients without
    /// these credentials can see but not delete them. Every client of a lock must use the
    /// same credentials.
    pub fn digest(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// The connect string, `host:port,host:port`.
    pub fn connect_string(&self) -> String {
        self.hosts
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The base path (`""` for the root).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The request timeout in effect (the session timeout unless set).
    pub fn request_limit(&self) -> Duration {
        self.request_timeout.unwrap_or(self.session_timeout)
    }

    /// The address for messages: `zk://host:port,host:port/base`.
    pub fn address(&self) -> String {
        format!("zk://{}{}", self.connect_string(), self.base)
    }

    /// Connects: opens a session (failing with a typed error within the connect timeout).
    pub async fn connect(self) -> Result<SharedBackend> {
        Ok(crate::ZkBackend::connect(self).await?)
    }

    /// Parses a `zk://` (or `zookeeper://`) URL; see the crate documentation for the grammar.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("zk://")
            .or_else(|| url.strip_prefix("zookeeper://"))
            .ok_or_else(|| {
                Error::invalid(
                    "zookeeper URL",
                    format!("{url:?} must start with zk:// or zookeeper://"),
                )
            })?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let mut config = ZkConfig::new(hosts)?.base_path(path)?;
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').ok_or_else(|| {
                Error::invalid(
                    "zookeeper URL credentials",
                    "write them as zk://user:password@host:2181 (percent-encode ':' '@' '/' in them)",
                )
            })?;
            let user = percent_decode(user)?;
            if user.is_empty() {
                return Err(Error::invalid(
                    "zookeeper URL credentials",
                    "the user name is empty; write zk://user:password@host:2181",
                ));
            }
            config = config.digest(&user, &percent_decode(password)?);
        }
        let mut params = Params::new("zookeeper", query_pairs(query)?);
        let timeout = match (params.duration("session_timeout")?, params.duration("ttl")?) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "zookeeper URL",
                    "give either session_timeout or ttl (they mean the same), not both",
                ))
            }
            (a, b) => a.or(b),
        };
        if let Some(timeout) = timeout {
            config = config.session_timeout(timeout)?;
        }
        if let Some(timeout) = params.duration("connect_timeout")? {
            config = config.connect_timeout(timeout)?;
        }
        if let Some(timeout) = params.duration("request_timeout")? {
            config = config.request_timeout(timeout)?;
        }
        params.finish(&[
            "session_timeout",
            "ttl",
            "connect_timeout",
            "request_timeout",
        ])?;
        Ok(config)
    }
}

fn check_timeout(what: &str, timeout: Duration) -> Result<Duration> {
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(Error::invalid(
            what,
            format!("{timeout:?} is out of range; use more than 0 and at most {MAX_TIMEOUT:?}"),
        ));
    }
    Ok(timeout)
}

fn parse_hosts(hosts: &str) -> Result<Vec<(String, u16)>> {
    let bad = |problem: String| Error::invalid("zookeeper hosts", problem);
    if hosts.trim().is_empty() {
        return Err(bad(
            "no host given; write host:port[,host:port...] e.g. 127.0.0.1:2181".into(),
        ));
    }
    hosts
        .split(',')
        .map(|entry| {
            let entry = entry.trim();
            // `[v6addr]:port`, `host:port` or `host`.
            let (host, port) = match entry.strip_prefix('[') {
                Some(v6) => {
                    let (addr, after) = v6
                        .split_once(']')
                        .ok_or_else(|| bad(format!("{entry:?} opens '[' without closing it")))?;
                    (addr, after.strip_prefix(':'))
                }
                None => match entry.split_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (entry, None),
                },
            };
            let port = match port {
                None => DEFAULT_PORT,
                Some(port) => port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        bad(format!("{entry:?} has a bad port {port:?}; use 1..=65535"))
                    })?,
            };
            let valid = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
            if !valid {
                return Err(bad(format!(
                    "{entry:?} is not host[:port]; separate hosts with ','"
                )));
            }
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            Ok((host, port))
        })
        .collect()
}

fn parse_base(path: &str) -> Result<String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let bad = |problem: &str| Error::invalid("zookeeper base path", format!("{path:?} {problem}"));
    if !trimmed.starts_with('/') {
        return Err(bad("must start with '/', e.g. /locks"));
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() {
            return Err(bad("has an empty segment ('//')"));
        }
        if segment == "." || segment == ".." {
            return Err(bad("has a '.' or '..' segment"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(bad(&format!(
                "has the character {c:?}; use only A-Z a-z 0-9 . _ : -"
            )));
        }
    }
    if trimmed == "/zookeeper" || trimmed.starts_with("/zookeeper/") {
        return Err(bad("is inside /zookeeper, which ZooKeeper reserves"));
    }
    Ok(trimmed.to_owned())
}

fn query_pairs(query: &str) -> Result<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), percent_decode(v)?)),
            None => Err(Error::invalid(
                "zookeeper URL query",
                format!("{part:?} has no value; write key=value"),
            )),
        })
        .collect()
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::invalid(
                        "zookeeper URL",
                        format!("{text:?} has a bad percent-escape; write %XX with two hex digits"),
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        Error::invalid(
            "zookeeper URL",
            format!("{text:?} does not decode to UTF-8"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(result: Result<ZkConfig>) -> String {
        match result {
            Err(Error::InvalidArgument { what, problem }) => format!("{what}: {problem}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn full_url() {
        let c = ZkConfig::from_url(
            "zk://app:p%40ss@h1:2181,h2:2182,h3/locks/app?session_timeout=6s&request_timeout=2s",
        )
        .unwrap();
        assert_eq!(c.connect_string(), "h1:2181,h2:2182,h3:2181");
        assert_eq!(c.base(), "/locks/app");
        assert_eq!(c.session_timeout, Duration::from_secs(6));
        assert_eq!(c.request_limit(), Duration::from_secs(2));
        assert_eq!(c.credentials, Some(("app".into(), "p@ss".into())));
        assert_eq!(c.address(), "zk://h1:2181,h2:2182,h3:2181/locks/app");
        assert!(
            !format!("{c:?}").contains("p@ss"),
            "the password must not be logged"
        );
    }

    #[test]
    fn minimal_url() {
        let c = ZkConfig::from_url("zookeeper://127.0.0.1").unwrap();
        assert_eq!(c.connect_string(), "127.0.0.1:2181");
        assert_eq!(c.base(), "");
        assert_eq!(c.request_limit(), DEFAULT_SESSION_TIMEOUT);
        let c = ZkConfig::from_url("zk://127.0.0.1:2181/?ttl=3s").unwrap();
        assert_eq!(c.session_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(problem(ZkConfig::from_url("redis://x")).contains("zk://"));
        assert!(problem(ZkConfig::from_url("zk://")).contains("no host"));
        assert!(problem(ZkConfig::from_url("zk://h:0")).contains("bad port"));
        assert!(problem(ZkConfig::from_url("zk://h:99999")).contains("bad port"));
        assert!(problem(ZkConfig::from_url("zk://h/a//b")).contains("empty segment"));
        assert!(problem(ZkConfig::from_url("zk://h/zookeeper")).contains("reserves"));
        assert!(problem(ZkConfig::from_url("zk://h?tll=1s")).contains("`tll`"));
        assert!(problem(ZkConfig::from_url("zk://h?ttl=0s")).contains("out of range"));
        assert!(problem(ZkConfig::from_url("zk://h?ttl=1000h")).contains("out of range"));
        assert!(problem(ZkConfig::from_url("zk://h?ttl=soon")).contains("ttl=soon"));
        assert!(problem(ZkConfig::from_url("zk://user@h")).contains("user:password"));
        assert!(problem(ZkConfig::from_url("zk://a b:1")).contains("host[:port]"));
        assert!(problem(ZkConfig::from_url("zk://h?ttl=1s&session_timeout=2s")).contains("either"));
    }
}
