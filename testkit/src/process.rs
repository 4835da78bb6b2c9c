//! Server processes: spawning, signals, and making sure none outlives the test process.
//!
//! Lifetime guarantees:
//! - Every server runs in its own session and process group (`setsid`), so signals reach the
//!   whole group (e.g. a JVM and anything it forks).
//! - Every server gets `PR_SET_PDEATHSIG(SIGKILL)`: the kernel kills it when its parent dies,
//!   even if the test process is killed with SIGKILL. Because Linux ties the death signal to the
//!   *thread* that forked, all servers are forked by one spawner thread that lives as long as the
//!   process (tokio blocking threads and test threads come and go at unpredictable times).
//! - Dropping a [`ServerProcess`] sends SIGKILL to the group and waits for the process to exit.
//! - Every server runs in its folder `tumbler-testkit.<test pid>.*` (its cwd) and its environment
//!   carries `TUMBLER_TESTKIT_OWNER=<test pid>`, so a leak check can find stray servers and their
//!   owners in `/proc` (`testkit/check-leaks.sh` uses the cwd: redis-server overwrites its
//!   environ with its process title).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Name of the environment variable that marks every server process the kit starts; its value is
/// the id of the test process that started it.
pub const OWNER_ENV: &str = "TUMBLER_TESTKIT_OWNER";

/// How many lines of a server log an error message shows.
const LOG_TAIL_LINES: usize = 40;

/// Everything needed to (re)start one server process.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Human-readable name for messages, e.g. `redis-server on 127.0.0.1:20001 (/tmp/...)`.
    pub(crate) name: String,
    /// The program to run.
    pub(crate) program: PathBuf,
    /// Its arguments.
    pub(crate) args: Vec<OsString>,
    /// Working directory (the server's temp folder).
    pub(crate) cwd: PathBuf,
    /// File that receives stdout and stderr (appended across restarts).
    pub(crate) log: PathBuf,
    /// Extra environment variables (e.g. a fake clock's).
    pub(crate) env: Vec<(OsString, OsString)>,
}

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

/// The channel to the spawner thread, started on first use; the thread never exits.
fn spawner() -> Result<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<std::result::Result<mpsc::Sender<SpawnRequest>, String>> =
        OnceLock::new();
    let r = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                // Runs until the process exits: `tx` lives in a static and is never dropped.
                for mut req in rx {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .map(|_| tx)
            .map_err(|e| e.to_string())
    });
    r.as_ref().map_err(|e| {
        Error::io(
            "starting the testkit spawner thread",
            std::io::Error::other(e.clone()),
        )
    })
}

/// Spawns `cmd` from the spawner thread, in a new session, with the parent-death signal set.
fn spawn(mut cmd: Command, what: &str) -> Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    cmd.env(OWNER_ENV, parent.to_string());
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (setsid, prctl, getppid) and builds errors without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()?
        .send(SpawnRequest { cmd, reply: tx })
        .map_err(|_| {
            Error::io(
                format!("spawning {what}"),
                std::io::Error::other("the testkit spawner thread is gone"),
            )
        })?;
    let child = rx.recv().map_err(|_| {
        Error::io(
            format!("spawning {what}"),
            std::io::Error::other("the testkit spawner thread did not answer"),
        )
    })?;
    child.map_err(|e| Error::io(format!("spawning {what}"), e))
}

/// One server process that can be killed, paused, resumed and started again with the same
/// command line. Dropping it kills the process group and waits for the process to exit.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    spec: Spec,
    child: Mutex<Option<Child>>,
    pid: AtomicU32,
}

impl ServerProcess {
    /// Starts the process described by `spec`.
    pub(crate) fn spawn(spec: Spec) -> Result<ServerProcess> {
        let p = ServerProcess {
            spec,
            child: Mutex::new(None),
            pid: AtomicU32::new(0),
        };
        p.start()?;
        Ok(p)
    }

    /// The name used in messages.
    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the process again (killing the old one first if it still runs).
    pub(crate) fn start(&self) -> Result<()> {
        self.kill();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .map_err(|e| Error::io(format!("opening log {}", self.spec.log.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io(format!("opening log {}", self.spec.log.display()), e))?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.spec.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = spawn(cmd, &self.spec.name)?;
        self.pid.store(child.id(), Ordering::SeqCst);
        *self.lock() = Some(child);
        Ok(())
    }

    /// The OS process id while the process runs (also while paused).
    pub(crate) fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            p => Some(p),
        }
    }

    /// If the process has exited, reaps it and returns how it ended.
    pub(crate) fn exit_status(&self) -> Option<String> {
        let mut g = self.lock();
        let child = g.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                *g = None;
                self.pid.store(0, Ordering::SeqCst);
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Sends `sig` to the process group if the process has not been reaped yet.
    /// Returns false if there is no live process.
    fn signal_group(g: &mut Option<Child>, sig: libc::c_int) -> bool {
        let Some(child) = g.as_mut() else {
            return false;
        };
        // An unreaped child (running or zombie) keeps its pid, so the group id cannot have been
        // reused by another process.
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        let pgid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on a process group we created.
        unsafe { libc::kill(-pgid, sig) == 0 }
    }

    /// SIGKILL to the whole group, then waits for the process to exit. Blocks (briefly).
    pub(crate) fn kill(&self) {
        let mut g = self.lock();
        Self::signal_group(&mut g, libc::SIGKILL);
        if let Some(mut child) = g.take() {
            let _ = child.wait();
        }
        self.pid.store(0, Ordering::SeqCst);
    }

    /// Like [`ServerProcess::kill`], but waits without blocking the async executor.
    pub(crate) async fn kill_async(&self) {
        {
            let mut g = self.lock();
            Self::signal_group(&mut g, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let mut g = self.lock();
                let done = match g.as_mut() {
                    None => true,
                    Some(child) => !matches!(child.try_wait(), Ok(None)),
                };
                if done || Instant::now() > deadline {
                    drop(g);
                    // Reaps (or, after the deadline, waits for) whatever is left.
                    self.kill();
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGSTOP to the group: the server stops answering but keeps its sockets open.
    ///
    /// Returns once every thread of every process in the group is stopped: kill(2) only
    /// queues the signal, and a thread running on another CPU (or on a vCPU the host has
    /// descheduled) may go on serving requests for a while after it returned.
    pub(crate) fn pause(&self) -> Result<()> {
        self.signal_or_not_running(libc::SIGSTOP)?;
        let Some(pgid) = self.pid() else {
            return Err(Error::NotRunning {
                what: self.spec.name.clone(),
            });
        };
        let deadline = Instant::now() + PAUSE_CONFIRM;
        loop {
            match group_running_threads(pgid) {
                0 => return Ok(()),
                running if Instant::now() >= deadline => {
                    return Err(Error::Protocol {
                        what: format!("pausing {}", self.spec.name),
                        detail: format!(
                            "{running} thread(s) of process group {pgid} still ran {PAUSE_CONFIRM:?} after SIGSTOP"
                        ),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// SIGCONT to the group: a paused server carries on.
    pub(crate) fn resume(&self) -> Result<()> {
        self.signal_or_not_running(libc::SIGCONT)
    }

    fn signal_or_not_running(&self, sig: libc::c_int) -> Result<()> {
        if Self::signal_group(&mut self.lock(), sig) {
            Ok(())
        } else {
            Err(Error::NotRunning {
                what: self.spec.name.clone(),
            })
        }
    }

    /// The last lines of the server's log file.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.spec.log)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long [`ServerProcess::pause`] waits for every thread to have stopped.
const PAUSE_CONFIRM: Duration = Duration::from_secs(5);

/// How many threads of the processes in group `pgid` are not stopped yet (per
/// `/proc/PID/task/TID/stat`; zombies and dead threads count as stopped).
fn group_running_threads(pgid: u32) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut running = 0;
    for entry in procs.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some((_, pgrp)) = proc_state(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        if pgrp != pgid {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path().join("stat");
            if let Some((state, _)) = proc_state(&path.to_string_lossy()) {
                if !matches!(state, 'T' | 't' | 'Z' | 'X') {
                    running += 1;
                }
            }
        }
    }
    running
}

/// The state letter and process group of a `/proc/.../stat` file. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its last `)`.
fn proc_state(path: &str) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// The last [`LOG_TAIL_LINES`] lines of a log file (at most 16 KiB are read).
pub(crate) fn log_tail(path: &std::path::Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let start = len.saturating_sub(16 * 1024);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            let tail = lines[from..].join("\n");
            if tail.trim().is_empty() {
                format!("(log {} is empty)", path.display())
            } else {
                format!("--- {} ---\n{tail}", path.display())
            }
        }
        Err(e) => format!("(could not read log {}: {e})", path.display()),
    }
}
