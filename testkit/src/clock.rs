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
//!
//! For Redis there is [`WallClock`]: testkit's own preloaded library (built with the system C
//! compiler on first use), which moves only the wall clock (`CLOCK_REALTIME`, `gettimeofday`,
//! `time`), as an NTP step does, by an offset it reads from shared memory. Redis expires keys
//! and answers `TIME` by the wall clock, so a jump past a key's TTL expires it at once.
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use testkit::clock::{MovableClock, WallClock};
//! use testkit::redis::{Redis, RedisOptions};
//! let clock = Arc::new(WallClock::new()?);
//! let redis = Redis::start_with(RedisOptions { wall_clock: Some(clock.clone()), ..Default::default() }).await?;
//! clock.jump(Duration::from_secs(60))?; // every key with less than a minute to live expires
//! # Ok(()) }
//! ```

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::FileExt;
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

/// A server clock a test can move forward.
pub trait MovableClock: Send + Sync + std::fmt::Debug {
    /// Moves the server's clock forward by `by`, at once.
    fn jump(&self, by: Duration) -> Result<()>;
}

impl MovableClock for FakeClock {
    fn jump(&self, by: Duration) -> Result<()> {
        FakeClock::jump(self, by)
    }
}

/// The source of the preloaded library behind [`WallClock`].
const SHIM_SOURCE: &str = include_str!("wall_clock_shim.c");

/// A wall clock that a test can step forward, for servers that libfaketime cannot run
/// (Debian's `redis-server`): see the module docs. Only the wall clock moves; monotonic
/// clocks stay true.
#[derive(Debug)]
pub struct WallClock {
    file: PathBuf,
    library: PathBuf,
    offset: Mutex<Duration>,
    _dir: WorkDir,
}

impl WallClock {
    /// A clock at offset 0; builds the preloaded library on first use. Fails with
    /// [`Error::NotInstalled`] when there is no C compiler (`cc`).
    pub fn new() -> Result<WallClock> {
        let library = shim_library()?;
        let dir = WorkDir::new("wall-clock")?;
        let file = dir.path().join("offset-ms");
        std::fs::write(&file, 0i64.to_ne_bytes())
            .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        Ok(WallClock {
            file,
            library,
            offset: Mutex::new(Duration::ZERO),
            _dir: dir,
        })
    }

    /// How far ahead the server's wall clock is now.
    pub fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The variables a server process needs to follow this clock.
    pub(crate) fn env(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("LD_PRELOAD".into(), self.library.clone().into()),
            ("TESTKIT_WALL_CLOCK_FILE".into(), self.file.clone().into()),
        ]
    }
}

impl MovableClock for WallClock {
    fn jump(&self, by: Duration) -> Result<()> {
        let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        let moved = *offset + by;
        let ms = i64::try_from(moved.as_millis()).unwrap_or(i64::MAX);
        // In place, never truncated: the server has the file mapped.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.file)
            .and_then(|f| f.write_all_at(&ms.to_ne_bytes(), 0))
            .map_err(|e| Error::io(format!("writing {}", self.file.display()), e))?;
        *offset = moved;
        Ok(())
    }
}

/// The preloaded library, built once per source version into the temporary folder (by a
/// temporary name, then renamed, so concurrent test processes never load a half-written one).
fn shim_library() -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    SHIM_SOURCE.hash(&mut hasher);
    let dir = std::env::temp_dir();
    let library = dir.join(format!("testkit-wall-clock-{:016x}.so", hasher.finish()));
    if library.exists() {
        return Ok(library);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let unique = format!("{}-{nanos}", std::process::id());
    let source = dir.join(format!("testkit-wall-clock-{unique}.c"));
    let built = dir.join(format!("testkit-wall-clock-{unique}.so"));
    std::fs::File::create(&source)
        .and_then(|mut f| f.write_all(SHIM_SOURCE.as_bytes()))
        .map_err(|e| Error::io(format!("writing {}", source.display()), e))?;
    let compiled = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&built)
        .arg(&source)
        .output();
    let _ = std::fs::remove_file(&source);
    match compiled {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(Error::io(
                format!(
                    "building the wall clock library: cc said {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                std::io::Error::other("cc failed"),
            ))
        }
        Err(_) => {
            return Err(Error::NotInstalled {
                binary: "a C compiler (cc)".into(),
                looked_at: "$PATH".into(),
                hint: crate::bins::SETUP_HINT,
            })
        }
    }
    std::fs::rename(&built, &library)
        .map_err(|e| Error::io(format!("placing {}", library.display()), e))?;
    Ok(library)
}
