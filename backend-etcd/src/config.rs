//! [`EtcdConfig`]: endpoints, lease TTL, key prefix, credentials, TLS and timeouts.

use std::fmt;
use std::time::Duration;

use tumbler_core::params::format_duration;
use tumbler_core::{Error, Result};

/// The lease TTL used when none is given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The shortest lease TTL accepted.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest lease TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long one request to etcd may take when no timeout is given.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting (and logging in) may take when no timeout is given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The port used for a host given without one.
pub const DEFAULT_PORT: u16 = 2379;

/// How to reach an etcd cluster and how to hold locks on it.
///
/// Build one with [`EtcdConfig::new`] and the setters, or parse a URL with
/// [`EtcdConfig::from_url`]; then [`EtcdConfig::connect`].
///
/// ```no_run
/// # async fn demo() -> tumbler_core::Result<()> {
/// use std::time::Duration;
/// use tumbler_etcd::EtcdConfig;
///
/// let locks = EtcdConfig::new(["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"])
///     .ttl(Duration::from_secs(15))?
///     .key_prefix("myapp/locks/")
///     .credentials("alice", "secret")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) ttl: Duration,
    pub(crate) prefix: String,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Option<crate::TlsSettings>,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ttl", &self.ttl)
            .field("prefix", &self.prefix)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl EtcdConfig {
    /// A configuration for the cluster members at `endpoints` (`host:port`, `http://host:port`
    /// or `https://host:port`; a host without port gets 2379). Give every member, so the client
    /// can move on when one fails.
    pub fn new<E: Into<String>>(endpoints: impl IntoIterator<Item = E>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ttl: DEFAULT_TTL,
            prefix: String::new(),
            credentials: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
        }
    }

    /// The TTL of the backend's lease, in whole seconds from [`MIN_TTL`] to [`MAX_TTL`]
    /// (default [`DEFAULT_TTL`]). A crashed holder's locks are free again about this long after
    /// it stopped; a live holder whose keep-alives fail for 3/4 of it sees `lost()` fire.
    pub fn ttl(mut self, ttl: Duration) -> Result<Self> {
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Error::invalid(
                "etcd lease ttl",
                format!(
                    "{} is out of range; use {} to {}",
                    format_duration(ttl),
                    format_duration(MIN_TTL),
                    format_duration(MAX_TTL)
                ),
            ));
        }
        if ttl.subsec_nanos() != 0 {
            return Err(Error::invalid(
                "etcd lease ttl",
                format!(
                    "{} is not a whole number of seconds; etcd leases count whole seconds, so use e.g. 2s",
                    format_duration(ttl)
                ),
            ));
        }
        self.ttl = ttl;
        Ok(self)
    }

    /// A prefix put in front of every key (default none, which is what `etcdctl lock NAME`
    /// uses). With prefix `app/`, the lock `jobs` lives under `app/jobs/`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Logs in with etcd's user/password authentication.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// How long one request may take before it fails with [`Error::Timeout`]
    /// (default [`DEFAULT_REQUEST_TIMEOUT`]); from 100 ms to 10 minutes.
    pub fn request_timeout(mut self, timeout: Duration) -> Result<Self> {
        self.request_timeout = check_timeout("etcd request timeout", timeout)?;
        Ok(self)
    }

    /// How long connecting and logging in may take (default [`DEFAULT_CONNECT_TIMEOUT`]);
    /// from 100 ms to 10 minutes.
    pub fn connect_timeout(mut self, timeout: Duration) -> Result<Self> {
        self.connect_timeout = check_timeout("etcd connect timeout", timeout)?;
        Ok(self)
    }

    /// Talks TLS to the members (their endpoints then default to `https://`).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The configured lease TTL.
    pub fn ttl_value(&self) -> Duration {
        self.ttl
    }

    /// The configured key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The member endpoints as they will be dialled (`http://host:port` or `https://host:port`).
    pub fn endpoint_urls(&self) -> Result<Vec<String>> {
        if self.endpoints.is_empty() {
            return Err(Error::invalid(
                "etcd endpoints",
                "none given; name at least one member as host:port",
            ));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| normalize_endpoint(e, scheme))
            .collect()
    }
}

fn check_timeout(what: &str, timeout: Duration) -> Result<Duration> {
    let range = Duration::from_millis(100)..=Duration::from_secs(600);
    if range.contains(&timeout) {
        Ok(timeout)
    } else {
        Err(Error::invalid(
            what,
            format!(
                "{} is out of range; use 100ms to 10m",
                format_duration(timeout)
            ),
        ))
    }
}

/// `host`, `host:port` or `scheme://host:port` → `scheme://host:port`.
fn normalize_endpoint(endpoint: &str, default_scheme: &str) -> Result<String> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
        Some((other, _)) => {
            return Err(Error::invalid(
                "etcd endpoint",
                format!("{endpoint:?} uses scheme {other:?}; use http:// or https://"),
            ))
        }
        None => (default_scheme, endpoint),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
        return Err(Error::invalid(
            "etcd endpoint",
            format!("{endpoint:?} is not host:port"),
        ));
    }
    let has_port = match rest.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => {
            match port.parse::<u16>() {
                Ok(0) => {
                    return Err(Error::invalid(
                        "etcd endpoint",
                        format!("{endpoint:?} has port 0; give the port the member listens on (2379 by default)"),
                    ))
                }
                Ok(_) => true,
                Err(_) => {
                    return Err(Error::invalid(
                        "etcd endpoint",
                        format!("{endpoint:?} has port {port:?}, which is not a number from 1 to 65535"),
                    ))
                }
            }
        }
        _ => false,
    };
    if has_port {
        Ok(format!("{scheme}://{rest}"))
    } else {
        Ok(format!("{scheme}://{rest}:{DEFAULT_PORT}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379", "http").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint("etcd-1", "https").unwrap(),
            "https://etcd-1:2379"
        );
        assert_eq!(
            normalize_endpoint("http://h:1/", "https").unwrap(),
            "http://h:1"
        );
        assert!(normalize_endpoint("h:99999", "http").is_err());
        assert!(normalize_endpoint("h:0", "http").is_err());
        assert!(normalize_endpoint("ftp://h:1", "http").is_err());
        assert!(normalize_endpoint("", "http").is_err());
    }

    #[test]
    fn ttl_must_be_whole_seconds_in_range() {
        let config = EtcdConfig::new(["h:1"]);
        assert!(config.clone().ttl(Duration::ZERO).is_err());
        assert!(config.clone().ttl(Duration::from_millis(1500)).is_err());
        assert!(config
            .clone()
            .ttl(Duration::from_secs(365 * 86400))
            .is_err());
        assert_eq!(
            config.ttl(Duration::from_secs(2)).unwrap().ttl_value(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn durations_in_messages_read_as_written() {
        let message = match EtcdConfig::new(["h:1"]).ttl(Duration::ZERO) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a zero ttl was accepted"),
        };
        assert!(
            message.contains(" 0s ") && !message.contains("0ns"),
            "{message}"
        );
        let message = match EtcdConfig::new(["h:1"]).request_timeout(Duration::from_millis(5)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a 5 ms timeout was accepted"),
        };
        assert!(message.contains("5ms is out of range"), "{message}");
    }

    #[test]
    fn debug_hides_the_password() {
        let text = format!(
            "{:?}",
            EtcdConfig::new(["h:1"]).credentials("alice", "s3cret")
        );
        assert!(text.contains("alice") && !text.contains("s3cret"), "{text}");
    }
}
