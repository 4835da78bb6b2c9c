//! The benchmark scenarios and the loop that measures them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::progress::Progress;
use super::server_stats::{PerOp, ServerStats, Snapshot};
use super::stats::{Latency, Percentiles};
use super::subject::{Op, Subject};

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One client: acquire + release in a loop.
    Single,
    /// N clients contending for one name.
    Contend(usize),
    /// One client takes N distinct names, holds them all, then releases them.
    Names(usize),
    /// 8 clients on a semaphore of 3 permits.
    Semaphore,
    /// 8 clients on one read-write lock, 9 reads to 1 write.
    ReadHeavy,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Single,
        Scenario::Contend(1),
        Scenario::Contend(8),
        Scenario::Contend(64),
        Scenario::Names(1_000),
        Scenario::Names(10_000),
        Scenario::Semaphore,
        Scenario::ReadHeavy,
    ];

    pub fn name(&self) -> String {
        match self {
            Scenario::Single => "single".into(),
            Scenario::Contend(n) => format!("contend-{n}"),
            Scenario::Names(n) if n % 1000 == 0 => format!("names-{}k", n / 1000),
            Scenario::Names(n) => format!("names-{n}"),
            Scenario::Semaphore => "semaphore".into(),
            Scenario::ReadHeavy => "rwlock-read-heavy".into(),
        }
    }

    pub fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| {
                let known: Vec<String> = Scenario::ALL.iter().map(Scenario::name).collect();
                format!("unknown scenario {text:?}; known: {}", known.join(", "))
            })
    }

    fn ops(&self) -> Vec<Op> {
        match self {
            Scenario::Semaphore => vec![Op::Permits { limit: 3, count: 1 }],
            Scenario::ReadHeavy => vec![Op::Read, Op::Write],
            _ => vec![Op::Mutex],
        }
    }
}

/// What one scenario measured on one subject.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub subject: String,
    pub url: String,
    pub scenario: String,
    pub clients: usize,
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub acquire: Option<Percentiles>,
    pub handoff: Option<Percentiles>,
    pub requests_per_op: Option<f64>,
    /// What the server delivered per acquisition (see [`super::server_stats`]).
    pub delivered_per_op: Vec<PerOp>,
    pub errors: u64,
    pub skipped: Option<String>,
}

impl Measured {
    /// A row for a run that failed.
    pub fn failed(subject: String, url: &str, scenario: Scenario, why: String) -> Self {
        Measured {
            subject,
            url: url.to_owned(),
            scenario: scenario.name(),
            clients: 0,
            ops: 0,
            seconds: 0.0,
            ops_per_sec: 0.0,
            acquire: None,
            handoff: None,
            requests_per_op: None,
            delivered_per_op: Vec::new(),
            errors: 1,
            skipped: Some(format!("failed: {why}")),
        }
    }

    fn skipped(subject: &dyn Subject, scenario: Scenario, why: String) -> Self {
        Measured {
            subject: subject.label(),
            url: subject.url().to_owned(),
            scenario: scenario.name(),
            clients: 0,
            ops: 0,
            seconds: 0.0,
            ops_per_sec: 0.0,
            acquire: None,
            handoff: None,
            requests_per_op: None,
            delivered_per_op: Vec::new(),
            errors: 0,
            skipped: Some(why),
        }
    }
}

/// One acquisition or release, for hand-off latencies.
#[derive(Clone, Copy)]
pub enum Event {
    Acquired { client: usize },
    Releasing { client: usize },
}

/// Runs `scenario` on `subject` for about `duration`.
pub async fn measure(
    subject: &dyn Subject,
    scenario: Scenario,
    duration: Duration,
    stats: Option<&dyn ServerStats>,
    progress: &Progress,
) -> Measured {
    if let Some(why) = scenario
        .ops()
        .into_iter()
        .find_map(|op| subject.unsupported(op))
    {
        return Measured::skipped(subject, scenario, why);
    }
    let label = format!("{} {}", subject.label(), scenario.name());
    let result = match scenario {
        Scenario::Names(n) => names(subject, n, stats, progress, &label).await,
        Scenario::Single | Scenario::Contend(_) => {
            let clients = match scenario {
                Scenario::Contend(n) => n,
                _ => 1,
            };
            let mix = [Op::Mutex];
            contend(subject, clients, duration, &mix, stats, progress, &label).await
        }
        Scenario::Semaphore => {
            contend(
                subject,
                8,
                duration,
                &scenario.ops(),
                stats,
                progress,
                &label,
            )
            .await
        }
        Scenario::ReadHeavy => {
            let mix = [[Op::Read; 9].as_slice(), &[Op::Write]].concat();
            contend(subject, 8, duration, &mix, stats, progress, &label).await
        }
    };
    match result {
        Ok(mut m) => {
            m.scenario = scenario.name();
            m
        }
        Err(why) => {
            let mut m = Measured::skipped(subject, scenario, format!("failed: {why}"));
            m.errors = 1;
            m
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("bench/{prefix}-{nanos:x}")
}

/// `clients` clients loop over `mix` (cycled) on one name until `duration` passes.
async fn contend(
    subject: &dyn Subject,
    clients: usize,
    duration: Duration,
    mix: &[Op],
    stats: Option<&dyn ServerStats>,
    progress: &Progress,
    label: &str,
) -> Result<Measured, String> {
    let name = unique("contend");
    let mut connected = Vec::new();
    for _ in 0..clients {
        connected.push(Arc::new(subject.client().await?));
    }
    let before = snapshot(stats).await?;
    let events = Arc::new(Mutex::new(Vec::<(Instant, Event)>::new()));
    let started = Instant::now();
    let deadline = started + duration;
    let ops_done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = progress.start(label, duration, ops_done.clone());
    let mut tasks = Vec::new();
    for (index, client) in connected.iter().enumerate() {
        let client = client.clone();
        let name = name.clone();
        let events = events.clone();
        let ops_done = ops_done.clone();
        let mix: Vec<Op> = mix.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latency = Latency::new();
            let mut errors = 0u64;
            let mut k = index;
            while Instant::now() < deadline {
                let op = mix[k % mix.len()];
                k += 1;
                let asked = Instant::now();
                let held = match client.acquire(&name, op).await {
                    Ok(held) => held,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                let acquired = Instant::now();
                latency.record(acquired - asked);
                let exclusive = !matches!(op, Op::Read | Op::Permits { .. });
                if exclusive {
                    lock_events(&events).push((acquired, Event::Acquired { client: index }));
                    lock_events(&events).push((Instant::now(), Event::Releasing { client: index }));
                }
                if held.release().await.is_err() {
                    errors += 1;
                }
                ops_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (latency, errors)
        }));
    }
    let mut acquire = Latency::new();
    let mut errors = 0;
    for task in tasks {
        let (latency, e) = task.await.map_err(|e| e.to_string())?;
        acquire.merge(&latency);
        errors += e;
    }
    let elapsed = started.elapsed();
    progress.finish(ticker);
    let after = snapshot(stats).await?;
    for client in &connected {
        client.close().await;
    }
    let ops = acquire.count();
    let handoff = handoffs_from(&mut lock_events(&events));
    Ok(Measured {
        subject: subject.label(),
        url: subject.url().to_owned(),
        scenario: String::new(),
        clients,
        ops,
        seconds: elapsed.as_secs_f64(),
        ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
        acquire: acquire.summary(),
        handoff: if clients > 1 { handoff.summary() } else { None },
        requests_per_op: after.requests_per_op(&before, ops),
        delivered_per_op: after.delivered_per_op(&before, ops),
        errors,
        skipped: None,
    })
}

fn lock_events(
    events: &Mutex<Vec<(Instant, Event)>>,
) -> std::sync::MutexGuard<'_, Vec<(Instant, Event)>> {
    events.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hand-off latency: from one client starting its release to the next (other) client's
/// acknowledged acquisition.
pub fn handoffs_from(events: &mut [(Instant, Event)]) -> Latency {
    events.sort_by_key(|(at, _)| *at);
    let mut latency = Latency::new();
    let mut releasing: Option<(Instant, usize)> = None;
    for (at, event) in events.iter() {
        match *event {
            Event::Releasing { client } => releasing = Some((*at, client)),
            Event::Acquired { client } => {
                if let Some((released_at, previous)) = releasing.take() {
                    if previous != client {
                        latency.record(at.saturating_duration_since(released_at));
                    }
                }
            }
        }
    }
    latency
}

/// The store's counters now (empty when it has none we can read).
pub async fn snapshot(stats: Option<&dyn ServerStats>) -> Result<Snapshot, String> {
    match stats {
        Some(stats) => stats.snapshot().await,
        None => Ok(Snapshot::default()),
    }
}

/// One client takes `n` names one after another, holds them all, then releases them.
async fn names(
    subject: &dyn Subject,
    n: usize,
    stats: Option<&dyn ServerStats>,
    progress: &Progress,
    label: &str,
) -> Result<Measured, String> {
    let client = subject.client().await?;
    let prefix = unique("names");
    let before = snapshot(stats).await?;
    let ops_done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = progress.start(label, Duration::ZERO, ops_done.clone());
    let started = Instant::now();
    let mut latency = Latency::new();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let asked = Instant::now();
        held.push(client.acquire(&format!("{prefix}/{i}"), Op::Mutex).await?);
        latency.record(asked.elapsed());
        ops_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut errors = 0;
    for h in held {
        if h.release().await.is_err() {
            errors += 1;
        }
    }
    let elapsed = started.elapsed();
    progress.finish(ticker);
    let after = snapshot(stats).await?;
    client.close().await;
    Ok(Measured {
        subject: subject.label(),
        url: subject.url().to_owned(),
        scenario: String::new(),
        clients: 1,
        ops: n as u64,
        seconds: elapsed.as_secs_f64(),
        ops_per_sec: n as f64 / elapsed.as_secs_f64(),
        acquire: latency.summary(),
        handoff: None,
        requests_per_op: after.requests_per_op(&before, n as u64),
        delivered_per_op: after.delivered_per_op(&before, n as u64),
        errors,
        skipped: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoff_pairs_release_with_next_other_client() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut events = vec![
            (ms(0), Event::Acquired { client: 0 }),
            (ms(5), Event::Releasing { client: 0 }),
            (ms(7), Event::Acquired { client: 1 }),
            (ms(9), Event::Releasing { client: 1 }),
            (ms(10), Event::Acquired { client: 1 }), // same client again: not a hand-off
        ];
        let h = handoffs_from(&mut events);
        assert_eq!(h.count(), 1);
        let p = h.summary().unwrap();
        assert!((1_900..=2_100).contains(&p.p50_us), "{p:?}");
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(&s.name()), Ok(s));
        }
        assert!(Scenario::parse("nope").unwrap_err().contains("contend-8"));
    }
}
