//! [`ProcessHolder`]: a [`Holder`] that is a real process running the `holder` binary.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::harness::{Holder, HookError, HookResult};

/// A holder process: `holder URL NAME`, killed on drop.
pub struct ProcessHolder {
    child: Child,
    lines: StdoutLines,
    token: u64,
}

type StdoutLines = Lines<BufReader<ChildStdout>>;

/// Starts the holder binary with `args`, its stdout piped.
fn start(holder_bin: &str, args: &[&str]) -> HookResult<(Child, StdoutLines)> {
    let mut child = Command::new(holder_bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Failed(format!("cannot start {holder_bin}: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| HookError::Failed("holder has no stdout".into()))?;
    Ok((child, BufReader::new(stdout).lines()))
}

/// The holder's first line, within `within`.
async fn first_line(
    lines: &mut StdoutLines,
    name: &str,
    within: Duration,
) -> HookResult<Option<String>> {
    tokio::time::timeout(within, lines.next_line())
        .await
        .map_err(|_| {
            HookError::Failed(format!("holder did not start on {name} within {within:?}"))
        })?
        .map_err(|e| HookError::Failed(format!("reading the holder: {e}")))
}

impl ProcessHolder {
    /// Starts `holder_bin URL NAME` and waits up to `within` for it to hold the lock.
    ///
    /// In the conformance crate's own tests pass `env!("CARGO_BIN_EXE_holder")`.
    pub async fn spawn(
        holder_bin: &str,
        url: &str,
        name: &str,
        within: Duration,
    ) -> HookResult<Box<dyn Holder>> {
        Self::spawn_with(holder_bin, &[url, name], name, within).await
    }

    /// Starts `holder_bin URL NAME lead` and waits up to `within` for it to lead the election
    /// `name`; its token is its term.
    pub async fn spawn_leader(
        holder_bin: &str,
        url: &str,
        name: &str,
        within: Duration,
    ) -> HookResult<Box<dyn Holder>> {
        Self::spawn_with(holder_bin, &[url, name, "lead"], name, within).await
    }

    async fn spawn_with(
        holder_bin: &str,
        args: &[&str],
        name: &str,
        within: Duration,
    ) -> HookResult<Box<dyn Holder>> {
        let (child, mut lines) = start(holder_bin, args)?;
        let first = first_line(&mut lines, name, within).await?;
        let token = first
            .as_deref()
            .and_then(|line| line.strip_prefix("TOKEN "))
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| {
                HookError::Failed(format!("holder said {first:?}, expected TOKEN <n>"))
            })?;
        Ok(Box::new(ProcessHolder {
            child,
            lines,
            token,
        }))
    }

    /// Starts `holder_bin URL NAME wait` and waits up to `within` until it is connected and
    /// about to wait for the lock (it printed `WAITING`). Its token is 0.
    pub async fn spawn_waiting(
        holder_bin: &str,
        url: &str,
        name: &str,
        within: Duration,
    ) -> HookResult<Box<dyn Holder>> {
        let (child, mut lines) = start(holder_bin, &[url, name, "wait"])?;
        let first = first_line(&mut lines, name, within).await?;
        if first.as_deref() != Some("WAITING") {
            return Err(HookError::Failed(format!(
                "waiter said {first:?}, expected WAITING"
            )));
        }
        Ok(Box::new(ProcessHolder {
            child,
            lines,
            token: 0,
        }))
    }

    fn signal(&self, signal: libc::c_int) -> HookResult {
        let pid = self
            .child
            .id()
            .ok_or_else(|| HookError::Failed("holder already exited".into()))?;
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| HookError::Failed(format!("pid {pid} out of range")))?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(HookError::Failed(format!(
                "kill({pid}, {signal}) failed: {}",
                std::io::Error::last_os_error()
            )))
        }
    }
}

#[async_trait]
impl Holder for ProcessHolder {
    fn token(&self) -> u64 {
        self.token
    }

    async fn kill(&mut self) -> HookResult {
        self.child
            .kill()
            .await
            .map_err(|e| HookError::Failed(format!("killing the holder: {e}")))
    }

    async fn pause(&mut self) -> HookResult {
        self.signal(libc::SIGSTOP)
    }

    async fn resume(&mut self) -> HookResult {
        self.signal(libc::SIGCONT)
    }

    async fn wait_lost(&mut self, within: Duration) -> HookResult<bool> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Err(_) => return Ok(false),
                Ok(Ok(Some(line))) if line.starts_with("LOST") => return Ok(true),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return Err(HookError::Failed("holder exited".into())),
                Ok(Err(e)) => return Err(HookError::Failed(format!("reading the holder: {e}"))),
            }
        }
    }
}
