//! Finding the server programs installed by `scripts/setup` (Debian packages).
//!
//! Each lookup can be overridden by an environment variable:
//! `TESTKIT_REDIS_SERVER`, `TESTKIT_ETCD`, `TESTKIT_JAVA`, `TESTKIT_ZK_CLASSPATH`
//! (a `:`-separated Java class path that contains ZooKeeper and a log4j 1.2 binding).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What every "not installed" error tells the reader to do.
pub(crate) const SETUP_HINT: &str =
    "run scripts/setup (as root) to install the servers the tests need";

/// The jars ZooKeeper runs from on Debian; `zookeeper.jar`'s manifest pulls in the rest.
const ZK_JARS: [&str; 3] = [
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
];

/// Finds `name` via `$env_var`, then `$PATH`, then /usr/bin, /usr/sbin and /usr/local/bin.
pub(crate) fn program(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(Error::NotInstalled {
                binary: name.to_string(),
                looked_at: format!("{env_var}={}", p.display()),
                hint: SETUP_HINT,
            })
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        dirs.push(PathBuf::from(d));
    }
    for d in &dirs {
        let candidate = d.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(Error::NotInstalled {
        binary: name.to_string(),
        looked_at: format!("${env_var}, $PATH, /usr/bin, /usr/sbin, /usr/local/bin"),
        hint: SETUP_HINT,
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `redis-server`.
pub(crate) fn redis_server() -> Result<PathBuf> {
    program("redis-server", "TESTKIT_REDIS_SERVER")
}

/// `etcd`.
pub(crate) fn etcd() -> Result<PathBuf> {
    program("etcd", "TESTKIT_ETCD")
}

/// `java` (also looked for under `$JAVA_HOME/bin`).
pub(crate) fn java() -> Result<PathBuf> {
    if std::env::var_os("TESTKIT_JAVA").is_none() {
        if let Some(home) = std::env::var_os("JAVA_HOME") {
            let p = PathBuf::from(home).join("bin/java");
            if is_executable(&p) {
                return Ok(p);
            }
        }
    }
    program("java", "TESTKIT_JAVA")
}

/// The class path for `org.apache.zookeeper.server.quorum.QuorumPeerMain`.
pub(crate) fn zookeeper_classpath() -> Result<String> {
    if let Some(cp) = std::env::var_os("TESTKIT_ZK_CLASSPATH") {
        return Ok(cp.to_string_lossy().into_owned());
    }
    for jar in ZK_JARS {
        if !Path::new(jar).is_file() {
            return Err(Error::NotInstalled {
                binary: jar.to_string(),
                looked_at: format!("{jar} (or set TESTKIT_ZK_CLASSPATH)"),
                hint: SETUP_HINT,
            });
        }
    }
    Ok(ZK_JARS.join(":"))
}
