//! Interop with Go's `clientv3/concurrency.Election` itself (a small program in `tests/go/`,
//! built in GOPATH mode against Debian's golang-etcd-server-dev): each side sees the other's
//! leader, term and proclaimed values, and each waits for the other's resignation.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use testkit::etcd::Etcd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tumbler_core::{LockName, SharedBackend};

const DEADLINE: Duration = Duration::from_secs(20);
const SOURCE: &str = include_str!("go/election_peer.go");
const GOPATH: &str = "/usr/share/gocode";

async fn connect(e: &Etcd) -> SharedBackend {
    tumbler_etcd::connect_url(&format!("etcd://127.0.0.1:{}?ttl=5s", e.port()))
        .await
        .expect("connect")
}

/// Builds the Go peer in a folder of this test process; returns its path.
async fn peer_binary() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "backend-etcd-go-election-{}-{}",
        SOURCE.len(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp folder");
    let source = dir.join("main.go");
    std::fs::write(&source, SOURCE).expect("write the Go source");
    let binary = dir.join("election-peer");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env(
            "GOCACHE",
            std::env::temp_dir().join("backend-etcd-go-cache"),
        )
        .env("GOFLAGS", "")
        .output()
        .await
        .expect("run go (Debian packages golang-go and golang-etcd-server-dev)");
    assert!(
        out.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

struct Peer {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn start(binary: &PathBuf, e: &Etcd, args: &[&str]) -> Peer {
        let mut child = Command::new(binary)
            .arg(e.endpoint())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Go peer");
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Peer { child, out }
    }

    async fn line(&mut self, what: &str) -> String {
        tokio::time::timeout(DEADLINE, self.out.next_line())
            .await
            .unwrap_or_else(|_| panic!("the Go peer did not print {what}"))
            .expect("read the Go peer")
            .unwrap_or_else(|| panic!("the Go peer ended before printing {what}"))
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }
}

#[tokio::test]
async fn go_election_and_tumbler_see_each_other() {
    let binary = peer_binary().await;
    let e = Etcd::start().await.expect("etcd");
    let locks = connect(&e).await;
    let n = LockName::new("interop/go-election").unwrap();
    let election = locks.election(&n).unwrap();

    // Go leads: we see its key, term (its Rev()) and proclaimed value.
    let mut go = Peer::start(&binary, &e, &["campaign", n.as_str(), "go-1"]);
    let elected = go.line("LEADER").await;
    let parts: Vec<&str> = elected.split(' ').collect();
    assert_eq!(parts.len(), 3, "{elected}");
    assert_eq!(parts[0], "LEADER");
    let go_term: u64 = parts[2].parse().unwrap();
    let seen = election.leader().await.unwrap().expect("Go leads");
    assert_eq!(
        (seen.value.as_slice(), seen.term, seen.id.as_str()),
        (&b"go-1"[..], go_term, parts[1])
    );
    let mut observer = election.observe();
    assert_eq!(observer.next().await.unwrap(), Some(seen));
    go.say("proclaim go-2").await;
    assert_eq!(go.line("PROCLAIMED").await, "PROCLAIMED");
    let seen = tokio::time::timeout(DEADLINE, observer.next())
        .await
        .expect("our observer missed Go's proclaim")
        .unwrap()
        .unwrap();
    assert_eq!((seen.value.as_slice(), seen.term), (&b"go-2"[..], go_term));

    // We wait for Go's resignation.
    let waiting = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("rust-1").await }
    });
    let start = tokio::time::Instant::now();
    while locks.state(&n).await.unwrap().waiters != Some(1) {
        assert!(start.elapsed() < DEADLINE, "our campaign never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!waiting.is_finished(), "we were elected while Go led");
    go.say("resign").await;
    assert_eq!(go.line("RESIGNED").await, "RESIGNED");
    let mut leading = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("we were not elected after Go resigned")
        .unwrap()
        .unwrap();
    assert!(leading.term() > go_term);

    // Go's Observe sees our leadership and our proclaim; Go's campaign waits for us.
    let mut go_observer = Peer::start(&binary, &e, &["observe", n.as_str()]);
    assert_eq!(
        go_observer.line("our leadership").await,
        format!("SEEN rust-1 {}", leading.term())
    );
    leading.proclaim("rust-2").await.unwrap();
    assert_eq!(
        go_observer.line("our proclaim").await,
        format!("SEEN rust-2 {}", leading.term())
    );
    let mut go = Peer::start(&binary, &e, &["campaign", n.as_str(), "go-3"]);
    let start = tokio::time::Instant::now();
    while locks.state(&n).await.unwrap().waiters != Some(1) {
        assert!(start.elapsed() < DEADLINE, "Go's campaign never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let early = tokio::time::timeout(Duration::from_millis(500), go.out.next_line()).await;
    assert!(early.is_err(), "Go was elected while we led: {early:?}");
    let our_term = leading.term();
    leading.resign().await.unwrap();
    let elected = go.line("LEADER after we resigned").await;
    let go_term: u64 = elected.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(go_term > our_term);
    assert_eq!(
        go_observer.line("Go's new leadership").await,
        format!("SEEN go-3 {go_term}")
    );
    go.say("resign").await;
    assert_eq!(go.line("RESIGNED").await, "RESIGNED");
    drop((go, go_observer));
    if let Some(dir) = binary.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
