//! Temporary folders for server data and logs.
//!
//! Every folder is named `tumbler-testkit.<pid>.<label>.<random>` in the system temp folder and is
//! removed when its handle drops. A test process that is killed cannot remove its folders, so
//! the first folder a process creates also sweeps away folders left by processes that no longer
//! exist. Set `TESTKIT_KEEP_DIRS=1` to keep every folder for a post-mortem.

use std::path::Path;
use std::sync::Once;

use tempfile::TempDir;

use crate::error::{Error, Result};

const PREFIX: &str = "tumbler-testkit.";

/// A server's temporary folder; removed on drop unless `TESTKIT_KEEP_DIRS=1`.
#[derive(Debug)]
pub(crate) struct WorkDir {
    dir: Option<TempDir>,
    path: std::path::PathBuf,
}

impl WorkDir {
    /// Creates a fresh folder whose name contains `label` (e.g. `redis`, `zk-ensemble`).
    pub(crate) fn new(label: &str) -> Result<WorkDir> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_stale_dirs);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}.{label}.", std::process::id()))
            .tempdir()
            .map_err(|e| {
                Error::io(
                    format!(
                        "creating a temporary folder in {}",
                        std::env::temp_dir().display()
                    ),
                    e,
                )
            })?;
        let path = dir.path().to_path_buf();
        let keep = std::env::var_os("TESTKIT_KEEP_DIRS").is_some_and(|v| v == "1");
        Ok(WorkDir {
            dir: if keep {
                let _kept = dir.keep();
                None
            } else {
                Some(dir)
            },
            path,
        })
    }

    /// The folder's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (if needed) and returns a subfolder.
    pub(crate) fn sub(&self, name: &str) -> Result<std::path::PathBuf> {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p)
            .map_err(|e| Error::io(format!("creating folder {}", p.display()), e))?;
        Ok(p)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            // Best effort: a folder that cannot be removed is swept by a later run.
            let _ = dir.close();
        }
    }
}

/// Removes the server folders (`tumbler-testkit.<pid>.*` in the system temp folder) left behind
/// by test processes that no longer exist, e.g. ones that were killed. The kit does this by
/// itself once per process, before it creates its first folder.
pub fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid > 0 && !process_exists(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// True if a process with this id exists (zombies included).
fn process_exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission; it sends nothing.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
