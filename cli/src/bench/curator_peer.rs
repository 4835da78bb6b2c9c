//! Curator 5.4's InterProcessMutex on the same ZooKeeper, as a bench-only comparison.
//!
//! A small Java program (`curator_bench.java`, compiled with javac against Debian's
//! libcurator-recipes-java on first use) runs the contention loop in one JVM with one
//! CuratorFramework per client and prints every acquisition (see [`super::peer_process`]);
//! the numbers go through the same histograms and server counters as tumbler's.

use std::path::PathBuf;
use std::time::Duration;

use super::peer_process::PeerRun;
use super::scenarios::{Measured, Scenario};
use super::server_stats::ServerStats;

const SOURCE: &str = include_str!("curator_bench.java");
const JARS: [&str; 8] = [
    "curator-framework.jar",
    "curator-client.jar",
    "curator-recipes.jar",
    "zookeeper.jar",
    "zookeeper-jute.jar",
    "guava.jar",
    "slf4j-api.jar",
    "slf4j-nop.jar",
];

/// Curator on one ZooKeeper connect string.
pub struct Curator {
    connect: String,
    url: String,
}

impl Curator {
    /// For `zk://` URLs without credentials or chroot.
    pub fn new(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("zk://")?;
        let hosts = rest.split(['?', '/']).next()?;
        (!hosts.contains('@')).then(|| Curator {
            connect: hosts.to_owned(),
            url: url.to_owned(),
        })
    }

    pub fn label(&self) -> String {
        "zookeeper/curator".into()
    }

    fn classpath() -> Result<String, String> {
        let mut parts = Vec::new();
        for jar in JARS {
            let path = PathBuf::from("/usr/share/java").join(jar);
            if !path.exists() {
                return Err(format!(
                    "{} is missing; run scripts/setup (libcurator-recipes-java)",
                    path.display()
                ));
            }
            parts.push(path.display().to_string());
        }
        Ok(parts.join(":"))
    }

    /// Compiles the Java program once into a temp folder; returns the folder.
    async fn compiled() -> Result<PathBuf, String> {
        let dir = std::env::temp_dir().join(format!("tumbler-curator-bench-{}", SOURCE.len()));
        if dir.join("CuratorBench.class").exists() {
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("CuratorBench.java"), SOURCE).map_err(|e| e.to_string())?;
        let out = tokio::process::Command::new("javac")
            .arg("-cp")
            .arg(Self::classpath()?)
            .arg("-d")
            .arg(&dir)
            .arg(dir.join("CuratorBench.java"))
            .output()
            .await
            .map_err(|e| format!("cannot run javac (install a JDK with scripts/setup): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "javac failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir)
    }

    /// Runs `scenario` if Curator can (single and contend-N).
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
        let dir = Self::compiled().await?;
        let classpath = format!("{}:{}", Self::classpath()?, dir.display());
        let path = format!("/bench/curator-{}-{clients}", std::process::id());
        let mut command = tokio::process::Command::new("java");
        command
            .args(["-Xmx512m", "-cp", &classpath, "CuratorBench"])
            .arg(&self.connect)
            .arg(clients.to_string())
            .arg(duration.as_millis().to_string())
            .arg(&path);
        Ok(command)
    }
}
