//! `tumbler elect`: campaign in an election and run a command while leading, like `etcdctl
//! elect` with a command, or `tumbler run` with a leadership instead of a lock.

use std::time::Duration;

use tumbler_locks::params::format_duration;
use tumbler_locks::{Election, SharedBackend};

use crate::exit;
use crate::interrupt::Interrupts;
use crate::leader::describe;
use crate::recovery::Recovery;
use crate::supervise::{supervise, Supervised};

/// What `tumbler elect` was asked to do.
pub struct ElectArgs {
    pub name: String,
    /// What the candidate advertises while it leads; `None`: [`default_value`].
    pub value: Option<String>,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub command: Vec<String>,
}

/// Campaigns, runs the command once elected and returns the process exit code (the codes of
/// `tumbler run`). Interrupted while campaigning, the candidacy is withdrawn (the campaign is
/// dropped, which lockcore makes leave nothing on the store) and the code is 128+N; once
/// leading, the signals go to the command and the leadership is resigned when it ends.
pub async fn elect(
    locks: SharedBackend,
    args: ElectArgs,
    interrupts: &mut Interrupts,
) -> Result<i32, String> {
    let election = locks
        .election(args.name.as_str())
        .map_err(|e| e.to_string())?;
    let name = election.name().clone();
    if args.command.is_empty() {
        return Err("no command given; write: tumbler elect NAME -- COMMAND [ARGS...]".into());
    }
    let value = args.value.clone().unwrap_or_else(default_value);
    if let Some(recovery) = Recovery::check(&locks).await {
        eprintln!("tumbler: campaigning in {name}: {}", recovery.describe());
    }
    let campaigned = tokio::select! {
        campaigned = campaign(&election, value, args.timeout) => Ok(campaigned),
        // Dropping the campaign withdraws the candidacy; the backend's cleanup is awaited by
        // the caller's shutdown().
        signal = interrupts.recv() => Err(signal),
    };
    let leadership = match campaigned {
        Err(signal) => {
            eprintln!("tumbler: interrupted while campaigning in {name}; withdrew the candidacy");
            return Ok(exit::from_signal(signal));
        }
        Ok(Ok(Some(leadership))) => leadership,
        Ok(Ok(None)) => {
            let who = match election.leader().await {
                Ok(Some(leader)) => format!("{} leads", describe(&leader)),
                Ok(None) => "another candidate was elected first".into(),
                Err(e) => format!("who leads is unknown: {e}"),
            };
            let within = args
                .timeout
                .map(|t| format!(" within {}", format_duration(t)))
                .unwrap_or_default();
            eprintln!("tumbler: not elected in {name}{within}: {who}");
            return Ok(exit::BUSY);
        }
        // Not elected for now, but nothing is wrong: busy, like a held lock.
        Ok(Err(e @ tumbler_locks::Error::Recovering { .. })) => {
            eprintln!("tumbler: not elected in {name}: {e}");
            return Ok(exit::BUSY);
        }
        Ok(Err(e)) => return Err(e.to_string()),
    };
    let term = leadership.term().to_string();
    let job = Supervised {
        command: &args.command,
        env: vec![
            ("TUMBLER_LOCK_NAME", name.to_string()),
            ("TUMBLER_FENCING_TOKEN", term.clone()),
            ("TUMBLER_TERM", term),
        ],
        grace: args.grace,
        what: format!("the leadership of {name}"),
    };
    Ok(supervise(Box::new(leadership), job, interrupts).await)
}

async fn campaign(
    election: &Election,
    value: String,
    timeout: Option<Duration>,
) -> tumbler_locks::Result<Option<tumbler_locks::Leadership>> {
    match timeout {
        Some(timeout) => election.campaign_timeout(value, timeout).await,
        None => election.campaign(value).await.map(Some),
    }
}

/// `HOSTNAME:PID`: who leads, readable by `tumbler leader` and the store's own tools.
pub fn default_value() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most buf.len() bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let host = if host.is_empty() {
        "localhost".into()
    } else {
        host
    };
    format!("{host}:{}", std::process::id())
}
