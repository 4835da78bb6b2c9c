//! Building the redis crate's client of one node: address, RESP3, credentials and TLS (CA file,
//! insecure mode) in one place.

use redis::{ConnectionAddr, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo};
use tumbler_core::{Error, Result};

use crate::config::{RedisConfig, RedisNode};

/// The TLS settings shared by every node of a backend.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    /// Read only by the `tls` feature's client (without it, TLS URLs are refused).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    ca_pem: Option<Vec<u8>>,
    insecure: bool,
}

impl TlsSettings {
    /// Reads the CA file, if one is configured and any node uses TLS.
    pub(crate) fn load(config: &RedisConfig) -> Result<Self> {
        let uses_tls = config.nodes.iter().any(|n| n.tls);
        let ca_pem = match (&config.tls_ca, uses_tls) {
            (Some(path), true) => Some(std::fs::read(path).map_err(|e| {
                Error::invalid(
                    "tls_ca",
                    format!("cannot read the CA file {}: {e}", path.display()),
                )
            })?),
            (Some(_), false) => {
                return Err(Error::invalid(
                    "tls_ca",
                    "a CA file is set but no server uses TLS; use a rediss:// URL",
                ))
            }
            (None, _) => None,
        };
        Ok(TlsSettings {
            ca_pem,
            insecure: config.tls_insecure,
        })
    }
}

/// The redis crate's client for `node`, speaking RESP3 (needed for pub/sub on the shared
/// connection; Redis 6.0 or newer).
pub(crate) fn client(node: &RedisNode, tls: &TlsSettings) -> Result<redis::Client> {
    let bad = |e: redis::RedisError| {
        Error::invalid(
            "redis connection settings",
            format!("{}: {e}", node.display_addr()),
        )
    };
    let addr = if node.tls {
        ConnectionAddr::TcpTls {
            host: node.host.clone(),
            port: node.port,
            insecure: tls.insecure,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(node.host.clone(), node.port)
    };
    let mut redis_info = RedisConnectionInfo::default()
        .set_protocol(ProtocolVersion::RESP3)
        .set_db(node.db);
    if let Some(user) = &node.username {
        redis_info = redis_info.set_username(user);
    }
    if let Some(password) = &node.password {
        redis_info = redis_info.set_password(password);
    }
    let info = addr
        .into_connection_info()
        .map_err(bad)?
        .set_redis_settings(redis_info);
    if node.tls {
        return tls_client(info, tls).map_err(bad);
    }
    redis::Client::open(info).map_err(bad)
}

#[cfg(feature = "tls")]
fn tls_client(info: redis::ConnectionInfo, tls: &TlsSettings) -> redis::RedisResult<redis::Client> {
    // The process may have several rustls providers compiled in; pick ring unless the
    // application installed one already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match &tls.ca_pem {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
}

#[cfg(not(feature = "tls"))]
fn tls_client(
    _info: redis::ConnectionInfo,
    _tls: &TlsSettings,
) -> redis::RedisResult<redis::Client> {
    Err(redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "TLS needs the `tls` feature of backend-redis",
    )))
}

/// The redis crate's connection settings for a server reached through Sentinel: RESP3 and
/// the master's database and credentials.
pub(crate) fn sentinel_node_info(
    master: &RedisNode,
) -> redis::sentinel::SentinelNodeConnectionInfo {
    let mut redis_info = RedisConnectionInfo::default()
        .set_protocol(ProtocolVersion::RESP3)
        .set_db(master.db);
    if let Some(user) = &master.username {
        redis_info = redis_info.set_username(user);
    }
    if let Some(password) = &master.password {
        redis_info = redis_info.set_password(password);
    }
    redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info)
}

/// The redis crate's Sentinel client over `sentinels` (RESP2: a sentinel needs nothing more).
pub(crate) fn sentinel(sentinels: &[RedisNode]) -> Result<redis::sentinel::Sentinel> {
    let infos = sentinels
        .iter()
        .map(|node| {
            let mut redis_info = RedisConnectionInfo::default();
            if let Some(user) = &node.username {
                redis_info = redis_info.set_username(user);
            }
            if let Some(password) = &node.password {
                redis_info = redis_info.set_password(password);
            }
            ConnectionAddr::Tcp(node.host.clone(), node.port)
                .into_connection_info()
                .map(|info| info.set_redis_settings(redis_info))
        })
        .collect::<redis::RedisResult<Vec<_>>>()
        .and_then(redis::sentinel::Sentinel::build);
    infos.map_err(|e| Error::invalid("redis+sentinel sentinels", e.to_string()))
}
