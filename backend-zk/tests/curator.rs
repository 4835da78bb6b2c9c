//! Wire compatibility with Apache Curator 5.4 (Debian's `libcurator-recipes-java`): a Java
//! process using InterProcessMutex, InterProcessReadWriteLock and InterProcessSemaphoreV2 on
//! the same paths excludes with tumbler in both directions, and a LeaderLatch takes part in
//! the same elections as tumbler's campaigns.
//!
//! `tests/curator/Holder.java` is compiled with `javac` into the target folder on first use.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::{server, PROMPT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tumbler_core::LockName;

/// Debian's jars for Curator 5.4 and its ZooKeeper client.
const JARS: [&str; 8] = [
    "curator-client",
    "curator-framework",
    "curator-recipes",
    "zookeeper",
    "zookeeper-jute",
    "guava",
    "slf4j-api",
    "slf4j-nop",
];

fn classpath() -> String {
    JARS.iter()
        .map(|jar| format!("/usr/share/java/{jar}.jar"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Compiles the Java holder once per test process and returns the folder of its class.
fn compiled() -> &'static PathBuf {
    static CLASSES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = CLASSES.get_or_init(|| {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/curator/Holder.java");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("curator-holder");
        std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
        let status = std::process::Command::new("javac")
            .arg("-cp")
            .arg(classpath())
            .arg("-d")
            .arg(&out)
            .arg(&source)
            .status()
            .map_err(|e| {
                format!("running javac (scripts/setup installs default-jdk-headless): {e}")
            })?;
        if !status.success() {
            return Err(format!(
                "javac failed on {} ({status}); scripts/setup installs libcurator-recipes-java",
                source.display()
            ));
        }
        Ok(out)
    });
    match result {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}

/// A running Curator client taking commands on stdin.
struct Curator {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Curator {
    async fn start(connect: &str) -> Curator {
        let classes = compiled();
        let mut child = Command::new("java")
            .arg("-XX:TieredStopAtLevel=1")
            .arg("-cp")
            .arg(format!("{}:{}", classes.display(), classpath()))
            .arg("Holder")
            .arg(connect)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting java");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut curator = Curator {
            _child: child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        };
        assert_eq!(curator.line().await, "READY");
        curator
    }

    async fn line(&mut self) -> String {
        match tokio::time::timeout(PROMPT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("the Curator process did not answer: {other:?}"),
        }
    }

    async fn ask(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("writing to the Curator process");
        self.stdin.flush().await.expect("flushing");
        self.line().await
    }
}

#[tokio::test]
async fn mutex_excludes_with_curator_in_both_directions() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let mut curator = Curator::start(&hosts).await;
    let ours = tumbler_zookeeper::connect_url(&format!("zk://{hosts}?session_timeout=6s"))
        .await
        .unwrap();
    let mutex = ours.mutex("interop/mutex").unwrap();

    // Curator holds: ours waits, and gets the lock once Curator releases.
    assert_eq!(curator.ask("mutex /interop/mutex 5000").await, "ACQUIRED");
    assert!(
        mutex.try_lock().await.unwrap().is_none(),
        "Curator holds the path"
    );
    let waiting = tokio::spawn({
        let mutex = mutex.clone();
        async move { mutex.lock().await }
    });
    let state = common::eventually("ours queues behind Curator", || async {
        let state = ours
            .state(&LockName::new("interop/mutex").unwrap())
            .await
            .unwrap();
        (state.waiters == Some(1)).then_some(state)
    })
    .await;
    assert_eq!(
        state.holders.len(),
        1,
        "Curator's node is the holder: {state:?}"
    );
    assert!(!waiting.is_finished());
    assert_eq!(curator.ask("release /interop/mutex").await, "RELEASED");
    let guard = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("ours acquires after Curator's release")
        .unwrap()
        .unwrap();

    // Ours holds: Curator's bounded acquire fails, and succeeds after our release.
    assert_eq!(curator.ask("mutex /interop/mutex 200").await, "BUSY");
    guard.release().await.unwrap();
    assert_eq!(curator.ask("mutex /interop/mutex 5000").await, "ACQUIRED");
    assert!(mutex.try_lock().await.unwrap().is_none());
    // Our revocation request reaches Curator's revocable lock (Curator's Revoker marker).
    assert_eq!(
        ours.request_revoke(&LockName::new("interop/mutex").unwrap())
            .await
            .unwrap(),
        1
    );
    let deadline = std::time::Instant::now() + PROMPT;
    while curator.ask("revoke-requested /interop/mutex").await != "YES" {
        assert!(
            std::time::Instant::now() < deadline,
            "Curator's revocation listener did not run within {PROMPT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(curator.ask("release /interop/mutex").await, "RELEASED");
    assert!(mutex.try_lock().await.unwrap().is_some());
}

#[tokio::test]
async fn rwlock_and_semaphore_share_curators_layouts() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let mut curator = Curator::start(&hosts).await;
    let ours = tumbler_zookeeper::connect_url(&format!("zk://{hosts}?session_timeout=6s"))
        .await
        .unwrap();

    // Read-write lock.
    let rw = ours.rwlock("interop/rw").unwrap();
    assert_eq!(curator.ask("write /interop/rw 5000").await, "ACQUIRED");
    assert!(
        rw.try_read().await.unwrap().is_none(),
        "Curator's writer excludes our reader"
    );
    assert_eq!(curator.ask("release /interop/rw").await, "RELEASED");
    let writer = rw.write().await.unwrap();
    assert_eq!(
        curator.ask("read /interop/rw 200").await,
        "BUSY",
        "our writer excludes Curator's reader"
    );
    let reader = writer.downgrade().await.unwrap();
    assert_eq!(
        curator.ask("read /interop/rw 5000").await,
        "ACQUIRED",
        "readers share"
    );
    assert_eq!(curator.ask("release /interop/rw").await, "RELEASED");
    assert_eq!(
        curator.ask("write /interop/rw 200").await,
        "BUSY",
        "our downgraded reader excludes Curator's writer"
    );
    reader.release().await.unwrap();
    assert_eq!(curator.ask("write /interop/rw 5000").await, "ACQUIRED");
    assert_eq!(curator.ask("release /interop/rw").await, "RELEASED");

    // Semaphore (InterProcessSemaphoreV2), 3 permits.
    let sem = ours.semaphore("interop/sem", 3).unwrap();
    assert_eq!(curator.ask("sem /interop/sem 3 2 5000").await, "ACQUIRED");
    assert!(
        sem.try_acquire(2).await.unwrap().is_none(),
        "2 of Curator's + 2 > 3"
    );
    let one = sem
        .try_acquire(1)
        .await
        .unwrap()
        .expect("one permit is left");
    let state = ours
        .state(&LockName::new("interop/sem").unwrap())
        .await
        .unwrap();
    let held: u32 = state
        .holders
        .iter()
        .map(|h| match h.mode {
            tumbler_core::HoldMode::Permits(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(held, 3, "{state:?}");
    // Curator counts our lease too: its bounded acquire on the full semaphore times out.
    assert_eq!(curator.ask("sem /interop/sem 3 1 300").await, "BUSY");
    assert_eq!(curator.ask("release /interop/sem").await, "RELEASED");
    let two = sem
        .try_acquire(2)
        .await
        .unwrap()
        .expect("Curator's two permits came back");
    one.release().await.unwrap();
    two.release().await.unwrap();
    assert_eq!(
        curator.ask("sem /interop/sem 3 3 5000").await,
        "ACQUIRED",
        "all our permits came back"
    );
    assert!(
        sem.try_acquire(1).await.unwrap().is_none(),
        "Curator holds all 3"
    );
    assert_eq!(curator.ask("release /interop/sem").await, "RELEASED");
}

#[tokio::test]
async fn elections_are_shared_with_curators_leader_latch() {
    let zk = server().await;
    let hosts = zk.connect_string();
    let mut curator = Curator::start(&hosts).await;
    let ours = tumbler_zookeeper::connect_url(&format!("zk://{hosts}?session_timeout=6s"))
        .await
        .unwrap();
    let election = ours.election("interop/election").unwrap();
    let name = LockName::new("interop/election").unwrap();

    // Java leads: we see its participant id, cannot lead, and win once its latch closes.
    assert_eq!(
        curator.ask("latch /interop/election java-1").await,
        "STARTED"
    );
    assert_eq!(
        curator.ask("latch-await /interop/election 5000").await,
        "LEADER"
    );
    let leader = election.leader().await.unwrap().expect("Java leads");
    assert_eq!(leader.value, b"java-1");
    assert!(election.try_campaign("rust-1").await.unwrap().is_none());
    let waiting = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("rust-1").await }
    });
    common::eventually("our candidate queues behind Java's", || async {
        let state = ours.state(&name).await.unwrap();
        (state.waiters == Some(1)).then_some(())
    })
    .await;
    assert!(!waiting.is_finished());
    assert_eq!(curator.ask("latch-close /interop/election").await, "CLOSED");
    let ours_leads = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("ours is elected once Java's latch closed")
        .unwrap()
        .unwrap();
    assert!(ours_leads.term() > leader.term);

    // We lead: Java's latch sees our value as the leader's id and does not lead until we resign.
    assert_eq!(
        curator.ask("latch /interop/election java-2").await,
        "STARTED"
    );
    assert_eq!(
        curator.ask("latch-leader /interop/election").await,
        "LEADER rust-1"
    );
    assert_eq!(
        curator.ask("latch-await /interop/election 300").await,
        "NOT"
    );
    assert_eq!(curator.ask("latch-has /interop/election").await, "NO");
    ours_leads.resign().await.unwrap();
    assert_eq!(
        curator.ask("latch-await /interop/election 5000").await,
        "LEADER"
    );
    assert_eq!(
        election.leader().await.unwrap().map(|l| l.value),
        Some(b"java-2".to_vec())
    );
    assert_eq!(curator.ask("latch-close /interop/election").await, "CLOSED");
    // LeaderLatch.close() deletes its node in the background.
    common::eventually("Java's node is gone after close", || async {
        election.leader().await.unwrap().is_none().then_some(())
    })
    .await;

    // A proclaimed value is what Java reads as the leader's id. (Java's latch starts after the
    // proclaim: a LeaderLatch already waiting directly behind us would miss our resignation,
    // see `ZkBackend`'s documentation.)
    let mut ours_leads = election.campaign("rust-2").await.unwrap();
    ours_leads.proclaim("rust-3").await.unwrap();
    assert_eq!(
        curator.ask("latch /interop/election java-3").await,
        "STARTED"
    );
    assert_eq!(
        curator.ask("latch-leader /interop/election").await,
        "LEADER rust-3",
        "Java reads the value we proclaimed"
    );
    ours_leads.resign().await.unwrap();
    assert_eq!(
        curator.ask("latch-await /interop/election 5000").await,
        "LEADER"
    );
    assert_eq!(curator.ask("latch-close /interop/election").await, "CLOSED");
}
