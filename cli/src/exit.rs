//! The exit codes of `tumbler`, documented in `tumbler --help` and `tumbler run --help`.

/// The lock could not be had: `--no-wait` found it held, or `--timeout` passed.
pub const BUSY: i32 = 75;
/// The lock was lost while the command ran; the command was terminated.
pub const LOST: i32 = 76;
/// tumbler itself failed: bad arguments (usage errors), an unreachable store.
pub const ERROR: i32 = 77;
/// `tumbler revoke` asked the holder to let go; the command was terminated and the lock
/// released.
pub const REVOKED: i32 = 78;
/// The command was found but could not be executed (permission denied, not a program), as in
/// shells.
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found, as in shells.
pub const NOT_FOUND: i32 = 127;

/// The exit code for a child that ended by a signal: 128 + signal, like a shell.
pub fn from_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => from_signal(signal),
        (None, None) => ERROR,
    }
}

/// The exit code for tumbler itself ending on signal `signal` (SIGINT, SIGTERM): 128 + signal,
/// like a shell.
pub fn from_signal(signal: i32) -> i32 {
    128 + signal
}
