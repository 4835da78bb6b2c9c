//! A peer library's contention loop run as a child program (Curator in a JVM, Go's
//! concurrency.Mutex), measured through the same histograms and server counters as tumbler.
//!
//! The protocol, on the child's stdin and stdout:
//! 1. the child connects its clients, prints `READY` and waits for a line;
//! 2. the bench reads the server's counters and sends a line: the child runs the loop for the
//!    given time and prints `A <client> <asked ns> <got ns>` per acquisition,
//!    `R <client> <release ns>` per release, then `DONE <elapsed ns>` (or `E <error>`);
//! 3. the bench reads the counters again and closes stdin: the child closes its clients.
//!
//! So the counters cover the loop alone, not the clients' connections and sessions.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::scenarios::{handoffs_from, snapshot, Event, Measured, Scenario};
use super::server_stats::ServerStats;
use super::stats::Latency;

/// Who is measured where.
pub struct PeerRun<'a> {
    pub label: String,
    pub url: &'a str,
    pub duration: Duration,
    pub stats: Option<&'a dyn ServerStats>,
}

impl PeerRun<'_> {
    /// Runs `scenario` if a peer's contention loop has one (single and contend-N; `None`
    /// otherwise): `command(clients)` builds the peer's program, which must follow the
    /// protocol above. A run that fails is a row that says why.
    pub async fn measure<F, Fut>(&self, scenario: Scenario, command: F) -> Option<Measured>
    where
        F: FnOnce(usize) -> Fut,
        Fut: std::future::Future<Output = Result<Command, String>>,
    {
        let clients = match scenario {
            Scenario::Single => 1,
            Scenario::Contend(n) => n,
            _ => return None,
        };
        let measured = match command(clients).await {
            Ok(command) => self.run(clients, command).await,
            Err(why) => Err(why),
        };
        Some(match measured {
            Ok(mut m) => {
                m.scenario = scenario.name();
                m
            }
            Err(why) => Measured::failed(self.label.clone(), self.url, scenario, why),
        })
    }

    /// Runs `command` with `clients` clients and measures what it prints.
    async fn run(&self, clients: usize, mut command: Command) -> Result<Measured, String> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the {} bench: {e}", self.label))?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the peer's pipes were not set up".into());
        };
        let mut lines = BufReader::new(stdout).lines();
        let limit = self.duration + Duration::from_secs(120);
        let work = async {
            loop {
                match lines.next_line().await.map_err(|e| e.to_string())? {
                    Some(line) if line.trim() == "READY" => break,
                    Some(line) if line.starts_with("E ") => {
                        return Err(format!("{} failed: {line}", self.label))
                    }
                    Some(_) => {}
                    None => return Err(format!("{} ended before it was ready", self.label)),
                }
            }
            let before = snapshot(self.stats).await?;
            stdin.write_all(b"go\n").await.map_err(|e| e.to_string())?;
            let mut output = Vec::new();
            while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
                let done = line.starts_with("DONE ");
                output.push(line);
                if done {
                    break;
                }
            }
            let after = snapshot(self.stats).await?;
            Ok::<_, String>((output, before, after))
        };
        let outcome = tokio::time::timeout(limit, work).await;
        drop(stdin);
        let finished =
            tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await;
        let stderr = match &finished {
            Ok(Ok(out)) => String::from_utf8_lossy(&out.stderr).into_owned(),
            _ => String::new(),
        };
        let (output, before, after) = outcome
            .map_err(|_| format!("the {} bench did not finish", self.label))?
            .map_err(|e| format!("{e} {stderr}"))?;
        let mut measured = self
            .parse(clients, &output)
            .map_err(|e| format!("{e} {stderr}"))?;
        measured.requests_per_op = after.requests_per_op(&before, measured.ops);
        measured.delivered_per_op = after.delivered_per_op(&before, measured.ops);
        Ok(measured)
    }

    /// Reads the `A`, `R`, `DONE` and `E` lines.
    fn parse(&self, clients: usize, output: &[String]) -> Result<Measured, String> {
        let base = Instant::now();
        let at = |nanos: &str| -> Result<Instant, String> {
            nanos
                .parse::<u64>()
                .map(|n| base + Duration::from_nanos(n))
                .map_err(|e| format!("bad number {nanos:?}: {e}"))
        };
        let number = |text: &str| text.parse::<usize>().map_err(|e| format!("{text:?}: {e}"));
        let mut latency = Latency::new();
        let mut events = Vec::new();
        let mut elapsed = None;
        for line in output {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["A", client, asked, got] => {
                    let (asked, got) = (at(asked)?, at(got)?);
                    latency.record(got - asked);
                    events.push((
                        got,
                        Event::Acquired {
                            client: number(client)?,
                        },
                    ));
                }
                ["R", client, released] => {
                    events.push((
                        at(released)?,
                        Event::Releasing {
                            client: number(client)?,
                        },
                    ));
                }
                ["DONE", nanos] => {
                    let nanos = nanos.parse().map_err(|e| format!("{nanos:?}: {e}"))?;
                    elapsed = Some(Duration::from_nanos(nanos));
                }
                ["E", ..] => return Err(format!("{} failed: {line}", self.label)),
                _ => {}
            }
        }
        let elapsed =
            elapsed.ok_or_else(|| format!("the {} bench printed no result", self.label))?;
        let ops = latency.count();
        Ok(Measured {
            subject: self.label.clone(),
            url: self.url.to_owned(),
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
            delivered_per_op: Vec::new(),
            errors: 0,
            skipped: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> PeerRun<'static> {
        PeerRun {
            label: "etcd/go".into(),
            url: "etcd://127.0.0.1:2379",
            duration: Duration::from_secs(1),
            stats: None,
        }
    }

    #[test]
    fn parses_a_peers_lines() {
        let lines: Vec<String> = [
            "A 0 0 1000000",
            "R 0 2000000",
            "A 1 500000 3000000",
            "R 1 4000000",
            "DONE 1000000000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = run().parse(2, &lines).unwrap();
        assert_eq!(m.ops, 2);
        assert!((m.ops_per_sec - 2.0).abs() < 1e-9, "{m:?}");
        let handoff = m.handoff.expect("one hand-off, client 0 to 1");
        assert_eq!(handoff.count, 1);
        assert!((900..=1100).contains(&handoff.p50_us), "{handoff:?}");
    }

    #[test]
    fn a_peer_error_or_missing_result_is_an_error() {
        let failed = vec!["A 0 0 1".to_string(), "E lost session".to_string()];
        assert!(run()
            .parse(2, &failed)
            .unwrap_err()
            .contains("lost session"));
        assert!(run()
            .parse(2, &["A 0 0 1".to_string()])
            .unwrap_err()
            .contains("no result"));
    }
}
