//! The exit codes of `tumbler run`, documented in `tumbler run --help`.

/// The lock could not be had: `--no-wait` found it held, or `--timeout` passed.
pub const BUSY: i32 = 75;
/// The lock was lost while the command ran; the command was terminated.
pub const LOST: i32 = 76;
/// tumbler itself failed: bad arguments, unreachable store, the command could not start.
pub const ERROR: i32 = 77;

/// The exit code for a child that ended by a signal: 128 + signal, like a shell.
pub fn from_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => ERROR,
    }
}
