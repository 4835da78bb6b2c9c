//! Go's clientv3/concurrency.Mutex on the same etcd, as a bench-only comparison.
//!
//! A small Go program (`go_mutex_bench.go`) is built on first use with Debian's `golang-go`
//! against `golang-etcd-server-dev` in GOPATH mode (`GO111MODULE=off
//! GOPATH=/usr/share/gocode`, about a minute the first time), into a temp folder that later
//! runs reuse. It runs the contention loop with one client and session per contender (see
//! [`super::peer_process`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::peer_process::PeerRun;
use super::scenarios::{Measured, Scenario};
use super::server_stats::ServerStats;

const SOURCE: &str = include_str!("go_mutex_bench.go");
/// Where Debian's golang-etcd-server-dev puts the etcd client's sources.
const GOPATH: &str = "/usr/share/gocode";

/// Go's Mutex on one etcd cluster.
pub struct GoMutex {
    endpoints: String,
    url: String,
}

impl GoMutex {
    /// For `etcd://` URLs without credentials or key prefix (TLS is not set up for it).
    pub fn new(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("etcd://")?;
        let address = rest.split('?').next().unwrap_or(rest);
        let hosts = address.strip_suffix('/').unwrap_or(address);
        let plain = !hosts.is_empty() && !hosts.contains(['@', '/']);
        plain.then(|| GoMutex {
            endpoints: hosts
                .split(',')
                .map(|h| format!("http://{h}"))
                .collect::<Vec<_>>()
                .join(","),
            url: url.to_owned(),
        })
    }

    pub fn label(&self) -> String {
        "etcd/go-mutex".into()
    }

    /// Builds the Go program once; returns its path.
    async fn built() -> Result<PathBuf, String> {
        let dir = std::env::temp_dir().join(format!("tumbler-go-mutex-bench-{}", SOURCE.len()));
        let binary = dir.join("go-mutex-bench");
        if binary.exists() {
            return Ok(binary);
        }
        let client = Path::new(GOPATH).join("src/go.etcd.io/etcd/clientv3/concurrency");
        if !client.exists() {
            return Err(format!(
                "{} is missing; run scripts/setup (golang-etcd-server-dev)",
                client.display()
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let source = dir.join("main.go");
        std::fs::write(&source, SOURCE).map_err(|e| e.to_string())?;
        let partial = dir.join("go-mutex-bench.partial");
        let out = tokio::process::Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&partial)
            .arg(&source)
            .env("GO111MODULE", "off")
            .env("GOPATH", GOPATH)
            .env("GOCACHE", dir.join("cache"))
            .env("GOFLAGS", "")
            .output()
            .await
            .map_err(|e| format!("cannot run go (install golang-go with scripts/setup): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "go build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::rename(&partial, &binary).map_err(|e| e.to_string())?;
        Ok(binary)
    }

    /// Runs `scenario` if Go's Mutex can (single and contend-N).
    pub async fn measure(
        &self,
        scenario: Scenario,
        duration: Duration,
        stats: Option<&dyn ServerStats>,
    ) -> Option<Measured> {
        PeerRun {
            label: self.label(),
            url: &self.url,
            duration,
            stats,
        }
        .measure(scenario, |clients| self.command(clients, duration))
        .await
    }

    /// The peer's program for `clients` clients and `duration`.
    async fn command(
        &self,
        clients: usize,
        duration: Duration,
    ) -> Result<tokio::process::Command, String> {
        let binary = Self::built().await?;
        let name = format!("bench/go-mutex-{}-{clients}", std::process::id());
        let mut command = tokio::process::Command::new(binary);
        command
            .arg(&self.endpoints)
            .arg(clients.to_string())
            .arg(duration.as_millis().to_string())
            .arg(name);
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_plain_etcd_urls_only() {
        let go = GoMutex::new("etcd://127.0.0.1:2379,127.0.0.1:22379?ttl=5s").unwrap();
        assert_eq!(go.endpoints, "http://127.0.0.1:2379,http://127.0.0.1:22379");
        assert!(GoMutex::new("etcd://127.0.0.1:2379").is_some());
        assert!(GoMutex::new("etcd://u:p@127.0.0.1:2379").is_none());
        assert!(GoMutex::new("etcd://127.0.0.1:2379/app").is_none());
        assert!(GoMutex::new("etcds://127.0.0.1:2379").is_none());
        assert!(GoMutex::new("redis://127.0.0.1:6379").is_none());
    }
}
