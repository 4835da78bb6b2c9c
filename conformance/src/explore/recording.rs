//! What the executor records while a schedule runs: every hold, call, stall, cut and fault,
//! on one monotonic clock. The checker reads only this.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tumbler_core::{ConnectionEvent, LostReason};

use super::schedule::{Fault, Prim, WaitHow};

/// How a loss was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The hold's `lost()` future resolved (a watcher task on the client's runtime).
    Watcher,
    /// `lost_reason()` said `Some` at a step boundary.
    Check,
}

/// How a hold ended on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndHow {
    /// `release().await` was called.
    Release,
    /// The guard was dropped.
    Drop,
    /// A write guard was downgraded (a read hold continues it).
    Downgrade,
}

/// One hold as a client saw it.
#[derive(Debug, Clone)]
pub struct HoldRec {
    /// Which client (`usize::MAX` for a holder process).
    pub client: usize,
    /// Which name (index into the schedule's names).
    pub name: usize,
    /// How it was held.
    pub prim: Prim,
    /// The fencing token.
    pub token: u64,
    /// When the acquisition returned the guard.
    pub granted: Instant,
    /// The hold is part of a MultiLock.
    pub multi: bool,
    /// The last moment the holder checked `lost_reason()` and was told `None`, then acted.
    pub confirmed: Instant,
    /// When and how the loss was first seen, with the reason.
    pub lost: Option<(Instant, Seen, LostReason)>,
    /// When the client ended it, and how.
    pub ended: Option<(Instant, EndHow)>,
    /// When the holder saw a revocation request.
    pub revoke_seen: Option<Instant>,
}

impl HoldRec {
    /// The end of the holder's belief: the last moment it acted as the holder.
    pub fn believed_until(&self) -> Instant {
        self.confirmed
    }
}

/// What a call was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallKind {
    /// An acquisition of one name.
    Acquire {
        /// Which name.
        name: usize,
        /// Which primitive.
        prim: Prim,
        /// How it waited.
        wait: WaitHow,
    },
    /// A MultiLock acquisition.
    Multi {
        /// The parts.
        parts: Vec<(usize, Prim)>,
        /// How it waited.
        wait: WaitHow,
    },
    /// `release().await`.
    Release,
    /// `downgrade().await`.
    Downgrade,
    /// `request_revoke`.
    Revoke {
        /// Which name.
        name: usize,
    },
    /// `state`.
    State {
        /// Which name.
        name: usize,
    },
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// Granted: these holds (indices into [`Recording::holds`]).
    Granted(Vec<usize>),
    /// `Ok(None)`: busy.
    Busy,
    /// The future was dropped before it finished (a cancellation step).
    Cancelled,
    /// Succeeded (release, revoke); for state: whether anyone held the name.
    Done {
        /// For `state`: the lock was reported held.
        held: bool,
    },
    /// A typed error: the variant's name and the message.
    Failed {
        /// `Connection`, `Timeout`, `Conflict`, ...
        variant: &'static str,
        /// The error's text (with its source chain).
        message: String,
    },
    /// It did not return within the explorer's hard limit.
    Hung,
}

/// One call.
#[derive(Debug, Clone)]
pub struct CallRec {
    /// Which client.
    pub client: usize,
    /// What.
    pub kind: CallKind,
    /// When it was made.
    pub start: Instant,
    /// When it returned (or was given up on).
    pub end: Instant,
    /// How.
    pub result: CallResult,
}

/// A span of time something lasted on one client.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Which client (`usize::MAX`: the whole store).
    pub client: usize,
    /// From.
    pub start: Instant,
    /// To.
    pub end: Instant,
}

/// A fault as injected.
#[derive(Debug, Clone)]
pub struct FaultRec {
    /// Which.
    pub fault: Fault,
    /// When the hook was called.
    pub start: Instant,
    /// When it returned.
    pub end: Instant,
    /// The hook's error, if it failed.
    pub failed: Option<String>,
}

/// A holder process's hold.
#[derive(Debug, Clone)]
pub struct HolderRec {
    /// Which name.
    pub name: usize,
    /// Its token.
    pub token: u64,
    /// When it was known to hold.
    pub granted: Instant,
    /// When it was killed (None: at the end of the run).
    pub killed: Option<Instant>,
}

/// What the final liveness probe found for one name.
#[derive(Debug, Clone)]
pub struct ProbeRec {
    /// Which name.
    pub name: usize,
    /// With which primitive.
    pub prim: Prim,
    /// How long it took to get the lock, or `None` if it never did within the bound.
    pub free_after: Option<std::time::Duration>,
    /// The last answer that was not a grant.
    pub last: String,
}

/// A problem the executor saw directly (not derived from the history).
#[derive(Debug, Clone)]
pub struct Direct {
    /// Which client.
    pub client: usize,
    /// What happened.
    pub what: String,
    /// A failure (`false`: a soft warning).
    pub failure: bool,
}

/// Everything recorded in one run.
#[derive(Debug, Clone)]
pub struct Recording {
    /// When the schedule started (time 0 of its faults).
    pub start: Instant,
    /// Every hold.
    pub holds: Vec<HoldRec>,
    /// Every call.
    pub calls: Vec<CallRec>,
    /// Thread stalls.
    pub stalls: Vec<Span>,
    /// Connection cuts (from the cut hook's return to the heal hook's call).
    pub cuts: Vec<Span>,
    /// Faults injected.
    pub faults: Vec<FaultRec>,
    /// Holder processes.
    pub holders: Vec<HolderRec>,
    /// Connection events per client, with their time.
    pub events: Vec<(usize, Instant, ConnectionEvent)>,
    /// The final liveness probe.
    pub probes: Vec<ProbeRec>,
    /// Problems seen directly.
    pub direct: Vec<Direct>,
}

/// A shared handle on the recording of one run.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Recording>>,
}

impl Recorder {
    /// An empty recording starting now.
    pub fn new() -> Self {
        Recorder {
            inner: Arc::new(Mutex::new(Recording {
                start: Instant::now(),
                holds: Vec::new(),
                calls: Vec::new(),
                stalls: Vec::new(),
                cuts: Vec::new(),
                faults: Vec::new(),
                holders: Vec::new(),
                events: Vec::new(),
                probes: Vec::new(),
                direct: Vec::new(),
            })),
        }
    }

    /// Runs `f` on the recording.
    pub fn with<T>(&self, f: impl FnOnce(&mut Recording) -> T) -> T {
        let mut recording = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut recording)
    }

    /// Adds a hold and returns its index.
    pub fn hold(&self, hold: HoldRec) -> usize {
        self.with(|r| {
            r.holds.push(hold);
            r.holds.len() - 1
        })
    }

    /// Records a problem seen directly.
    pub fn direct(&self, client: usize, what: String, failure: bool) {
        self.with(|r| {
            r.direct.push(Direct {
                client,
                what,
                failure,
            })
        });
    }

    /// Marks hold `id` lost at `at` unless a loss was seen already.
    pub fn lost(&self, id: usize, at: Instant, seen: Seen, reason: LostReason) {
        self.with(|r| {
            if let Some(hold) = r.holds.get_mut(id) {
                if hold.lost.is_none() {
                    hold.lost = Some((at, seen, reason));
                }
            }
        });
    }

    /// The recording so far.
    pub fn snapshot(&self) -> Recording {
        self.with(|r| r.clone())
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}
