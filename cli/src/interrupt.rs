//! SIGINT, SIGTERM and SIGHUP sent to tumbler itself, as one stream, so that every command can
//! stop cleanly (cancel its wait, release its hold, shut the backend down) instead of dying.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Listens for SIGINT, SIGTERM and SIGHUP from the moment it is created (the default "die at
/// once" disposition is replaced for the whole process).
pub struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Interrupts {
    /// Starts listening.
    pub fn listen() -> Result<Self, String> {
        let listen =
            |kind: SignalKind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        Ok(Interrupts {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    /// Resolves with the number of the next SIGINT, SIGTERM or SIGHUP received.
    pub async fn recv(&mut self) -> libc::c_int {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}
