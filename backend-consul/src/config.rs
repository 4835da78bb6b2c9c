//! [`ConsulConfig`]: where the agent is and how sessions behave, from code or from a URL.

use std::path::PathBuf;
use std::time::Duration;

use tumbler_core::tls::TlsParams;
use tumbler_core::url::StoreUrl;
use tumbler_core::{Error, Result};

use crate::layout::{check_prefix, DEFAULT_PREFIX};

/// Session TTL used when none is configured (api.Lock's `DefaultLockSessionTTL`).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15);
/// Lock-delay used when none is configured (Consul's default).
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// The longest lock-delay Consul enforces; larger values are refused.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// The shortest session TTL accepted here. A real Consul agent refuses TTLs below its
/// `session_ttl_min` (10s by default) and says so at connect.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);
/// The longest session TTL Consul accepts.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// TCP (and TLS) connect timeout used when none is configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one ordinary (non-blocking) request used when none is configured.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one blocking query (`?index=&wait=`) waits at most, when not configured.
pub const DEFAULT_QUERY_WAIT: Duration = Duration::from_secs(60);
/// Consul's largest blocking-query wait.
pub const MAX_QUERY_WAIT: Duration = Duration::from_secs(600);

/// The URL query parameters [`ConsulConfig::from_url`] knows (`ca_file`, `cert_file` and
/// `key_file` are older names of `tls_ca`, `tls_cert` and `tls_key`).
pub const URL_PARAMETERS: &[&str] = &[
    "ttl",
    "lock_delay",
    "prefix",
    "token",
    "session_name",
    "dc",
    "connect_timeout",
    "request_timeout",
    "query_wait",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_insecure",
    "ca_file",
    "cert_file",
    "key_file",
];

/// The Consul backend's older TLS parameter names, still accepted.
const TLS_ALIASES: &[(&str, &str)] = &[
    ("ca_file", "tls_ca"),
    ("cert_file", "tls_cert"),
    ("key_file", "tls_key"),
];

/// How often `?token=` appears in the query of `url`.
fn token_count(url: &str) -> usize {
    url.split_once('?').map_or(0, |(_, query)| {
        let query = query.split('#').next().unwrap_or_default();
        url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "token")
            .count()
    })
}

/// How to reach a Consul agent and how this client's sessions behave.
///
/// ```no_run
/// # async fn demo() -> tumbler_core::Result<()> {
/// use std::time::Duration;
/// use tumbler_consul::ConsulConfig;
/// let locks = ConsulConfig::new("127.0.0.1:8500")
///     .session_ttl(Duration::from_secs(15))
///     .lock_delay(Duration::from_secs(1))
///     .token("my-acl-token")
///     .connect()
///     .await?;
/// let guard = locks.mutex("jobs/nightly")?.lock().await?;
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    pub(crate) address: String,
    pub(crate) https: bool,
    pub(crate) token: Option<String>,
    pub(crate) prefix: String,
    pub(crate) session_ttl: Duration,
    pub(crate) lock_delay: Duration,
    pub(crate) session_name: String,
    pub(crate) datacenter: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) query_wait: Duration,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
}

impl ConsulConfig {
    /// A configuration for the agent at `address` (`host:port`, plain http) with the defaults:
    /// session TTL 15s, lock-delay 15s, key prefix `tumbler/`, no ACL token.
    pub fn new(address: impl Into<String>) -> Self {
        ConsulConfig {
            address: address.into(),
            https: false,
            token: None,
            prefix: DEFAULT_PREFIX.to_string(),
            session_ttl: DEFAULT_SESSION_TTL,
            lock_delay: DEFAULT_LOCK_DELAY,
            session_name: format!("tumbler (pid {})", std::process::id()),
            datacenter: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            query_wait: DEFAULT_QUERY_WAIT,
            ca_file: None,
            client_cert: None,
        }
    }

    /// Reads the settings the `consul` CLI reads: `CONSUL_HTTP_ADDR` (`host:port` or a
    /// `http://`/`https://` URL; default `127.0.0.1:8500`), `CONSUL_HTTP_TOKEN`,
    /// `CONSUL_HTTP_SSL`, `CONSUL_CACERT`, `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let raw = var("CONSUL_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8500".to_string());
        let (https, address) = if let Some(rest) = raw.strip_prefix("https://") {
            (true, rest.to_string())
        } else if let Some(rest) = raw.strip_prefix("http://") {
            (false, rest.to_string())
        } else {
            (false, raw)
        };
        let ssl = var("CONSUL_HTTP_SSL").is_some_and(|v| v == "true" || v == "1");
        let mut config = ConsulConfig::new(address.trim_end_matches('/')).https(https || ssl);
        config.token = var("CONSUL_HTTP_TOKEN");
        config.ca_file = var("CONSUL_CACERT").map(PathBuf::from);
        if let (Some(cert), Some(key)) = (var("CONSUL_CLIENT_CERT"), var("CONSUL_CLIENT_KEY")) {
            config.client_cert = Some((cert.into(), key.into()));
        }
        config
    }

    /// Parses a `consul://` or `consuls://` URL (with lockcore's [`StoreUrl`]); see the crate
    /// docs for the grammar.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming what to fix: another scheme, no host or more than one,
    /// port 0, a path, user info or `?user=` (Consul takes an ACL token, `?token=`, once),
    /// an unknown parameter, a value out of range, TLS files on plain http.
    pub fn from_url(url: &str) -> Result<Self> {
        let https = url.starts_with("consuls://");
        let default_port = if https { 8501 } else { 8500 };
        let mut parsed = StoreUrl::parse(url, &["consul", "consuls"], default_port)?;
        let host = match parsed.hosts.as_slice() {
            [host] => host.to_string(),
            hosts => {
                return Err(Error::invalid(
                    "consul URL",
                    format!(
                        "names {} agents; give one agent (its servers replicate the locks)",
                        hosts.len()
                    ),
                ))
            }
        };
        if !parsed.path.is_empty() {
            return Err(Error::invalid(
                "consul URL",
                format!(
                    "path {:?} is not used; set the key prefix with ?prefix=…",
                    parsed.path
                ),
            ));
        }
        if parsed.credentials()?.is_some() {
            return Err(Error::invalid(
                "consul URL",
                "user info and ?user=/?password= are not used; pass an ACL token as ?token=…",
            ));
        }
        if token_count(url) > 1 {
            return Err(Error::invalid(
                "consul URL",
                "the ACL token is given twice (?token= appears more than once); give it once",
            ));
        }
        let mut config = ConsulConfig::new(host).https(https);
        let params = parsed.params();
        if let Some(ttl) = params.duration("ttl")? {
            config.session_ttl = ttl;
        }
        if let Some(delay) = params.duration("lock_delay")? {
            config.lock_delay = delay;
        }
        if let Some(prefix) = params.text("prefix") {
            config.prefix = prefix;
        }
        config.token = params.text("token").filter(|t| !t.is_empty());
        if let Some(name) = params.text("session_name") {
            config.session_name = name;
        }
        config.datacenter = params.text("dc").filter(|d| !d.is_empty());
        if let Some(t) = params.duration("connect_timeout")? {
            config.connect_timeout = t;
        }
        if let Some(t) = params.duration("request_timeout")? {
            config.request_timeout = t;
        }
        if let Some(t) = params.duration("query_wait")? {
            config.query_wait = t;
        }
        let tls = TlsParams::from_params(params, TLS_ALIASES)?;
        parsed.finish(URL_PARAMETERS)?;
        if tls.insecure {
            return Err(Error::invalid(
                "consul URL parameter `tls_insecure`",
                "the Consul backend always verifies the agent's certificate; give the CA that \
                 signed it as ?tls_ca=…",
            ));
        }
        if !https && (tls.ca.is_some() || tls.cert.is_some()) {
            return Err(Error::invalid(
                "consul URL",
                "tls_ca, tls_cert and tls_key need https: use consuls://",
            ));
        }
        config.ca_file = tls.ca;
        config.client_cert = tls.cert.zip(tls.key);
        config.validate()?;
        Ok(config)
    }

    /// Points the configuration at another agent (`host:port`), keeping every other setting.
    pub fn agent(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// Uses https (`consuls://`) instead of plain http.
    pub fn https(mut self, yes: bool) -> Self {
        self.https = yes;
        self
    }

    /// The ACL token sent as `X-Consul-Token` on every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The KV prefix every key lives under (default `tumbler/`; may be empty).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The session TTL (default 15s, between 1s and 24h; a real agent requires at least its
    /// `session_ttl_min`, 10s by default). Sessions are renewed every TTL/2; a hold reports
    /// `lost()` when no renewal succeeded for 0.9 × TTL.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// The lock-delay of this client's sessions (default 15s, at most 60s, 0 allowed): after
    /// the session is invalidated (not after a release), its locks cannot be taken for this
    /// long, so that a holder that lost the session notices before someone else acts.
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// The session name shown by `consul operator`/the UI (default `tumbler (pid N)`).
    pub fn session_name(mut self, name: impl Into<String>) -> Self {
        self.session_name = name.into();
        self
    }

    /// The datacenter to address (`?dc=`); default: the agent's own.
    pub fn datacenter(mut self, dc: impl Into<String>) -> Self {
        self.datacenter = Some(dc.into());
        self
    }

    /// The TCP/TLS connect timeout (default 5s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The timeout of one ordinary request (default 10s). Blocking queries get their wait on top.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The longest single blocking query (default 60s, at most 10 min).
    pub fn query_wait(mut self, wait: Duration) -> Self {
        self.query_wait = wait;
        self
    }

    /// A PEM file with the CA certificate(s) to trust for https, instead of the system's.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// A client certificate and key (PEM) for agents with `verify_incoming`.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The session TTL.
    pub fn ttl(&self) -> Duration {
        self.session_ttl
    }

    /// The lock-delay.
    pub fn delay(&self) -> Duration {
        self.lock_delay
    }

    /// The agent address (`host:port`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `http://host:port` or `https://host:port`.
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// After a holder dies, its lock is free again within this bound: Consul invalidates the
    /// session at most 2 × TTL after its last renewal, then the lock-delay runs.
    pub fn crash_release_bound(&self) -> Duration {
        self.session_ttl * 2 + self.lock_delay
    }

    /// How long a waiter that was killed can keep a free lock from waiting acquisitions at
    /// most: [`crate::DEAD_WAITER_GRACE`] plus one request, whatever the TTL. A killed mutex
    /// waiter's queue key, or a killed waiting writer's place in a read-write lock's record,
    /// lives on the agent until Consul invalidates its session (2 × TTL); the next waiter goes
    /// ahead (mutex) or takes the dead writer off the waiting list (read-write lock) once the
    /// free lock was not taken for the grace. A semaphore contender that waits never keeps a
    /// permit from anyone. One-attempt acquisitions (`try_read`) do not wait out the grace: a
    /// dead waiting writer refuses them until a waiting acquisition clears it, or 2 × TTL.
    pub fn waiter_release_bound(&self) -> Duration {
        crate::queue::DEAD_WAITER_GRACE + self.request_timeout
    }

    /// Checks every setting; [`ConsulConfig::connect`] calls this first.
    pub fn validate(&self) -> Result<()> {
        if self.address.is_empty() || self.address.contains('/') {
            return Err(Error::invalid(
                "consul address",
                format!("{:?} is not host:port", self.address),
            ));
        }
        if self
            .address
            .rsplit_once(':')
            .is_some_and(|(_, port)| port == "0")
        {
            return Err(Error::invalid(
                "consul address",
                format!(
                    "{:?} has port 0, which no agent listens on; give the agent's port \
                     (8500 for http, 8501 for https)",
                    self.address
                ),
            ));
        }
        if self.session_ttl < MIN_SESSION_TTL || self.session_ttl > MAX_SESSION_TTL {
            return Err(Error::invalid(
                "consul session ttl",
                format!(
                    "{} is out of range; use 1s..=24h (a real Consul agent needs at least its \
                     session_ttl_min, 10s by default)",
                    tumbler_core::params::format_duration(self.session_ttl)
                ),
            ));
        }
        if self.lock_delay > MAX_LOCK_DELAY {
            return Err(Error::invalid(
                "consul lock_delay",
                format!(
                    "{} is more than Consul enforces (60s); use 0s..=60s",
                    tumbler_core::params::format_duration(self.lock_delay)
                ),
            ));
        }
        check_prefix(&self.prefix)?;
        for (what, value, max) in [
            ("connect_timeout", self.connect_timeout, MAX_QUERY_WAIT),
            ("request_timeout", self.request_timeout, MAX_QUERY_WAIT),
            ("query_wait", self.query_wait, MAX_QUERY_WAIT),
        ] {
            if value < Duration::from_millis(10) || value > max {
                return Err(Error::invalid(
                    format!("consul {what}"),
                    format!(
                        "{} is out of range; use 10ms..=10m",
                        tumbler_core::params::format_duration(value)
                    ),
                ));
            }
        }
        if self.session_name.is_empty() {
            return Err(Error::invalid("consul session_name", "must not be empty"));
        }
        Ok(())
    }

    /// Connects: checks the settings, creates this client's session and starts renewing it.
    /// The backend is returned behind lockcore's [`tumbler_core::Checked`] layer
    /// ([`tumbler_core::share`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad setting, [`Error::Connection`] or
    /// [`Error::Timeout`] when the agent cannot be reached, [`Error::Auth`] when it refuses
    /// the token.
    pub async fn connect(self) -> Result<tumbler_core::SharedBackend> {
        Ok(tumbler_core::share(
            crate::backend::ConsulBackend::connect(self).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(url: &str) -> String {
        match ConsulConfig::from_url(url) {
            Err(Error::InvalidArgument { what, problem }) => format!("{what}: {problem}"),
            Err(other) => panic!("expected InvalidArgument, got {other}"),
            Ok(c) => panic!("expected an error, got {c:?}"),
        }
    }

    #[test]
    fn parses_the_documented_grammar() {
        let c = ConsulConfig::from_url(
            "consul://127.0.0.1:8600/?ttl=20s&lock_delay=0s&prefix=service/web/&token=t0k\
             &session_name=web&dc=eu&request_timeout=3s&query_wait=30s",
        )
        .unwrap();
        assert_eq!(c.address, "127.0.0.1:8600");
        assert!(!c.https);
        assert_eq!(c.session_ttl, Duration::from_secs(20));
        assert_eq!(c.lock_delay, Duration::ZERO);
        assert_eq!(c.prefix, "service/web/");
        assert_eq!(c.token.as_deref(), Some("t0k"));
        assert_eq!(c.session_name, "web");
        assert_eq!(c.datacenter.as_deref(), Some("eu"));
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.query_wait, Duration::from_secs(30));
        let d = ConsulConfig::from_url("consul://localhost").unwrap();
        assert_eq!(d.address, "localhost:8500");
        assert_eq!(d.prefix, "tumbler/");
        let s = ConsulConfig::from_url("consuls://h?ca_file=/ca.pem").unwrap();
        assert_eq!(s.address, "h:8501");
        assert!(s.https);
        assert_eq!(s.base_url(), "https://h:8501");
    }

    #[test]
    fn bad_urls_say_what_to_fix() {
        assert!(problem("consul://h?ttl=0s").contains("out of range"));
        assert!(problem("consul://h?ttl=48h").contains("out of range"));
        assert!(problem("consul://h?lock_delay=2m").contains("60s"));
        assert!(problem("consul://h?tll=1s").contains("`tll`"));
        assert!(problem("consul://h/some/path").contains("?prefix="));
        assert!(problem("consul://u:p@h").contains("?token="));
        assert!(problem("consul://h?prefix=/x").contains("starts with '/'"));
        assert!(problem("consul://h?ca_file=x").contains("consuls://"));
        assert!(problem("consul://h?tls_ca=x").contains("consuls://"));
        assert!(problem("consul://h?cert_file=x").contains("together"));
        assert!(problem("consuls://h?tls_ca=a&ca_file=b").contains("twice"));
        assert!(problem("consuls://h?tls_insecure=true").contains("tls_ca"));
        assert!(problem("consul://").contains("no host"));
        assert!(problem("consul://h:0").contains("port"));
        assert!(problem("consul://a,b").contains("one agent"));
        assert!(problem("consul://h?user=u").contains("?token="));
        assert!(problem("consul://h?token=a&token=b").contains("twice"));
        assert!(problem("redis://h").contains("scheme"));
    }
}
