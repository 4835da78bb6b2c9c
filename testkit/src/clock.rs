//! A server clock that a test can move: the server runs under libfaketime (Debian's
//! `faketime` package), which reads its offset from a file on every clock call.
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use testkit::clock::FakeClock;
//! use testkit::zk::{ZkOptions, ZooKeeper};
//! let clock = Arc::new(FakeClock::new()?);
//! let zk = ZooKeeper::start_with(ZkOptions { clock: Some(clock.clone()), ..Default::default() }).await?;
//! clock.jump(Duration::from_secs(10))?; // the server's wall and monotonic clocks leap ahead
//! # Ok(()) }
//! ```
//!
//! It works for servers that read the clock through the C library: ZooKeeper (the JVM) does.
//! Redis does too, but Debian's `redis-server` allocates with jemalloc, which calls the clock
//! while libfaketime initialises, and the server does not start (libfaketime issue #130); Go
//! programs (etcd) read the clock without the C library, so libfaketime cannot move it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::workdir::WorkDir;

/// Where Debian's `faketime` package puts the multi-threaded library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A clock offset file and the environment that makes a server follow it.
#[derive(Debug)]
pub struct FakeClock {
    file: PathBuf,
    offset: Mutex<Duration>,
    _dir: WorkDir,
}

impl FakeClock {
    /// A clock at offset 0. Fails with [`Error::NotInstalled`] when libfaketime is missing.
    pub fn new() -> Result<FakeClock> {
        if !std::path::Path::new(LIBFAKETIME).exists() {
            return Err(Error::NotInstalled {
                binary: "libfaketime (Debian package faketime)".into(),
                looked_at: LIBFAKETIME.into(),
                hint: crate::bins::SETUP_HINT,
            });
        }
        let dir = WorkDir::new("clock")?;
        let file = dir.path().join("faketime");
        let clock = FakeClock {
            file,
            offset: Mutex::new(Duration::ZERO),
            _dir: dir,
        };
        clock.write(Duration::ZERO)?;
        Ok(clock)
    }

    /// Moves the server's clocks (wall and monotonic) forward by `by`, at once.
    pub fn jump(&self, by: Duration) -> Result<()> {
        let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset += by;
        self.write(*offset)
    }

    /// How far ahead the server's clock is now.
    pub fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, offset: Duration) -> Result<()> {
        std::fs::write(&self.file, format!("+{:.3}\n", offset.as_secs_f64()))
            .map_err(|e| Error::io(format!("writing {}", self.file.display()), e))
    }

    /// The variables a server process needs to follow this clock.
    pub(crate) fn env(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("LD_PRELOAD".into(), LIBFAKETIME.into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), self.file.clone().into()),
            // Read the file on every call, so a jump takes effect at once.
            ("FAKETIME_NO_CACHE".into(), "1".into()),
        ]
    }
}
