//! One lab cell: one store, one fault, a holder (the victim) and a rival, both real processes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tumbler_locks::params::format_duration;

use super::deploy::{Deployment, Fault, Store, TTL};
use super::resources::Fenced;
use super::trials::TrialPlan;

/// Which worker said something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Who {
    Victim,
    Rival,
}

/// What a worker said, when the lab heard it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: f64,
    pub who: Who,
    pub kind: EventKind,
}

#[derive(Debug, Clone, Serialize)]
pub enum EventKind {
    Acquired {
        token: u64,
    },
    Write {
        token: u64,
        fenced_ok: bool,
        stale: bool,
    },
    Lost {
        reason: String,
    },
    Failed {
        message: String,
    },
    /// A transient failure the worker retries (the store unreachable).
    Retry {
        message: String,
    },
}

/// What one cell measured.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    pub store: &'static str,
    pub fault: &'static str,
    /// The trial's number and drawn timing.
    pub plan: TrialPlan,
    /// Writes the unfenced resource accepted from the old holder after the rival held the lock.
    pub unfenced_violations: u64,
    /// Writes the fenced resource rejected as stale.
    pub fenced_rejected: u64,
    /// Stale writes (from the old holder after the rival held) that the fenced resource accepted:
    /// possible only if tokens did not increase.
    pub fenced_stale_accepted: u64,
    /// From the fault to the rival's acquisition.
    pub recovery_ms: Option<f64>,
    /// Rival's acquisition minus the old holder's `lost()`: positive means `lost()` came first.
    pub lost_lead_ms: Option<f64>,
    pub fault_at_ms: f64,
    pub end_ms: f64,
    pub events: Vec<Event>,
    pub note: String,
}

struct Worker {
    child: Child,
}

impl Worker {
    fn spawn(
        url: &str,
        name: &str,
        who: Who,
        careless: bool,
        tx: mpsc::UnboundedSender<(Instant, Who, String)>,
    ) -> Result<Worker, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the tumbler binary: {e}"))?;
        let mut command = Command::new(exe);
        command.args(["lab-worker", "--every", "20ms"]);
        if careless {
            command.arg("--ignore-lost");
        }
        let mut child = command
            .args([url, name])
            .env("TUMBLER_URL", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a lab worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("worker has no stdout")?;
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((Instant::now(), who, line)).is_err() {
                    break;
                }
            }
        });
        Ok(Worker { child })
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// Runs one trial of the cell.
pub async fn run(store: Store, fault: Fault, plan: TrialPlan) -> Result<CellResult, String> {
    let deployment = Deployment::start(store, fault).await?;
    let name = format!(
        "lab/{}-{}",
        store.name().replace([' ', '='], "-"),
        std::process::id()
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let ms = |at: Instant| at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
    let mut log: Vec<(Instant, Who, String)> = Vec::new();

    let mut victim = Worker::spawn(
        &deployment.victim_url,
        &name,
        Who::Victim,
        store.careless(),
        tx.clone(),
    )?;
    wait_for(
        &mut rx,
        &mut log,
        Who::Victim,
        "ACQUIRED",
        Duration::from_secs(20),
    )
    .await?;
    let mut rival = Worker::spawn(&deployment.rival_url, &name, Who::Rival, false, tx.clone())?;
    // Let the victim work undisturbed for the drawn time (and the rival queue up); 0 puts the
    // fault right after the grant, before any renewal.
    collect_for(&mut rx, &mut log, Duration::from_millis(plan.settle_ms)).await;

    if fault == Fault::WaiterCrash {
        // The waiting rival dies; a new one queues behind whatever it left.
        rival.child.kill().await.map_err(|e| e.to_string())?;
        rival = Worker::spawn(&deployment.rival_url, &name, Who::Rival, false, tx.clone())?;
    }
    let fault_at = Instant::now();
    match fault {
        Fault::Crash | Fault::WaiterCrash => {
            victim.child.kill().await.map_err(|e| e.to_string())?
        }
        Fault::Pause => victim.signal(libc::SIGSTOP),
        _ => deployment.inject(fault).await?,
    }
    // Pauses, partitions, stalls and slow links last twice the TTL, then end.
    let lift_at = fault_at + TTL * 2;
    let deadline = fault_at + TTL * 6 + Duration::from_secs(10);
    let mut lifted = !fault.is_lifted();
    let mut rival_at: Option<Instant> = None;
    while Instant::now() < deadline {
        if !lifted && Instant::now() >= lift_at {
            match fault {
                Fault::Pause => victim.signal(libc::SIGCONT),
                _ => deployment.heal(),
            }
            lifted = true;
        }
        let wake = if lifted { deadline } else { lift_at };
        match tokio::time::timeout_at(tokio::time::Instant::from_std(wake), rx.recv()).await {
            Ok(Some(entry)) => {
                if rival_at.is_none() && entry.1 == Who::Rival && entry.2.starts_with("ACQUIRED") {
                    rival_at = Some(entry.0);
                }
                log.push(entry);
            }
            Ok(None) => break,
            Err(_) => {}
        }
        if let Some(at) = rival_at {
            if lifted && Instant::now() > at + Duration::from_millis(1500) {
                break;
            }
        }
    }
    if !lifted {
        victim.signal(libc::SIGCONT);
        deployment.heal();
    }
    collect_for(&mut rx, &mut log, Duration::from_millis(300)).await;
    let end = Instant::now();
    drop(rival);
    drop(victim);
    drop(deployment);

    Ok(score(
        store, fault, plan, &log, t0, fault_at, rival_at, end, ms,
    ))
}

#[allow(clippy::too_many_arguments)]
fn score(
    store: Store,
    fault: Fault,
    plan: TrialPlan,
    log: &[(Instant, Who, String)],
    t0: Instant,
    fault_at: Instant,
    rival_at: Option<Instant>,
    end: Instant,
    ms: impl Fn(Instant) -> f64,
) -> CellResult {
    let _ = t0;
    let mut fenced = Fenced::default();
    let mut events = Vec::new();
    let mut unfenced_violations = 0;
    let mut fenced_rejected = 0;
    let mut fenced_stale_accepted = 0;
    let mut victim_lost_at = None;
    let mut rival_holds = false;
    let mut note = String::new();
    let mut sorted: Vec<&(Instant, Who, String)> = log.iter().collect();
    sorted.sort_by_key(|(at, _, _)| *at);
    for (at, who, line) in sorted {
        let mut words = line.split_whitespace();
        let kind = match (
            words.next(),
            words.next().and_then(|t| t.parse::<u64>().ok()),
        ) {
            (Some("ACQUIRED"), Some(token)) => {
                if *who == Who::Rival {
                    rival_holds = true;
                }
                fenced.observe(token);
                EventKind::Acquired { token }
            }
            (Some("WRITE"), Some(token)) => {
                let fenced_ok = fenced.write(token);
                let stale = *who == Who::Victim && rival_holds;
                if stale {
                    unfenced_violations += 1;
                    if fenced_ok {
                        fenced_stale_accepted += 1;
                    }
                }
                if !fenced_ok {
                    fenced_rejected += 1;
                }
                EventKind::Write {
                    token,
                    fenced_ok,
                    stale,
                }
            }
            (Some("RETRY"), _) => EventKind::Retry {
                message: line.trim_start_matches("RETRY").trim().to_owned(),
            },
            (Some("LOST"), _) => {
                if *who == Who::Victim && victim_lost_at.is_none() {
                    victim_lost_at = Some(*at);
                }
                EventKind::Lost {
                    reason: line.trim_start_matches("LOST").trim().to_owned(),
                }
            }
            _ => {
                note = format!("{who:?}: {line}");
                EventKind::Failed {
                    message: line.clone(),
                }
            }
        };
        events.push(Event {
            at_ms: ms(*at),
            who: *who,
            kind,
        });
    }
    let recovery_ms =
        rival_at.map(|at| at.saturating_duration_since(fault_at).as_secs_f64() * 1000.0);
    let lost_lead_ms = match (rival_at, victim_lost_at) {
        (Some(rival), Some(lost)) => Some(ms(rival) - ms(lost)),
        _ => None,
    };
    if rival_at.is_none() && note.is_empty() {
        note = match victim_lost_at {
            None => "the holder kept the lock throughout (no false lost())".into(),
            Some(_) => "lost() fired but the rival never got the lock".into(),
        };
    }
    CellResult {
        store: store.name(),
        fault: fault.name(),
        plan,
        unfenced_violations,
        fenced_rejected,
        fenced_stale_accepted,
        recovery_ms,
        lost_lead_ms,
        fault_at_ms: ms(fault_at),
        end_ms: ms(end),
        events,
        note,
    }
}

async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<(Instant, Who, String)>,
    log: &mut Vec<(Instant, Who, String)>,
    who: Who,
    prefix: &str,
    limit: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(entry)) => {
                let done = entry.1 == who && entry.2.starts_with(prefix);
                let failed = entry.2.starts_with("ERROR");
                let line = entry.2.clone();
                log.push(entry);
                if failed {
                    return Err(format!("{who:?} worker: {line}"));
                }
                if done {
                    return Ok(());
                }
            }
            Ok(None) => return Err("workers went away".into()),
            Err(_) => {
                return Err(format!(
                    "{who:?} worker did not report {prefix} within {}",
                    format_duration(limit)
                ))
            }
        }
    }
}

async fn collect_for(
    rx: &mut mpsc::UnboundedReceiver<(Instant, Who, String)>,
    log: &mut Vec<(Instant, Who, String)>,
    span: Duration,
) {
    let deadline = tokio::time::Instant::now() + span;
    while let Ok(Some(entry)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        log.push(entry);
    }
}
