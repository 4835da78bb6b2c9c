//! What the explorer runs: a [`Schedule`] of client scripts and timed faults, printable so a
//! failure can be read and replayed.

use std::fmt;

pub use crate::harness::Foreign;

/// One primitive and mode to acquire a name with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prim {
    /// A mutex.
    Mutex,
    /// A re-entrant mutex (one handle per client and name, so a second acquisition re-enters).
    Reentrant,
    /// The read side of a read-write lock.
    Read,
    /// The write side of a read-write lock.
    Write,
    /// `count` permits of a semaphore with `limit` permits.
    Permits {
        /// The semaphore's limit as this client states it.
        limit: u32,
        /// Permits wanted.
        count: u32,
    },
    /// The leadership of an election (campaign, resign).
    Leader,
}

impl Prim {
    /// The primitive family: holds of different families on one name must never coexist.
    pub fn family(&self) -> Family {
        match self {
            Prim::Mutex | Prim::Reentrant => Family::Mutex,
            Prim::Read | Prim::Write => Family::RwLock,
            Prim::Permits { .. } => Family::Semaphore,
            Prim::Leader => Family::Election,
        }
    }
}

impl fmt::Display for Prim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prim::Mutex => f.write_str("mutex"),
            Prim::Reentrant => f.write_str("reentrant"),
            Prim::Read => f.write_str("read"),
            Prim::Write => f.write_str("write"),
            Prim::Permits { limit, count } => write!(f, "sem({count}/{limit})"),
            Prim::Leader => f.write_str("leader"),
        }
    }
}

/// The kind of lock a name is used as (A4: one name, one kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Mutex and re-entrant mutex.
    Mutex,
    /// Read-write lock.
    RwLock,
    /// Semaphore.
    Semaphore,
    /// Election.
    Election,
}

/// How an acquisition waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitHow {
    /// `lock()`: until granted.
    Forever,
    /// `try_lock()`: one attempt.
    Try,
    /// `lock_timeout(ms)`.
    Timeout(u64),
    /// `lock()`, whose future is dropped after `ms` if not granted by then (cancellation at
    /// whatever await point it reached).
    Cancel(u64),
}

impl fmt::Display for WaitHow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitHow::Forever => f.write_str("wait"),
            WaitHow::Try => f.write_str("try"),
            WaitHow::Timeout(ms) => write!(f, "timeout {ms}ms"),
            WaitHow::Cancel(ms) => write!(f, "cancel after {ms}ms"),
        }
    }
}

/// One step of a client's script. Steps that act on a held guard pick it by `slot`, taken
/// modulo the number of guards the client holds at that moment (no guard: the step does
/// nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Acquire `name` (an index into [`Schedule::names`]).
    Acquire {
        /// Which name.
        name: usize,
        /// Which primitive.
        prim: Prim,
        /// How to wait.
        wait: WaitHow,
    },
    /// Several names all or nothing.
    Multi {
        /// The parts.
        parts: Vec<(usize, Prim)>,
        /// How to wait.
        wait: WaitHow,
    },
    /// The protected work: checks every held guard's `lost_reason()` (a holder acts here).
    Use,
    /// `release().await` of a guard.
    Release {
        /// Which guard.
        slot: usize,
    },
    /// Drops a guard (release in the background).
    Drop {
        /// Which guard.
        slot: usize,
    },
    /// Downgrades a write guard to a read guard (other guards: nothing).
    Downgrade {
        /// Which guard.
        slot: usize,
    },
    /// `request_revoke(name)`.
    Revoke {
        /// Which name.
        name: usize,
    },
    /// `state(name)`.
    State {
        /// Which name.
        name: usize,
    },
    /// An async pause (the client's runtime keeps running).
    Pause {
        /// How long.
        ms: u64,
    },
    /// A stall: the client's thread blocks (no task of its runtime runs: no renewal, no
    /// watcher), like a GC pause or SIGSTOP.
    Stall {
        /// How long.
        ms: u64,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Acquire { name, prim, wait } => write!(f, "acquire n{name} {prim} {wait}"),
            Step::Multi { parts, wait } => {
                f.write_str("multi [")?;
                for (i, (name, prim)) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "n{name} {prim}")?;
                }
                write!(f, "] {wait}")
            }
            Step::Use => f.write_str("use"),
            Step::Release { slot } => write!(f, "release #{slot}"),
            Step::Drop { slot } => write!(f, "drop #{slot}"),
            Step::Downgrade { slot } => write!(f, "downgrade #{slot}"),
            Step::Revoke { name } => write!(f, "revoke n{name}"),
            Step::State { name } => write!(f, "state n{name}"),
            Step::Pause { ms } => write!(f, "pause {ms}ms"),
            Step::Stall { ms } => write!(f, "stall {ms}ms"),
        }
    }
}

/// A fault injected by the explorer's controller through the harness's hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cut a client's connection, heal it `for_ms` later. With `probe`, halfway through the
    /// cut the controller makes one `try_lock` of the mutex `probe` through that client: the
    /// store cannot answer, so the answer must be an error, never "busy" (A3).
    Cut {
        /// Which client.
        client: usize,
        /// How long.
        for_ms: u64,
        /// The name to try halfway through, if any.
        probe: Option<usize>,
    },
    /// Expire a client's session from the store's side.
    Expire {
        /// Which client.
        client: usize,
    },
    /// Start a holder (a separate process on real stores) on the mutex `name`, kill it
    /// (SIGKILL, no cleanup) `kill_after_ms` after it holds. With `waiter`, a waiter process
    /// (with a long TTL) queues behind it and is killed that many ms after the holder holds,
    /// before the holder: it must stop blocking others within the store's bound.
    Holder {
        /// Which name.
        name: usize,
        /// When to kill it.
        kill_after_ms: u64,
        /// When to kill the waiter queued behind it, if one is started.
        waiter: Option<u64>,
    },
    /// Stall the whole store (SIGSTOP of its servers) for `for_ms`.
    PauseServer {
        /// How long.
        for_ms: u64,
    },
    /// Write data tumbler did not write where the lock `name` keeps its records.
    Foreign {
        /// Which name.
        name: usize,
        /// What.
        what: Foreign,
    },
    /// Restart the store.
    Restart,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Cut {
                client,
                for_ms,
                probe,
            } => {
                write!(f, "cut c{client} for {for_ms}ms")?;
                match probe {
                    Some(name) => write!(f, ", try n{name} through it halfway"),
                    None => Ok(()),
                }
            }
            Fault::Expire { client } => write!(f, "expire c{client}"),
            Fault::Holder {
                name,
                kill_after_ms,
                waiter,
            } => {
                write!(f, "holder on n{name}, killed after {kill_after_ms}ms")?;
                match waiter {
                    Some(ms) => write!(f, ", a waiter behind it killed after {ms}ms"),
                    None => Ok(()),
                }
            }
            Fault::PauseServer { for_ms } => write!(f, "pause the store for {for_ms}ms"),
            Fault::Foreign { name, what } => write!(f, "foreign data {what:?} at n{name}"),
            Fault::Restart => f.write_str("restart the store"),
        }
    }
}

/// A fault and when to inject it, in ms from the schedule's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedFault {
    /// When.
    pub at_ms: u64,
    /// What.
    pub fault: Fault,
}

/// One generated run: a script per client, faults on a timeline, over a few names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it was generated from.
    pub seed: u64,
    /// The names used, relative to a prefix unique to each run (nested names share a prefix:
    /// `a` and `a/b`).
    pub names: Vec<String>,
    /// One script per client, run concurrently (each client on its own thread).
    pub clients: Vec<Vec<Step>>,
    /// Faults, sorted by time.
    pub faults: Vec<TimedFault>,
}

impl Schedule {
    /// How many steps and faults the schedule has (its length, for shrinking and reports).
    pub fn len(&self) -> usize {
        self.clients.iter().map(Vec::len).sum::<usize>() + self.faults.len()
    }

    /// True when there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule seed={} ({} steps and faults)",
            self.seed,
            self.len()
        )?;
        for (i, name) in self.names.iter().enumerate() {
            writeln!(f, "  n{i} = {name}")?;
        }
        for (c, steps) in self.clients.iter().enumerate() {
            writeln!(f, "  client c{c}:")?;
            for step in steps {
                writeln!(f, "    {step}")?;
            }
        }
        if !self.faults.is_empty() {
            writeln!(f, "  faults:")?;
            for fault in &self.faults {
                writeln!(f, "    at {}ms: {}", fault.at_ms, fault.fault)?;
            }
        }
        Ok(())
    }
}
