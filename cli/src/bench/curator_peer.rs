//! Curator 5.4's InterProcessMutex on the same ZooKeeper, as a bench-only comparison.
//!
//! A small Java program (`curator_bench.java`, compiled with javac against Debian's
//! libcurator-recipes-java on first use) runs the contention loop in one JVM with one
//! CuratorFramework per client and prints every acquisition; the numbers go through the same
//! histograms as tumbler's.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::scenarios::{handoffs_from, Event, Measured, Scenario};
use super::stats::Latency;

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
    pub async fn measure(&self, scenario: Scenario, duration: Duration) -> Option<Measured> {
        let clients = match scenario {
            Scenario::Single => 1,
            Scenario::Contend(n) => n,
            _ => return None,
        };
        Some(match self.run(clients, duration).await {
            Ok(mut m) => {
                m.scenario = scenario.name();
                m
            }
            Err(why) => Measured::failed(self.label(), &self.url, scenario, why),
        })
    }

    async fn run(&self, clients: usize, duration: Duration) -> Result<Measured, String> {
        let dir = Self::compiled().await?;
        let classpath = format!("{}:{}", Self::classpath()?, dir.display());
        let path = format!("/bench/curator-{}", std::process::id());
        let out = tokio::time::timeout(
            duration + Duration::from_secs(120),
            tokio::process::Command::new("java")
                .args(["-Xmx512m", "-cp", &classpath, "CuratorBench"])
                .arg(&self.connect)
                .arg(clients.to_string())
                .arg(duration.as_millis().to_string())
                .arg(&path)
                .output(),
        )
        .await
        .map_err(|_| "the Curator bench did not finish".to_owned())?
        .map_err(|e| format!("cannot run java: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let base = Instant::now();
        let at = |nanos: &str| -> Result<Instant, String> {
            nanos
                .parse::<u64>()
                .map(|n| base + Duration::from_nanos(n))
                .map_err(|e| format!("bad number {nanos:?}: {e}"))
        };
        let mut latency = Latency::new();
        let mut events = Vec::new();
        let mut elapsed = None;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["A", client, asked, got] => {
                    let client: usize = client.parse().map_err(|e| format!("{e}"))?;
                    let (asked, got) = (at(asked)?, at(got)?);
                    latency.record(got - asked);
                    events.push((got, Event::Acquired { client }));
                }
                ["R", client, rel] => {
                    let client: usize = client.parse().map_err(|e| format!("{e}"))?;
                    events.push((at(rel)?, Event::Releasing { client }));
                }
                ["DONE", nanos] => {
                    elapsed = Some(Duration::from_nanos(
                        nanos.parse().map_err(|e| format!("{e}"))?,
                    ))
                }
                ["E", ..] => return Err(format!("Curator failed: {line}")),
                _ => {}
            }
        }
        let elapsed = elapsed.ok_or_else(|| {
            format!(
                "the Curator bench printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let ops = latency.count();
        Ok(Measured {
            subject: self.label(),
            url: self.url.clone(),
            scenario: String::new(),
            clients,
            ops,
            seconds: elapsed.as_secs_f64(),
            ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
            acquire: latency.summary(),
            handoff: if clients > 1 {
                handoffs_from(&mut events).summary()
            } else {
                None
            },
            requests_per_op: None,
            errors: 0,
            skipped: None,
        })
    }
}
