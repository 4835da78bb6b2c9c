//! Local servers for `--local`: real Redis, ZooKeeper and etcd from the Debian packages and the
//! Consul protocol test server, on free loopback ports, stopped when dropped.

use std::any::Any;
use std::sync::Arc;

use super::server_stats::LocalConsul;

/// Running servers and the URLs that reach them.
pub struct LocalStores {
    pub urls: Vec<(String, String)>,
    /// The Consul test server (it runs in this process), for its counters.
    pub consul: Option<(String, LocalConsul)>,
    _servers: Vec<Box<dyn Any + Send + Sync>>,
}

impl LocalStores {
    /// The in-process Consul test server behind `url`, if any.
    pub fn consul_at(&self, url: &str) -> Option<LocalConsul> {
        self.consul
            .as_ref()
            .filter(|(at, _)| at == url)
            .map(|(_, server)| server.clone())
    }
}

/// The store names `--local` accepts.
pub const KNOWN: [&str; 4] = ["redis", "zk", "etcd", "consul"];

/// Starts each named store.
pub async fn start(names: &[String]) -> Result<LocalStores, String> {
    let mut urls = Vec::new();
    let mut servers: Vec<Box<dyn Any + Send + Sync>> = Vec::new();
    let mut consul = None;
    for name in names {
        match name.as_str() {
            "redis" => {
                let server = testkit::redis::Redis::start()
                    .await
                    .map_err(|e| e.to_string())?;
                // The server was just started empty: there is no forgotten hold to wait out.
                urls.push((name.clone(), format!("{}?restart_delay=0s", server.url())));
                servers.push(Box::new(server));
            }
            "zk" => {
                let server = testkit::zk::ZooKeeper::start()
                    .await
                    .map_err(|e| e.to_string())?;
                urls.push((name.clone(), format!("zk://{}", server.connect_string())));
                servers.push(Box::new(server));
            }
            "etcd" => {
                let server = testkit::etcd::Etcd::start()
                    .await
                    .map_err(|e| e.to_string())?;
                urls.push((name.clone(), format!("etcd://{}", server.addr())));
                servers.push(Box::new(server));
            }
            "consul" => {
                let server = Arc::new(
                    testkit::consul::ConsulServer::start()
                        .await
                        .map_err(|e| e.to_string())?,
                );
                let url = format!("consul://{}", server.http_addr());
                urls.push((name.clone(), url.clone()));
                consul = Some((url, server.clone()));
                servers.push(Box::new(server));
            }
            other => {
                return Err(format!(
                    "unknown local store {other:?}; use {}",
                    KNOWN.join(", ")
                ))
            }
        }
    }
    Ok(LocalStores {
        urls,
        consul,
        _servers: servers,
    })
}
