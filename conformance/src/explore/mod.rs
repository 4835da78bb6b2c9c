//! The explorer: seeded schedules of operations and faults over several clients, run on any
//! [`Harness`] and checked as one history.
//!
//! - [`generator`] turns a seed and a store's [`Profile`] into a [`Schedule`]
//!   (deterministic: the same seed on the same store gives the same schedule).
//! - [`executor`] runs it: each client on its own thread and current-thread runtime (so a
//!   stall stops that client alone), faults injected through the harness's hooks on a timeline,
//!   then a liveness probe.
//! - [`checker`] reads the whole [`Recording`] against the contract.
//! - [`shrinker`] makes a failing schedule small while it keeps failing.
//!
//! [`Explorer::explore`] runs seeds until its budget is spent and returns a [`Report`] with the
//! figures (schedules, operations, faults) and every failure with its seed and shrunk
//! schedule. `tests/explore.rs` runs it on every store and on every mutant.

pub mod checker;
pub mod executor;
pub mod generator;
pub mod recording;
pub mod schedule;
pub mod shrinker;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tumbler_core::Fencing;

pub use checker::{check, CheckConfig, Finding, Rule};
pub use executor::{execute, Limits};
pub use generator::{generate, Profile};
pub use recording::Recording;
pub use schedule::{Fault, Prim, Schedule, Step, TimedFault, WaitHow};

use crate::harness::{Harness, HookError};

/// How the explorer treats one store.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The store's lock TTL or session timeout as the harness configures it.
    pub ttl: Duration,
    /// Time limits and tolerances.
    pub limits: Limits,
}

impl Settings {
    /// Settings for the in-process memory store (and the mutants built on it).
    pub fn memory(harness: &dyn Harness) -> Settings {
        let bound = harness.crash_release_bound();
        Settings {
            ttl: crate::memory::MEMORY_TTL,
            limits: Limits {
                margin: harness.request_timeout() + Duration::from_secs(1),
                request_timeout: harness.request_timeout(),
                op_limit: harness.request_timeout() + Duration::from_secs(3),
                forever_limit: Duration::from_secs(20),
                liveness_bound: bound.max(harness.killed_waiter_bound()) + Duration::from_secs(2),
                drift: Duration::from_millis(5),
                grace: Duration::from_millis(300),
            },
        }
    }

    /// Settings for a real store whose lock TTL or session timeout is `ttl`.
    pub fn real(harness: &dyn Harness, ttl: Duration) -> Settings {
        Settings {
            ttl,
            limits: Limits {
                margin: harness.request_timeout() + Duration::from_secs(3),
                request_timeout: harness.request_timeout(),
                op_limit: harness.request_timeout() * 2 + Duration::from_secs(5),
                forever_limit: Duration::from_secs(60),
                liveness_bound: harness
                    .crash_release_bound()
                    .max(harness.killed_waiter_bound())
                    + Duration::from_secs(5),
                drift: Duration::from_millis(30),
                grace: Duration::from_secs(2),
            },
        }
    }
}

/// How long and from which seed to explore.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Stop starting schedules after this long.
    pub time: Duration,
    /// The first seed (the next ones follow it).
    pub first_seed: u64,
    /// Stop after this many schedules.
    pub max_schedules: usize,
    /// Stop at the first failing seed (after shrinking it).
    pub stop_at_failure: bool,
    /// How many runs the shrinker may make per failure.
    pub shrink_runs: usize,
    /// How long the shrinker may take per failure.
    pub shrink_time: Duration,
}

impl Budget {
    /// `default` unless `TUMBLER_EXPLORE_BUDGET` says otherwise (`45s`, `30m`, `2h` or
    /// seconds); the first seed from `TUMBLER_EXPLORE_SEED` (default 1).
    pub fn from_env(default: Duration) -> Budget {
        let time = std::env::var("TUMBLER_EXPLORE_BUDGET")
            .ok()
            .and_then(|text| parse_duration(&text))
            .unwrap_or(default);
        let first_seed = std::env::var("TUMBLER_EXPLORE_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        Budget {
            time,
            first_seed,
            max_schedules: usize::MAX,
            stop_at_failure: false,
            shrink_runs: 24,
            shrink_time: Duration::from_secs(90),
        }
    }
}

/// Parses `45s`, `30m`, `2h`, `500ms` or a number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number.parse().ok()?;
    Some(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

/// One failing seed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// What failed in the original run.
    pub findings: Vec<Finding>,
    /// The generated schedule.
    pub original: Schedule,
    /// The generated schedule's length.
    pub original_len: usize,
    /// The shrunk schedule that still fails the first failing rule.
    pub shrunk: Schedule,
    /// What failed in the shrunk schedule's last failing run.
    pub shrunk_findings: Vec<Finding>,
    /// For each further failing rule: a schedule shrunk for that rule alone.
    pub others: Vec<(Rule, Schedule)>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed (schedule of {} shrunk to {}):",
            self.seed,
            self.original_len,
            self.shrunk.len()
        )?;
        for finding in self.findings.iter().filter(|f| f.failure).take(8) {
            writeln!(f, "  {finding}")?;
        }
        writeln!(f, "shrunk run:")?;
        for finding in self.shrunk_findings.iter().filter(|f| f.failure).take(8) {
            writeln!(f, "  {finding}")?;
        }
        write!(f, "{}", self.shrunk)?;
        for (rule, schedule) in &self.others {
            write!(f, "shrunk for {rule} alone: {schedule}")?;
        }
        write!(f, "generated {}", self.original)
    }
}

/// What one exploration did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The store's name.
    pub store: String,
    /// Schedules run (not counting shrinking runs).
    pub schedules: usize,
    /// Schedules that could not be set up (a client did not connect).
    pub setup_errors: usize,
    /// Calls checked.
    pub operations: usize,
    /// Holds checked.
    pub holds: usize,
    /// Faults injected (hooks that ran).
    pub faults: usize,
    /// Soft warnings, by rule, with an example.
    pub warnings: Vec<(Rule, usize, String)>,
    /// Failing seeds.
    pub failures: Vec<Failure>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "explore {}: {} schedules, {} operations, {} holds, {} faults injected, {} failing seeds",
            self.store,
            self.schedules,
            self.operations,
            self.holds,
            self.faults,
            self.failures.len()
        )?;
        if self.setup_errors > 0 {
            write!(f, ", {} schedules not set up", self.setup_errors)?;
        }
        for (rule, count, example) in &self.warnings {
            write!(f, "\n  warn {rule} x{count}, e.g. {example}")?;
        }
        Ok(())
    }
}

/// The explorer for one store.
pub struct Explorer {
    harness: Arc<dyn Harness>,
    profile: Profile,
    settings: Settings,
    strict_fencing: bool,
}

impl Explorer {
    /// Probes which primitives and hooks the store has (a hook answering
    /// [`HookError::Unsupported`] is never generated) and returns the explorer.
    pub async fn new(harness: Arc<dyn Harness>, settings: Settings) -> Result<Explorer, String> {
        let client = harness.client().await?;
        let caps = client.locks.capabilities();
        let supported =
            |outcome: Result<(), HookError>| !matches!(outcome, Err(HookError::Unsupported(_)));
        let cut = supported(harness.cut_connection(&client).await);
        if cut {
            harness
                .heal_connection(&client)
                .await
                .map_err(|e| format!("healing the probe client: {e}"))?;
        }
        let expire = supported(harness.expire_session(&client).await);
        let probe_name = crate::util::unique_name("explore-probe");
        let holder = match harness.spawn_holder(&probe_name).await {
            Ok(mut holder) => {
                let _ = holder.kill().await;
                true
            }
            Err(HookError::Unsupported(_)) => false,
            Err(HookError::Failed(e)) => return Err(format!("the holder hook failed: {e}")),
        };
        let waiter = match harness
            .spawn_waiter(&probe_name, Duration::from_secs(5))
            .await
        {
            Ok(mut waiter) => {
                let _ = waiter.kill().await;
                true
            }
            Err(HookError::Unsupported(_)) => false,
            Err(HookError::Failed(e)) => return Err(format!("the waiter hook failed: {e}")),
        };
        let pause = supported(harness.pause_server().await);
        if pause {
            harness
                .resume_server()
                .await
                .map_err(|e| format!("resuming the store: {e}"))?;
        }
        let foreign_name = crate::util::unique_name("explore-probe-foreign");
        let foreign = supported(
            harness
                .write_foreign(&foreign_name, crate::harness::Foreign::WrongType)
                .await,
        );
        let restart = supported(harness.restart_server().await);
        let _ = client.locks.shutdown().await;
        let profile = Profile {
            ttl_ms: settings.ttl.as_millis() as u64,
            rwlock: caps.rwlock,
            semaphore: caps.semaphore,
            revocation: caps.revocation,
            cut,
            expire,
            holder,
            waiter,
            pause,
            foreign,
            restart,
            election: caps.election,
        };
        Ok(Explorer {
            harness,
            profile,
            settings,
            strict_fencing: caps.fencing == Fencing::StrictlyIncreasing,
        })
    }

    /// What the generator may use on this store.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The schedule of `seed` on this store.
    pub fn schedule(&self, seed: u64) -> Schedule {
        generate(seed, &self.profile)
    }

    /// Runs `schedule` once and checks it. `Err`: the run could not be set up.
    pub async fn run(&self, schedule: &Schedule) -> Result<(Recording, Vec<Finding>), String> {
        let prefix = crate::util::unique_name(&format!("explore/{}", schedule.seed));
        let recording = execute(
            self.harness.clone(),
            schedule,
            self.settings.limits,
            prefix.as_str(),
        )
        .await?;
        let config = CheckConfig {
            strict_fencing: self.strict_fencing,
            limits: self.settings.limits,
        };
        let findings = check(schedule, &recording, &config);
        Ok((recording, findings))
    }

    /// Runs the schedule of `seed`; on failure shrinks it within the budget's shrink limits.
    pub async fn run_seed(&self, seed: u64, budget: &Budget) -> Result<SeedRun, String> {
        let schedule = self.schedule(seed);
        let (recording, findings) = self.run(&schedule).await?;
        let failing: BTreeSet<Rule> = findings
            .iter()
            .filter(|f| f.failure)
            .map(|f| f.rule)
            .collect();
        let failure = if failing.is_empty() {
            None
        } else {
            Some(self.shrink(&schedule, &findings, &failing, budget).await)
        };
        Ok(SeedRun {
            schedule,
            recording,
            findings,
            failure,
        })
    }

    async fn shrink(
        &self,
        schedule: &Schedule,
        findings: &[Finding],
        failing: &BTreeSet<Rule>,
        budget: &Budget,
    ) -> Failure {
        // The first failing rule gets the shrinker's full budget; up to two others a third
        // each, so each defect gets a small schedule of its own.
        let mut rules = failing.iter().copied();
        let first = rules.next();
        let (shrunk, shrunk_findings) = match first {
            Some(rule) => {
                self.shrink_for(
                    schedule,
                    findings,
                    rule,
                    budget.shrink_runs,
                    budget.shrink_time,
                )
                .await
            }
            None => (schedule.clone(), findings.to_vec()),
        };
        let mut others = Vec::new();
        for rule in rules.take(2) {
            let (small, _) = self
                .shrink_for(
                    schedule,
                    findings,
                    rule,
                    budget.shrink_runs / 3,
                    budget.shrink_time / 3,
                )
                .await;
            others.push((rule, small));
        }
        Failure {
            seed: schedule.seed,
            findings: findings.to_vec(),
            original: schedule.clone(),
            original_len: schedule.len(),
            shrunk,
            shrunk_findings,
            others,
        }
    }

    /// Shrinks `schedule` while its runs keep failing `rule`.
    async fn shrink_for(
        &self,
        schedule: &Schedule,
        findings: &[Finding],
        rule: Rule,
        runs: usize,
        time: Duration,
    ) -> (Schedule, Vec<Finding>) {
        let last = std::sync::Mutex::new(findings.to_vec());
        let (shrunk, _runs) =
            shrinker::shrink(schedule.clone(), runs, Instant::now() + time, |candidate| {
                let last = &last;
                async move {
                    let Ok((_, found)) = self.run(&candidate).await else {
                        return false;
                    };
                    let again = found.iter().any(|f| f.failure && f.rule == rule);
                    if again {
                        *last.lock().unwrap_or_else(|p| p.into_inner()) = found;
                    }
                    again
                }
            })
            .await;
        (shrunk, last.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs seeds from `budget.first_seed` until the budget is spent. Prints each failure
    /// (seed, findings, shrunk schedule) as it is found.
    pub async fn explore(&self, budget: Budget) -> Report {
        let mut report = Report {
            store: self.harness.name(),
            ..Report::default()
        };
        let started = Instant::now();
        let mut seed = budget.first_seed;
        while started.elapsed() < budget.time && report.schedules < budget.max_schedules {
            let run = self.run_seed(seed, &budget).await;
            seed += 1;
            let run = match run {
                Ok(run) => run,
                Err(e) => {
                    report.setup_errors += 1;
                    crate::runner::report_line(&format!(
                        "explore {}: seed {} not set up: {e}",
                        report.store,
                        seed - 1
                    ));
                    if report.setup_errors > 5 && report.schedules == 0 {
                        break;
                    }
                    continue;
                }
            };
            report.schedules += 1;
            report.operations += run.recording.calls.len();
            report.holds += run.recording.holds.len() + run.recording.holders.len();
            report.faults += run
                .recording
                .faults
                .iter()
                .filter(|f| f.failed.is_none())
                .count()
                + run
                    .schedule
                    .clients
                    .iter()
                    .flatten()
                    .filter(|s| matches!(s, Step::Stall { .. }))
                    .count();
            for finding in run.findings.iter().filter(|f| !f.failure) {
                match report.warnings.iter_mut().find(|w| w.0 == finding.rule) {
                    Some(w) => w.1 += 1,
                    None => report
                        .warnings
                        .push((finding.rule, 1, finding.detail.clone())),
                }
            }
            if let Some(failure) = run.failure {
                crate::runner::report_line(&format!("explore {}: {failure}", report.store));
                report.failures.push(failure);
                if budget.stop_at_failure {
                    break;
                }
            }
        }
        report
    }
}

/// One seed's run.
#[derive(Debug)]
pub struct SeedRun {
    /// The generated schedule.
    pub schedule: Schedule,
    /// What happened.
    pub recording: Recording,
    /// What the checker found (failures and warnings).
    pub findings: Vec<Finding>,
    /// The failure, shrunk, if any check failed.
    pub failure: Option<Failure>,
}
