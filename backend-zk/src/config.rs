//! [`ZkConfig`]: where the ensemble is, how long sessions live, credentials; and the URL parser.

use std::time::Duration;

use tumbler_core::tls::TlsParams;
use tumbler_core::url::StoreUrl;
use tumbler_core::{Error, Result, SharedBackend};
use zookeeper_client as zk;

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
/// # async fn demo() -> tumbler_core::Result<()> {
/// use std::time::Duration;
/// let locks = tumbler_zookeeper::ZkConfig::new("zk1:2181,zk2:2181,zk3:2181")?
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
    pub(crate) tls: Option<TlsParams>,
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
            .field("tls", &self.tls)
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
            tls: None,
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
                format!(
                    "{} is out of range; use {} to {} (e.g. 10s)",
                    tumbler_core::params::format_duration(timeout),
                    tumbler_core::params::format_duration(MIN_SESSION_TIMEOUT),
                    tumbler_core::params::format_duration(MAX_SESSION_TIMEOUT)
                ),
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

    /// Authenticates with ZooKeeper's `digest` scheme. A lock's own folder and nodes are then
    /// created with an ACL that gives this user every permission and everyone else only READ,
    /// so clients without these credentials can see but not delete them or queue on that lock
    /// (they get `Error::Auth`). Every client of one lock must use the same credentials. The
    /// parent folders a lock needs (the base path, the leading segments of its name) are
    /// created open, so other users can lock sibling names.
    pub fn digest(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Connects over TLS (the servers' `secureClientPort`, which needs ZooKeeper's Netty
    /// connection factory), trusting the CA in `tls.ca` (required: ZooKeeper's client has no
    /// system trust store) and presenting `tls.cert`/`tls.key` when given (servers ask for a
    /// client certificate unless `ssl.clientAuth=none`). `tls.insecure` skips only the host
    /// name check; the certificate chain is always verified.
    pub fn tls(mut self, tls: TlsParams) -> Result<Self> {
        if tls.ca.is_none() {
            return Err(Error::invalid(
                "zookeeper TLS",
                "give the CA that signed the servers' certificates: tls_ca=/path/ca.pem (the ZooKeeper client has no system trust store)",
            ));
        }
        self.tls = Some(tls);
        Ok(self)
    }

    /// The connect string, `host:port,host:port`.
    pub fn connect_string(&self) -> String {
        self.hosts
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The connect string the client is given: [`ZkConfig::connect_string`], each host marked
    /// `tcp+tls://` when TLS is on.
    pub(crate) fn client_hosts(&self) -> String {
        match self.tls {
            None => self.connect_string(),
            Some(_) => self
                .hosts
                .iter()
                .map(|(h, p)| format!("tcp+tls://{h}:{p}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// A client connector with this configuration's session timeout, credentials and TLS.
    pub(crate) fn connector(&self) -> Result<zk::Connector> {
        let mut connector = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_connection_timeout(self.session_timeout / 3)
            .with_fail_eagerly();
        if let Some((user, password)) = &self.credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        if let Some(tls) = &self.tls {
            connector = connector.with_tls(tls_options(tls)?);
        }
        Ok(connector)
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
    ///
    /// The backend is returned behind lockcore's [`tumbler_core::Checked`] layer (request
    /// validation and the closed state), as every backend's `connect` is.
    pub async fn connect(self) -> Result<SharedBackend> {
        Ok(tumbler_core::share(crate::ZkBackend::connect(self).await?))
    }

    /// Parses a `zk://` (or `zookeeper://`, `zk+tls://`, `zookeeper+tls://`) URL; see the crate
    /// documentation for the grammar.
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = StoreUrl::parse(url, SCHEMES, DEFAULT_PORT).map_err(|e| match e {
            Error::InvalidArgument { problem, .. } => Error::invalid("zookeeper URL", problem),
            other => other,
        })?;
        let hosts: Vec<String> = parsed.hosts.iter().map(ToString::to_string).collect();
        let mut config =
            ZkConfig::new(&hosts.join(","))?.base_path(&format!("/{}", parsed.path))?;
        if let Some(credentials) = parsed.credentials()? {
            let (Some(user), Some(password)) = (credentials.user, credentials.password) else {
                return Err(Error::invalid(
                    "zookeeper URL credentials",
                    "write them as zk://user:password@host:2181 (percent-encode ':' '@' '/' in them)",
                ));
            };
            if user.is_empty() {
                return Err(Error::invalid(
                    "zookeeper URL credentials",
                    "the user name is empty; write zk://user:password@host:2181",
                ));
            }
            config = config.digest(&user, &password);
        }
        let params = parsed.params();
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
        let tls_scheme = parsed.scheme.ends_with("+tls");
        let params = parsed.params();
        let tls_param = params.bool("tls")?;
        let tls = TlsParams::from_params(params, &[])?;
        let wanted = match tls_param {
            Some(false) if tls_scheme || tls.any() => {
                return Err(Error::invalid(
                    "zookeeper URL",
                    "tls=false contradicts the +tls scheme or the tls_ parameters; drop one",
                ))
            }
            Some(on) => on,
            None => tls_scheme || tls.any(),
        };
        if wanted {
            config = config.tls(tls)?;
        }
        let mut known = vec![
            "session_timeout",
            "ttl",
            "connect_timeout",
            "request_timeout",
            "tls",
        ];
        known.extend_from_slice(TlsParams::NAMES);
        parsed.finish(&known)?;
        Ok(config)
    }
}

/// The client's TLS options from the URL's files.
fn tls_options(tls: &TlsParams) -> Result<zk::TlsOptions> {
    // zookeeper-client asks rustls for the process's default provider, which is ambiguous when
    // several are compiled in (other backends bring ring): make ring the default unless one is
    // installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = |parameter: &str, path: &std::path::Path| -> Result<String> {
        String::from_utf8(TlsParams::read(parameter, path)?).map_err(|_| {
            Error::invalid(
                format!("URL parameter `{parameter}`"),
                format!("{} is not a PEM text file", path.display()),
            )
        })
    };
    let bad = |parameter: &str, path: &std::path::Path, error: zk::Error| {
        Error::invalid(
            format!("URL parameter `{parameter}`"),
            format!("{} is not usable PEM: {error}", path.display()),
        )
    };
    let mut options = zk::TlsOptions::new();
    if let Some(ca) = &tls.ca {
        options = options
            .with_pem_ca(&text("tls_ca", ca)?)
            .map_err(|e| bad("tls_ca", ca, e))?;
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = options
            .with_pem_identity(&text("tls_cert", cert)?, &text("tls_key", key)?)
            .map_err(|e| bad("tls_cert/tls_key", cert, e))?;
    }
    if tls.insecure {
        // SAFETY: not memory safety; the caller asked (tls_insecure=true) to accept a server
        // certificate for another host name. The chain is still verified against tls_ca.
        options = unsafe { options.with_no_hostname_verification() };
    }
    Ok(options)
}

/// The URL schemes of this backend; `+tls` connects over TLS.
const SCHEMES: &[&str] = &["zk", "zookeeper", "zk+tls", "zookeeper+tls"];

fn check_timeout(what: &str, timeout: Duration) -> Result<Duration> {
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(Error::invalid(
            what,
            format!(
                "{} is out of range; use more than 0s and at most {}",
                tumbler_core::params::format_duration(timeout),
                tumbler_core::params::format_duration(MAX_TIMEOUT)
            ),
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
    fn tls_urls() {
        let c = ZkConfig::from_url("zk+tls://h:2281?tls_ca=%2Fetc%2Fca.pem").unwrap();
        assert_eq!(
            c.tls.as_ref().and_then(|t| t.ca.as_deref()),
            Some("/etc/ca.pem".as_ref())
        );
        let c =
            ZkConfig::from_url("zk://h:2281?tls=true&tls_ca=ca.pem&tls_cert=c.pem&tls_key=k.pem")
                .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert.as_deref(), Some("c.pem".as_ref()));
        assert_eq!(tls.key.as_deref(), Some("k.pem".as_ref()));
        assert!(ZkConfig::from_url("zk://h").unwrap().tls.is_none());
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
        assert!(problem(ZkConfig::from_url("redis://x")).contains("not one of zk, zookeeper"));
        assert!(problem(ZkConfig::from_url("zk://")).contains("no host"));
        assert!(problem(ZkConfig::from_url("zk://h:0")).contains("port 0"));
        assert!(problem(ZkConfig::from_url("zk://h:99999")).contains("invalid port"));
        assert!(problem(ZkConfig::from_url("zk://h/a//b")).contains("empty segment"));
        assert!(problem(ZkConfig::from_url("zk://h/zookeeper")).contains("reserves"));
        assert!(problem(ZkConfig::from_url("zk://h?tll=1s")).contains("`tll`"));
        assert!(problem(ZkConfig::from_url("zk://h?ttl=0s")).contains("out of range"));
        // Durations read as they are written: `0s`, not Rust's `0ns`.
        let zero = problem(ZkConfig::from_url("zk://h?ttl=0s"));
        assert!(
            zero.contains(": 0s is out of range; use 250ms to 1h"),
            "{zero}"
        );
        assert!(problem(ZkConfig::from_url("zk://h?ttl=1000h")).contains("out of range"));
        assert!(problem(ZkConfig::from_url("zk://h?ttl=soon")).contains("ttl=soon"));
        assert!(problem(ZkConfig::from_url("zk://user@h")).contains("user:password"));
        assert!(problem(ZkConfig::from_url("zk://a b:1")).contains("\"a b:1\""));
        assert!(problem(ZkConfig::from_url("zk://u:p@h?user=v")).contains("twice"));
        assert!(problem(ZkConfig::from_url("zk://h?tls_cert=c.pem")).contains("tls_key"));
        assert!(problem(ZkConfig::from_url("zk+tls://h")).contains("tls_ca"));
        assert!(
            problem(ZkConfig::from_url("zk+tls://h?tls=false&tls_ca=c")).contains("contradicts")
        );
        assert!(problem(ZkConfig::from_url("zk://h?ttl=1s&session_timeout=2s")).contains("either"));
    }
}
