//! Runs one [`Schedule`] on a [`Harness`] and records what happened.
//!
//! Every client runs on its own thread with its own current-thread runtime, connected from
//! that runtime, so a stall (`std::thread::sleep`) stops that client alone: its renewals,
//! watchers and connection tasks, as a GC pause or SIGSTOP would. A controller on the
//! caller's runtime injects the faults on their timeline. After the scripts, every cut is
//! healed, every holder killed, and a fresh client probes that each name used is free again
//! within the liveness bound.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tumbler_core::{
    Error, Guard, HoldSignals, Leadership, Lease, LockName, LockSpec, LostReason, MultiGuard,
    MultiLock, MutexGuard, ReadGuard, ReentrantGuard, ReentrantMutex, SharedBackend, WriteGuard,
};

use super::recording::{
    CallKind, CallRec, CallResult, EndHow, FaultRec, HoldRec, HolderRec, ProbeRec, Recorder,
    Recording, Seen, Span,
};
use super::schedule::{Fault, Prim, Schedule, Step, TimedFault, WaitHow};
use crate::harness::{Harness, HookError, TestClient};

/// Time limits a run is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far past its own deadline a `try`, `timeout` or cancelled call may return.
    pub margin: Duration,
    /// How long one request may go unanswered before the backend must report an error
    /// ([`crate::Harness::request_timeout`]).
    pub request_timeout: Duration,
    /// How long release, downgrade, state and revoke may take.
    pub op_limit: Duration,
    /// How long a `lock()` may wait (every hold in a schedule ends, so this is finite).
    pub forever_limit: Duration,
    /// How long after the run a lock may stay busy (a killed holder's TTL, a restart delay).
    pub liveness_bound: Duration,
    /// How much two holds may seem to overlap because of measurement (clocks, scheduling).
    pub drift: Duration,
    /// How long after a forced expiry or restart a holder may take to learn of it.
    pub grace: Duration,
}

/// The full lock names of one run: the schedule's names under a prefix unique to the run.
fn lock_names(schedule: &Schedule, prefix: &str) -> Result<Vec<LockName>, String> {
    schedule
        .names
        .iter()
        .map(|n| LockName::new(format!("{prefix}/{n}")).map_err(|e| e.to_string()))
        .collect()
}

/// Runs `schedule` on `harness`; names are made unique with `prefix`. `Err` means the run
/// could not be set up (a client did not connect), not that a check failed.
pub async fn execute(
    harness: Arc<dyn Harness>,
    schedule: &Schedule,
    limits: Limits,
    prefix: &str,
) -> Result<Recording, String> {
    let names = lock_names(schedule, prefix)?;
    let recorder = Recorder::new();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = watch::channel(false);
    let (finish_tx, finish_rx) = watch::channel(false);
    let mut threads = Vec::new();
    for (index, steps) in schedule.clients.iter().enumerate() {
        let ctx = ClientCtx {
            index,
            harness: harness.clone(),
            steps: steps.clone(),
            names: names.clone(),
            recorder: recorder.clone(),
            limits,
            ready: ready_tx.clone(),
            done: done_tx.clone(),
            go: go_rx.clone(),
            finish: finish_rx.clone(),
            observer: tokio::runtime::Handle::current(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("explore-client-{index}"))
            .spawn(move || ctx.run())
            .map_err(|e| format!("cannot start a client thread: {e}"))?;
        threads.push(thread);
    }
    drop(ready_tx);
    drop(done_tx);

    let mut clients: Vec<Option<TestClient>> = vec![None; schedule.clients.len()];
    let mut setup_error = None;
    for _ in 0..schedule.clients.len() {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some((i, Ok(client)))) => clients[i] = Some(client),
            Ok(Some((i, Err(e)))) => setup_error = Some(format!("client {i}: {e}")),
            Ok(None) | Err(_) => {
                setup_error = Some("a client did not connect within 60 s".into());
                break;
            }
        }
    }
    let clients: Vec<TestClient> = clients.into_iter().flatten().collect();
    if setup_error.is_none() && clients.len() != schedule.clients.len() {
        setup_error = Some("a client did not connect".into());
    }
    if let Some(e) = setup_error {
        let _ = finish_tx.send(true);
        join_threads(threads).await;
        return Err(e);
    }

    recorder.with(|r| r.start = Instant::now());
    let start = tokio::time::Instant::now();
    let _ = go_tx.send(true);
    let clients = Arc::new(clients);
    let mut faults = Vec::new();
    for fault in &schedule.faults {
        faults.push(tokio::spawn(inject(
            harness.clone(),
            clients.clone(),
            names.clone(),
            fault.clone(),
            recorder.clone(),
            start,
            limits,
        )));
    }

    // Every script ends: each call has a hard limit.
    for _ in 0..schedule.clients.len() {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
    for fault in faults {
        if let Err(e) = fault.await {
            recorder.direct(usize::MAX, format!("a fault task failed: {e}"), true);
        }
    }
    probe(&harness, schedule, &names, &recorder, limits).await;
    let _ = finish_tx.send(true);
    join_threads(threads).await;
    Ok(recorder.snapshot())
}

async fn join_threads(threads: Vec<std::thread::JoinHandle<()>>) {
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

/// Injects one fault at its time.
async fn inject(
    harness: Arc<dyn Harness>,
    clients: Arc<Vec<TestClient>>,
    names: Vec<LockName>,
    timed: TimedFault,
    recorder: Recorder,
    start: tokio::time::Instant,
    limits: Limits,
) {
    tokio::time::sleep_until(start + Duration::from_millis(timed.at_ms)).await;
    let began = Instant::now();
    let note = |outcome: Result<(), HookError>, began: Instant| {
        let failed = outcome.err().map(|e| e.to_string());
        recorder.with(|r| {
            r.faults.push(FaultRec {
                fault: timed.fault.clone(),
                start: began,
                end: Instant::now(),
                failed,
            })
        });
    };
    match timed.fault {
        Fault::Cut {
            client,
            for_ms,
            probe,
        } => {
            let Some(target) = clients.get(client) else {
                return;
            };
            let cut = harness.cut_connection(target).await;
            let cut_at = Instant::now();
            let ok = cut.is_ok();
            note(cut, began);
            if !ok {
                return;
            }
            let heal_due = tokio::time::Instant::now() + Duration::from_millis(for_ms);
            if let Some(name) = probe.filter(|n| *n < names.len()) {
                tokio::time::sleep(Duration::from_millis(for_ms / 2)).await;
                try_while_cut(target, client, name, &names[name], &recorder, limits).await;
            }
            tokio::time::sleep_until(heal_due).await;
            let heal_at = Instant::now();
            let healed = harness.heal_connection(target).await;
            recorder.with(|r| {
                r.cuts.push(Span {
                    client,
                    start: cut_at,
                    end: heal_at,
                })
            });
            if let Err(e) = healed {
                recorder.direct(client, format!("healing the connection failed: {e}"), true);
            }
        }
        Fault::Expire { client } => {
            let Some(target) = clients.get(client) else {
                return;
            };
            let outcome = harness.expire_session(target).await;
            note(outcome, began);
        }
        Fault::Restart => {
            let outcome = harness.restart_server().await;
            note(outcome, began);
        }
        Fault::PauseServer { for_ms } => {
            let paused = harness.pause_server().await;
            let paused_at = Instant::now();
            let ok = paused.is_ok();
            note(paused, began);
            if !ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(for_ms)).await;
            let resume_at = Instant::now();
            let resumed = harness.resume_server().await;
            recorder.with(|r| {
                r.cuts.push(Span {
                    client: usize::MAX,
                    start: paused_at,
                    end: resume_at,
                })
            });
            if let Err(e) = resumed {
                recorder.direct(usize::MAX, format!("resuming the store failed: {e}"), true);
            }
        }
        Fault::Foreign { name, what } => {
            let Some(lock_name) = names.get(name) else {
                return;
            };
            let outcome = harness.write_foreign(lock_name, what).await;
            note(outcome, began);
        }
        Fault::Holder {
            name,
            kill_after_ms,
            waiter,
        } => {
            let Some(lock_name) = names.get(name) else {
                return;
            };
            let spawned =
                tokio::time::timeout(Duration::from_secs(30), harness.spawn_holder(lock_name))
                    .await
                    .unwrap_or_else(|_| {
                        Err(HookError::Failed(
                            "the holder did not get the lock within 30 s".into(),
                        ))
                    });
            let mut holder = match spawned {
                Ok(holder) => holder,
                Err(e) => {
                    note(Err(e), began);
                    return;
                }
            };
            let granted = Instant::now();
            let index = recorder.with(|r| {
                r.holders.push(HolderRec {
                    name,
                    token: holder.token(),
                    granted,
                    killed: None,
                });
                r.holders.len() - 1
            });
            note(Ok(()), began);
            if let Some(waiter_ms) = waiter {
                // A waiter with a TTL far longer than any bound: its death must free the queue.
                let queued = Instant::now();
                let spawned = harness.spawn_waiter(lock_name, WAITER_TTL).await;
                let failed = spawned.as_ref().err().map(|e| e.to_string());
                recorder.with(|r| {
                    r.faults.push(FaultRec {
                        fault: Fault::Holder {
                            name,
                            kill_after_ms: waiter_ms,
                            waiter: Some(waiter_ms),
                        },
                        start: queued,
                        end: Instant::now(),
                        failed,
                    })
                });
                if let Ok(mut waiter) = spawned {
                    tokio::time::sleep_until(
                        tokio::time::Instant::from_std(granted) + Duration::from_millis(waiter_ms),
                    )
                    .await;
                    if let Err(e) = waiter.kill().await {
                        recorder.direct(usize::MAX, format!("killing a waiter: {e}"), true);
                    }
                }
            }
            tokio::time::sleep_until(
                tokio::time::Instant::from_std(granted) + Duration::from_millis(kill_after_ms),
            )
            .await;
            let killed_at = Instant::now();
            match holder.kill().await {
                Ok(()) => recorder.with(|r| r.holders[index].killed = Some(killed_at)),
                Err(e) => recorder.direct(usize::MAX, format!("killing a holder: {e}"), true),
            }
        }
    }
}

/// One `try_lock` through a client whose connection is cut, recorded as that client's call.
async fn try_while_cut(
    target: &TestClient,
    client: usize,
    name: usize,
    lock_name: &LockName,
    recorder: &Recorder,
    limits: Limits,
) {
    let start = Instant::now();
    let attempt = tokio::time::timeout(
        limits.margin + Duration::from_secs(10),
        acquire_one(&target.locks, None, lock_name, Prim::Mutex, Inner::Try),
    )
    .await;
    let end = Instant::now();
    let result = match attempt {
        Err(_) => CallResult::Hung,
        Ok(Ok(None)) => CallResult::Busy,
        Ok(Err(e)) => CallResult::Failed {
            variant: variant(&e),
            message: chain(&e),
        },
        Ok(Ok(Some(guard))) => {
            // Granted through a cut connection: kept for the exclusion checks as a hold
            // released at once.
            let id = recorder.hold(HoldRec {
                client,
                name,
                prim: Prim::Mutex,
                token: guard.token(),
                granted: end,
                multi: false,
                confirmed: end,
                lost: None,
                ended: Some((end, EndHow::Release)),
                revoke_seen: None,
            });
            let _ = tokio::time::timeout(limits.op_limit, guard.release()).await;
            CallResult::Granted(vec![id])
        }
    };
    recorder.with(|r| {
        r.calls.push(CallRec {
            client,
            kind: CallKind::Acquire {
                name,
                prim: Prim::Mutex,
                wait: WaitHow::Try,
            },
            start,
            end,
            result,
        })
    });
}

/// The TTL of waiter processes: far longer than any store's bound for a killed waiter.
const WAITER_TTL: Duration = Duration::from_secs(60);

/// After the run: each name used must be free again within the liveness bound.
async fn probe(
    harness: &Arc<dyn Harness>,
    schedule: &Schedule,
    names: &[LockName],
    recorder: &Recorder,
    limits: Limits,
) {
    let client = match harness.client().await {
        Ok(client) => client,
        Err(e) => {
            recorder.direct(
                usize::MAX,
                format!("the probe client did not connect: {e}"),
                false,
            );
            return;
        }
    };
    let mut last_prim: HashMap<usize, Prim> = HashMap::new();
    for step in schedule.clients.iter().flatten() {
        match step {
            Step::Acquire { name, prim, .. } => {
                last_prim.insert(*name, *prim);
            }
            Step::Multi { parts, .. } => {
                for (name, prim) in parts {
                    last_prim.insert(*name, *prim);
                }
            }
            _ => {}
        }
    }
    for fault in &schedule.faults {
        if let Fault::Holder { name, .. } = fault.fault {
            last_prim.entry(name).or_insert(Prim::Mutex);
        }
    }
    let mut used: Vec<(usize, Prim)> = last_prim.into_iter().collect();
    used.sort_by_key(|(name, _)| *name);
    let foreign: Vec<usize> = schedule
        .faults
        .iter()
        .filter_map(|f| match f.fault {
            Fault::Foreign { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    let started = Instant::now();
    for (name, prim) in used {
        // The strictest form of the primitive: free means nobody holds any part of it.
        let prim = match prim {
            Prim::Reentrant | Prim::Mutex => Prim::Mutex,
            Prim::Read | Prim::Write => Prim::Write,
            Prim::Permits { limit, .. } => Prim::Permits {
                limit,
                count: limit,
            },
            Prim::Leader => Prim::Leader,
        };
        let mut last = String::from("never tried");
        let mut free_after = None;
        let mut tried = false;
        while !tried || started.elapsed() < limits.liveness_bound {
            tried = true;
            let attempt = tokio::time::timeout(
                limits.op_limit,
                acquire_one(&client.locks, None, &names[name], prim, Inner::Try),
            )
            .await;
            match attempt {
                Ok(Ok(Some(guard))) => {
                    free_after = Some(started.elapsed());
                    let _ = tokio::time::timeout(limits.op_limit, guard.release()).await;
                    break;
                }
                Ok(Ok(None)) => last = "busy".into(),
                Ok(Err(e)) => {
                    last = format!("{}: {}", variant(&e), chain(&e));
                    // Foreign data stays: its Conflict is the final answer.
                    if matches!(e, Error::Conflict { .. }) && foreign.contains(&name) {
                        break;
                    }
                }
                Err(_) => last = format!("try did not return within {:?}", limits.op_limit),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        recorder.with(|r| {
            r.probes.push(ProbeRec {
                name,
                prim,
                free_after,
                last,
            })
        });
    }
    let _ = tokio::time::timeout(limits.op_limit, client.locks.shutdown()).await;
}

/// The name of an error's variant, for the checker.
pub fn variant(error: &Error) -> &'static str {
    match error {
        Error::InvalidName { .. } => "InvalidName",
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::Timeout { .. } => "Timeout",
        Error::Connection { .. } => "Connection",
        Error::Auth { .. } => "Auth",
        Error::SessionExpired { .. } => "SessionExpired",
        Error::NotOwner { .. } => "NotOwner",
        Error::UpgradeRefused { .. } => "UpgradeRefused",
        Error::Unsupported { .. } => "Unsupported",
        Error::Conflict { .. } => "Conflict",
        Error::Recovering { .. } => "Recovering",
        Error::Closed { .. } => "Closed",
        Error::Backend { .. } => "Backend",
        _ => "Other",
    }
}

/// An error's message with its whole source chain.
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How one acquisition call waits inside lockcore.
#[derive(Debug, Clone, Copy)]
enum Inner {
    Forever,
    Try,
    For(Duration),
}

/// A guard of any kind.
enum AnyGuard {
    Mutex(MutexGuard),
    Reentrant(ReentrantGuard),
    Read(ReadGuard),
    Write(WriteGuard),
    Lease(Lease),
    Multi(MultiGuard),
    Leader(Leadership),
}

impl AnyGuard {
    fn lost_reason(&self) -> Option<LostReason> {
        match self {
            AnyGuard::Mutex(g) => g.lost_reason(),
            AnyGuard::Reentrant(g) => g.lost_reason(),
            AnyGuard::Read(g) => g.lost_reason(),
            AnyGuard::Write(g) => g.lost_reason(),
            AnyGuard::Lease(g) => g.lost_reason(),
            AnyGuard::Multi(g) => g.lost_reason().map(|(_, reason)| reason),
            AnyGuard::Leader(g) => g.lost_reason(),
        }
    }

    fn signals(&self) -> Option<&HoldSignals> {
        Some(match self {
            AnyGuard::Mutex(g) => Guard::signals(g),
            AnyGuard::Reentrant(g) => Guard::signals(g),
            AnyGuard::Read(g) => Guard::signals(g),
            AnyGuard::Write(g) => Guard::signals(g),
            AnyGuard::Lease(g) => Guard::signals(g),
            AnyGuard::Leader(g) => Guard::signals(g),
            AnyGuard::Multi(_) => return None,
        })
    }

    fn token(&self) -> u64 {
        match self {
            AnyGuard::Mutex(g) => g.fencing_token(),
            AnyGuard::Reentrant(g) => g.fencing_token(),
            AnyGuard::Read(g) => g.fencing_token(),
            AnyGuard::Write(g) => g.fencing_token(),
            AnyGuard::Lease(g) => g.fencing_token(),
            AnyGuard::Leader(g) => g.term(),
            AnyGuard::Multi(_) => 0,
        }
    }

    async fn release(self) -> tumbler_core::Result<()> {
        match self {
            AnyGuard::Mutex(g) => g.release().await,
            AnyGuard::Reentrant(g) => g.release().await,
            AnyGuard::Read(g) => g.release().await,
            AnyGuard::Write(g) => g.release().await,
            AnyGuard::Lease(g) => g.release().await,
            AnyGuard::Multi(g) => g.release().await,
            AnyGuard::Leader(g) => g.resign().await,
        }
    }
}

/// Takes one name with one primitive.
async fn acquire_one(
    locks: &SharedBackend,
    reentrant: Option<&ReentrantMutex>,
    name: &LockName,
    prim: Prim,
    wait: Inner,
) -> tumbler_core::Result<Option<AnyGuard>> {
    Ok(match prim {
        Prim::Mutex => {
            let m = locks.mutex(name)?;
            match wait {
                Inner::Forever => Some(m.lock().await?),
                Inner::Try => m.try_lock().await?,
                Inner::For(d) => m.lock_timeout(d).await?,
            }
            .map(AnyGuard::Mutex)
        }
        Prim::Reentrant => {
            let owned;
            let m = match reentrant {
                Some(m) => m,
                None => {
                    owned = locks.reentrant_mutex(name)?;
                    &owned
                }
            };
            match wait {
                Inner::Forever => Some(m.lock().await?),
                Inner::Try => m.try_lock().await?,
                Inner::For(d) => m.lock_timeout(d).await?,
            }
            .map(AnyGuard::Reentrant)
        }
        Prim::Read => {
            let rw = locks.rwlock(name)?;
            match wait {
                Inner::Forever => Some(rw.read().await?),
                Inner::Try => rw.try_read().await?,
                Inner::For(d) => rw.read_timeout(d).await?,
            }
            .map(AnyGuard::Read)
        }
        Prim::Write => {
            let rw = locks.rwlock(name)?;
            match wait {
                Inner::Forever => Some(rw.write().await?),
                Inner::Try => rw.try_write().await?,
                Inner::For(d) => rw.write_timeout(d).await?,
            }
            .map(AnyGuard::Write)
        }
        Prim::Permits { limit, count } => {
            let s = locks.semaphore(name, limit)?;
            match wait {
                Inner::Forever => Some(s.acquire(count).await?),
                Inner::Try => s.try_acquire(count).await?,
                Inner::For(d) => s.acquire_timeout(count, d).await?,
            }
            .map(AnyGuard::Lease)
        }
        Prim::Leader => {
            let e = locks.election(name)?;
            let value = "explorer-candidate";
            match wait {
                Inner::Forever => Some(e.campaign(value).await?),
                Inner::Try => e.try_campaign(value).await?,
                Inner::For(d) => e.campaign_timeout(value, d).await?,
            }
            .map(AnyGuard::Leader)
        }
    })
}

/// Polls a future once, without waiting.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// A guard a client holds, with the holds it stands for.
struct Held {
    guard: AnyGuard,
    /// Indices into the recording's holds.
    ids: Vec<usize>,
    /// For a re-entrant guard: the name (its hold ends only when the count reaches 0).
    reentrant: Option<usize>,
    /// Names of the re-entrant levels this guard gives up on release (its own, or a
    /// MultiLock's re-entrant parts).
    levels: Vec<usize>,
    /// Whether releasing it asks the store whatever the levels (any non-re-entrant part).
    plain: bool,
    watchers: Vec<AbortHandle>,
    seen_lost: bool,
}

impl Held {
    fn stop_watching(&mut self) {
        for w in self.watchers.drain(..) {
            w.abort();
        }
    }
}

/// What a client thread needs.
struct ClientCtx {
    index: usize,
    harness: Arc<dyn Harness>,
    steps: Vec<Step>,
    names: Vec<LockName>,
    recorder: Recorder,
    limits: Limits,
    ready: mpsc::UnboundedSender<(usize, Result<TestClient, String>)>,
    done: mpsc::UnboundedSender<usize>,
    go: watch::Receiver<bool>,
    finish: watch::Receiver<bool>,
    /// The executor's runtime: the client's connection events are recorded there, so a
    /// stall of the client's own thread does not delay their timestamps.
    observer: tokio::runtime::Handle,
}

impl ClientCtx {
    fn run(self) {
        let index = self.index;
        let recorder = self.recorder.clone();
        let ready = self.ready.clone();
        let done = self.done.clone();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send((index, Err(format!("no runtime: {e}"))));
                return;
            }
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(self.main())
        }));
        if let Err(payload) = outcome {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            recorder.direct(index, format!("client c{index} panicked: {text}"), true);
            let _ = ready.send((index, Err(format!("panicked: {text}"))));
            let _ = done.send(index);
        }
        // Let drop-releases and background tasks run out before the runtime goes.
        runtime.shutdown_timeout(Duration::from_secs(2));
    }

    async fn main(mut self) {
        let client = match self.harness.client().await {
            Ok(client) => client,
            Err(e) => {
                let _ = self.ready.send((self.index, Err(e)));
                return;
            }
        };
        let _ = self.ready.send((self.index, Ok(client.clone())));
        let events = {
            let mut events = client.locks.connection_events();
            let recorder = self.recorder.clone();
            let index = self.index;
            self.observer.spawn(async move {
                while let Some(event) = events.next().await {
                    recorder.with(|r| r.events.push((index, Instant::now(), event)));
                }
            })
        };
        if self.go.wait_for(|go| *go).await.is_err() {
            return;
        }
        let mut run = ClientRun {
            index: self.index,
            locks: client.locks.clone(),
            names: self.names.clone(),
            recorder: self.recorder.clone(),
            limits: self.limits,
            held: Vec::new(),
            reentrants: HashMap::new(),
            reentrant_holds: HashMap::new(),
            lingering: HashMap::new(),
        };
        for step in std::mem::take(&mut self.steps) {
            run.boundary();
            run.step(&step).await;
        }
        run.boundary();
        while !run.held.is_empty() {
            run.release(0).await;
        }
        for (_, watchers) in run.lingering.drain() {
            watchers.iter().for_each(AbortHandle::abort);
        }
        let _ = self.done.send(self.index);
        let _ = self.finish.wait_for(|f| *f).await;
        events.abort();
        let _ = tokio::time::timeout(self.limits.op_limit, client.locks.shutdown()).await;
    }
}

/// One client's state while its script runs.
struct ClientRun {
    index: usize,
    locks: SharedBackend,
    names: Vec<LockName>,
    recorder: Recorder,
    limits: Limits,
    held: Vec<Held>,
    reentrants: HashMap<usize, ReentrantMutex>,
    /// The store hold behind each re-entrant handle, by name (its levels share it).
    reentrant_holds: HashMap<usize, usize>,
    /// The watchers of re-entrant levels given up while other levels (a MultiLock's, say)
    /// keep the hold, by name: they go on recording its loss and revocation until the hold
    /// ends.
    lingering: HashMap<usize, Vec<AbortHandle>>,
}

impl ClientRun {
    /// A step boundary: the holder checks each guard before acting, with no `.await` between
    /// the check and whatever came before (a stall included).
    fn boundary(&mut self) {
        let now = Instant::now();
        let index = self.index;
        for held in &mut self.held {
            // A revocation the guard shows counts as seen now, whether or not its watcher
            // task has run yet (a script whose store calls never wait, as on memory, leaves
            // the watchers on its runtime no turn until it waits).
            if held
                .guard
                .signals()
                .is_some_and(HoldSignals::is_revoke_requested)
            {
                let ids = held.ids.clone();
                self.recorder.with(|r| {
                    for id in ids {
                        r.holds[id].revoke_seen.get_or_insert(now);
                    }
                });
            }
            match held.guard.lost_reason() {
                None => {
                    if held.seen_lost {
                        self.recorder.direct(
                            index,
                            "lost_reason() went back to None after it had said Some".into(),
                            true,
                        );
                    }
                    let ids = held.ids.clone();
                    self.recorder.with(|r| {
                        for id in ids {
                            let hold = &mut r.holds[id];
                            if hold.lost.is_none() {
                                hold.confirmed = now;
                            }
                        }
                    });
                }
                Some(reason) => {
                    held.seen_lost = true;
                    if let Some(signals) = held.guard.signals() {
                        if poll_once(signals.lost()).is_none() {
                            self.recorder.direct(
                                index,
                                format!("lost_reason() says {reason:?} but lost() is pending"),
                                true,
                            );
                        }
                    }
                    for &id in &held.ids {
                        self.recorder.lost(id, now, Seen::Check, reason.clone());
                    }
                }
            }
        }
    }

    fn call(&self, kind: CallKind, start: Instant, result: CallResult) {
        let client = self.index;
        self.recorder.with(|r| {
            r.calls.push(CallRec {
                client,
                kind,
                start,
                end: Instant::now(),
                result,
            })
        });
    }

    fn failed(error: &Error) -> CallResult {
        CallResult::Failed {
            variant: variant(error),
            message: chain(error),
        }
    }

    /// How long a call may take, and the hard limit after which it is abandoned.
    fn allowed(&self, wait: WaitHow) -> Duration {
        match wait {
            WaitHow::Forever => self.limits.forever_limit,
            WaitHow::Try => self.limits.margin,
            WaitHow::Timeout(ms) | WaitHow::Cancel(ms) => {
                Duration::from_millis(ms) + self.limits.margin
            }
        }
    }

    async fn step(&mut self, step: &Step) {
        match step {
            Step::Acquire { name, prim, wait } => self.acquire(*name, *prim, *wait).await,
            Step::Multi { parts, wait } => self.multi(parts, *wait).await,
            Step::Use => {}
            Step::Release { slot } => {
                if !self.held.is_empty() {
                    self.release(slot % self.held.len()).await;
                }
            }
            Step::Drop { slot } => {
                if !self.held.is_empty() {
                    let at = slot % self.held.len();
                    let mut held = self.held.remove(at);
                    self.retire(&mut held);
                    let now = Instant::now();
                    let reentrant = held.reentrant;
                    let levels = std::mem::take(&mut held.levels);
                    drop(held.guard);
                    self.end(&held.ids, reentrant, now, EndHow::Drop);
                    self.settle(&levels, now, EndHow::Drop);
                }
            }
            Step::Downgrade { slot } => {
                if !self.held.is_empty() {
                    self.downgrade(slot % self.held.len()).await;
                }
            }
            Step::Revoke { name } => {
                let start = Instant::now();
                let outcome = tokio::time::timeout(
                    self.limits.op_limit * 2,
                    self.locks.request_revoke(&self.names[*name]),
                )
                .await;
                let result = match outcome {
                    Ok(Ok(_)) => CallResult::Done { held: false },
                    Ok(Err(e)) => Self::failed(&e),
                    Err(_) => CallResult::Hung,
                };
                self.call(CallKind::Revoke { name: *name }, start, result);
            }
            Step::State { name } => {
                let start = Instant::now();
                let outcome = tokio::time::timeout(
                    self.limits.op_limit * 2,
                    self.locks.state(&self.names[*name]),
                )
                .await;
                let result = match outcome {
                    Ok(Ok(state)) => CallResult::Done {
                        held: state.is_held(),
                    },
                    Ok(Err(e)) => Self::failed(&e),
                    Err(_) => CallResult::Hung,
                };
                self.call(CallKind::State { name: *name }, start, result);
            }
            Step::Pause { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Step::Stall { ms } => {
                let start = Instant::now();
                std::thread::sleep(Duration::from_millis(*ms));
                let client = self.index;
                self.recorder.with(|r| {
                    r.stalls.push(Span {
                        client,
                        start,
                        end: Instant::now(),
                    })
                });
            }
        }
    }

    /// Marks holds ended (a re-entrant hold only once its count reached zero).
    fn end(&self, ids: &[usize], reentrant: Option<usize>, at: Instant, how: EndHow) {
        if let Some(name) = reentrant {
            if self
                .reentrants
                .get(&name)
                .is_some_and(|m| m.hold_count() > 0)
            {
                return;
            }
        }
        self.recorder.with(|r| {
            for &id in ids {
                r.holds[id].ended.get_or_insert((at, how));
            }
        });
    }

    /// Stops watching a guard given up: a re-entrant level's watchers linger while other
    /// levels keep its hold (see [`ClientRun::settle`]).
    fn retire(&mut self, held: &mut Held) {
        match held.reentrant {
            Some(name) => self
                .lingering
                .entry(name)
                .or_default()
                .append(&mut held.watchers),
            None => held.stop_watching(),
        }
    }

    /// For each re-entrant hold among `names` whose last level was just given up (by this
    /// guard or by an earlier one while this guard kept a level): ends its hold in the
    /// recording and stops its lingering watchers.
    fn settle(&mut self, names: &[usize], at: Instant, how: EndHow) {
        for name in names {
            let ended = self
                .reentrants
                .get(name)
                .is_none_or(|m| m.hold_count() == 0);
            if ended {
                if let Some(watchers) = self.lingering.remove(name) {
                    watchers.iter().for_each(AbortHandle::abort);
                }
                if let Some(&id) = self.reentrant_holds.get(name) {
                    self.recorder.with(|r| {
                        r.holds[id].ended.get_or_insert((at, how));
                    });
                }
            }
        }
    }

    async fn release(&mut self, at: usize) {
        let mut held = self.held.remove(at);
        self.retire(&mut held);
        let start = Instant::now();
        let reentrant = held.reentrant;
        let ids = held.ids.clone();
        let outcome = tokio::time::timeout(self.limits.op_limit * 2, held.guard.release()).await;
        let result = match outcome {
            Ok(Ok(())) => CallResult::Done { held: false },
            Ok(Err(e)) => Self::failed(&e),
            Err(_) => CallResult::Hung,
        };
        self.end(&ids, reentrant, start, EndHow::Release);
        // Giving up levels of re-entrant holds that other levels keep asks the store nothing.
        let asked_store = held.plain
            || held.levels.iter().any(|name| {
                self.reentrants
                    .get(name)
                    .is_none_or(|m| m.hold_count() == 0)
            });
        let levels = std::mem::take(&mut held.levels);
        self.settle(&levels, start, EndHow::Release);
        if asked_store {
            self.call(CallKind::Release, start, result);
        }
    }

    async fn downgrade(&mut self, at: usize) {
        if !matches!(self.held[at].guard, AnyGuard::Write(_)) {
            return;
        }
        let mut held = self.held.remove(at);
        held.stop_watching();
        let AnyGuard::Write(write) = held.guard else {
            return;
        };
        let start = Instant::now();
        let outcome = tokio::time::timeout(self.limits.op_limit * 2, write.downgrade()).await;
        let result = match outcome {
            Ok(Ok(read)) => {
                self.end(&held.ids, None, start, EndHow::Downgrade);
                let name = self.hold_name(held.ids[0]);
                let guard = AnyGuard::Read(read);
                let ids = vec![self.new_hold(name, Prim::Read, guard.token(), start, false)];
                self.track(guard, ids, None);
                CallResult::Done { held: true }
            }
            Ok(Err(e)) => {
                self.end(&held.ids, None, Instant::now(), EndHow::Drop);
                Self::failed(&e)
            }
            Err(_) => {
                self.end(&held.ids, None, Instant::now(), EndHow::Drop);
                CallResult::Hung
            }
        };
        self.call(CallKind::Downgrade, start, result);
    }

    fn hold_name(&self, id: usize) -> usize {
        self.recorder.with(|r| r.holds[id].name)
    }

    fn new_hold(
        &self,
        name: usize,
        prim: Prim,
        token: u64,
        granted: Instant,
        multi: bool,
    ) -> usize {
        self.recorder.hold(HoldRec {
            client: self.index,
            name,
            prim,
            token,
            granted,
            multi,
            confirmed: granted,
            lost: None,
            ended: None,
            revoke_seen: None,
        })
    }

    /// Keeps a granted guard and watches its signals.
    fn track(&mut self, guard: AnyGuard, ids: Vec<usize>, reentrant: Option<usize>) {
        let mut watchers = Vec::new();
        if let (Some(signals), Some(&id)) = (guard.signals(), ids.first()) {
            let lost = signals.clone();
            let recorder = self.recorder.clone();
            let client = self.index;
            watchers.push(
                tokio::spawn(async move {
                    let reason = lost.lost().await;
                    let at = Instant::now();
                    if lost.lost_reason().is_none() {
                        recorder.direct(
                            client,
                            format!("lost() resolved ({reason}) but lost_reason() is None"),
                            true,
                        );
                    }
                    recorder.lost(id, at, Seen::Watcher, reason);
                })
                .abort_handle(),
            );
            let revoke = signals.clone();
            let recorder = self.recorder.clone();
            watchers.push(
                tokio::spawn(async move {
                    revoke.revoke_requested().await;
                    let at = Instant::now();
                    recorder.with(|r| {
                        r.holds[id].revoke_seen.get_or_insert(at);
                    });
                })
                .abort_handle(),
            );
        }
        self.held.push(Held {
            guard,
            ids,
            reentrant,
            levels: reentrant.into_iter().collect(),
            plain: reentrant.is_none(),
            watchers,
            seen_lost: false,
        });
    }

    async fn acquire(&mut self, name: usize, prim: Prim, wait: WaitHow) {
        let lock_name = self.names[name].clone();
        if prim == Prim::Reentrant && !self.reentrants.contains_key(&name) {
            match self.locks.reentrant_mutex(&lock_name) {
                Ok(m) => {
                    self.reentrants.insert(name, m);
                }
                Err(e) => {
                    let kind = CallKind::Acquire { name, prim, wait };
                    self.call(kind, Instant::now(), Self::failed(&e));
                    return;
                }
            }
        }
        let reentrant = self.reentrants.get(&name).cloned();
        let reentry =
            prim == Prim::Reentrant && reentrant.as_ref().is_some_and(|m| m.hold_count() > 0);
        let hard = self.allowed(wait) + Duration::from_secs(10);
        let start = Instant::now();
        let inner = match wait {
            WaitHow::Forever | WaitHow::Cancel(_) => Inner::Forever,
            WaitHow::Try => Inner::Try,
            WaitHow::Timeout(ms) => Inner::For(Duration::from_millis(ms)),
        };
        let future = acquire_one(&self.locks, reentrant.as_ref(), &lock_name, prim, inner);
        let outcome = match wait {
            WaitHow::Cancel(ms) => tokio::time::timeout(Duration::from_millis(ms), future)
                .await
                .ok(),
            _ => tokio::time::timeout(hard, future).await.ok(),
        };
        let granted_at = Instant::now();
        let result = match outcome {
            None if matches!(wait, WaitHow::Cancel(_)) => CallResult::Cancelled,
            None => CallResult::Hung,
            Some(Ok(None)) => CallResult::Busy,
            Some(Err(e)) => Self::failed(&e),
            Some(Ok(Some(guard))) => {
                // A re-entry shares the store hold of the first level.
                let id = if reentry {
                    self.reentrant_holds.get(&name).copied()
                } else {
                    None
                };
                let ids = match id {
                    Some(id) => vec![id],
                    None => {
                        let id = self.new_hold(name, prim, guard.token(), granted_at, false);
                        if prim == Prim::Reentrant {
                            self.reentrant_holds.insert(name, id);
                        }
                        vec![id]
                    }
                };
                let keep = (prim == Prim::Reentrant).then_some(name);
                if reentry {
                    // Watched already through the first level.
                    self.held.push(Held {
                        guard,
                        ids: ids.clone(),
                        reentrant: keep,
                        levels: keep.into_iter().collect(),
                        plain: keep.is_none(),
                        watchers: Vec::new(),
                        seen_lost: false,
                    });
                } else {
                    self.track(guard, ids.clone(), keep);
                }
                CallResult::Granted(ids)
            }
        };
        self.call(CallKind::Acquire { name, prim, wait }, start, result);
    }

    async fn multi(&mut self, parts: &[(usize, Prim)], wait: WaitHow) {
        let kind = CallKind::Multi {
            parts: parts.to_vec(),
            wait,
        };
        let start = Instant::now();
        let mut specs = Vec::new();
        for &(name, prim) in parts {
            let lock_name = &self.names[name];
            let spec = match prim {
                Prim::Mutex => self.locks.mutex(lock_name).map(LockSpec::Mutex),
                Prim::Reentrant => match self.reentrants.get(&name) {
                    Some(m) => Ok(LockSpec::Reentrant(m.clone())),
                    None => self.locks.reentrant_mutex(lock_name).map(|m| {
                        self.reentrants.insert(name, m.clone());
                        LockSpec::Reentrant(m)
                    }),
                },
                Prim::Read => self.locks.rwlock(lock_name).map(|rw| rw.read_spec()),
                Prim::Write => self.locks.rwlock(lock_name).map(|rw| rw.write_spec()),
                Prim::Permits { limit, count } => self
                    .locks
                    .semaphore(lock_name, limit)
                    .map(|s| s.permits_spec(count)),
                // The generator puts no leadership in a multi-lock (it takes locks only).
                Prim::Leader => Err(Error::invalid(
                    "multi-lock",
                    "a multi-lock takes locks, not leaderships",
                )),
            };
            match spec {
                Ok(spec) => specs.push(spec),
                Err(e) => {
                    self.call(kind, start, Self::failed(&e));
                    return;
                }
            }
        }
        // A re-entrant part that re-enters is not a new store hold.
        let reentered: Vec<usize> = parts
            .iter()
            .filter(|(name, prim)| {
                *prim == Prim::Reentrant
                    && self
                        .reentrants
                        .get(name)
                        .is_some_and(|m| m.hold_count() > 0)
            })
            .map(|(name, _)| *name)
            .collect();
        let multi = MultiLock::new(specs);
        let hard = self.allowed(wait) + Duration::from_secs(10);
        let outcome = match wait {
            WaitHow::Forever => tokio::time::timeout(hard, async { multi.lock().await.map(Some) })
                .await
                .ok(),
            WaitHow::Try => tokio::time::timeout(hard, multi.try_lock()).await.ok(),
            WaitHow::Timeout(ms) => {
                tokio::time::timeout(hard, multi.lock_timeout(Duration::from_millis(ms)))
                    .await
                    .ok()
            }
            WaitHow::Cancel(ms) => tokio::time::timeout(Duration::from_millis(ms), async {
                multi.lock().await.map(Some)
            })
            .await
            .ok(),
        };
        let granted_at = Instant::now();
        let result = match outcome {
            None if matches!(wait, WaitHow::Cancel(_)) => CallResult::Cancelled,
            None => CallResult::Hung,
            Some(Ok(None)) => CallResult::Busy,
            Some(Err(e)) => Self::failed(&e),
            Some(Ok(Some(guard))) => {
                let tokens = guard.fencing_tokens();
                let mut ids = Vec::new();
                for &(name, prim) in parts {
                    if reentered.contains(&name) {
                        continue;
                    }
                    let token = tokens
                        .iter()
                        .find(|(n, _)| *n == self.names[name])
                        .map(|(_, t)| *t)
                        .unwrap_or(0);
                    let id = self.new_hold(name, prim, token, granted_at, true);
                    if prim == Prim::Reentrant {
                        self.reentrant_holds.insert(name, id);
                    }
                    ids.push(id);
                }
                self.held.push(Held {
                    guard: AnyGuard::Multi(guard),
                    ids: ids.clone(),
                    reentrant: None,
                    levels: parts
                        .iter()
                        .filter(|(_, prim)| *prim == Prim::Reentrant)
                        .map(|(name, _)| *name)
                        .collect(),
                    plain: parts.iter().any(|(_, prim)| *prim != Prim::Reentrant),
                    watchers: Vec::new(),
                    seen_lost: false,
                });
                CallResult::Granted(ids)
            }
        };
        self.call(kind, start, result);
    }
}
