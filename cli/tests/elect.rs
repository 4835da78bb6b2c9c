//! End-to-end tests of `tumbler elect` and `tumbler leader` against real stores started by
//! testkit: a killed leader's command dies with it and the other candidate takes over within
//! the store's crash-release bound with a higher term, the commands of two leaders never
//! overlap, `leader --json` and `leader --watch` show who leads, an interrupted candidate
//! leaves nothing behind, and bad input is refused with its message and exit code.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use support::{exit_code, scratch, signal, tumbler, BUSY, ERROR};

/// How long a test waits for anything that is not bounded by the store (processes starting,
/// a campaign on a free election).
const PATIENCE: Duration = Duration::from_secs(60);
/// What a takeover may take beyond the store's crash-release bound: the rival's campaign
/// noticing the freed election and starting its command, on a loaded machine.
const TAKEOVER_SLACK: Duration = Duration::from_secs(10);

/// One line of the shared log: what happened, by which candidate, in which term.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    what: String,
    value: String,
    term: u64,
}

fn read_log(log: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|line| line.ends_with(';'))
        .map(|line| {
            let parts: Vec<&str> = line.trim_end_matches(';').split(' ').collect();
            assert_eq!(parts.len(), 3, "bad log line {line:?}");
            Entry {
                what: parts[0].into(),
                value: parts[1].into(),
                term: parts[2].parse().expect("term"),
            }
        })
        .collect()
}

/// Polls the log until `found` returns something; panics after `limit`.
async fn wait_log<T>(log: &Path, limit: Duration, found: impl Fn(&[Entry]) -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = found(&read_log(log)) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "the log did not show what was awaited within {limit:?}:\n{:?}",
            read_log(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first `start` of candidate `value`: its term.
fn started(entries: &[Entry], value: &str) -> Option<u64> {
    entries
        .iter()
        .find(|e| e.what == "start" && e.value == value)
        .map(|e| e.term)
}

/// A `tumbler elect` candidate whose command logs `start VALUE TERM;`, then `tick VALUE
/// TERM;` every 50 ms, then `end VALUE TERM;` (on SIGTERM or once `go` exists, then exits 0),
/// and writes its shell's pid to `pid`.
struct Candidate {
    child: Child,
    go: PathBuf,
    pid: PathBuf,
}

impl Candidate {
    fn start(url: &str, name: &str, value: &str, dir: &Path, extra: &[&str]) -> Candidate {
        let log = dir.join("log");
        let go = dir.join(format!("go-{value}"));
        let pid = dir.join(format!("pid-{value}"));
        let say = |what: &str| {
            format!(
                "echo \"{what} {value} $TUMBLER_TERM;\" >> {}",
                log.display()
            )
        };
        let script = format!(
            "[ \"$TUMBLER_TERM\" = \"$TUMBLER_FENCING_TOKEN\" ] || exit 99; \
             echo $$ > {pid}; trap '{end}; exit 143' TERM; {start}; \
             while [ ! -e {go} ]; do {tick}; sleep 0.05; done; {end}",
            pid = pid.display(),
            go = go.display(),
            start = say("start"),
            tick = say("tick"),
            end = say("end"),
        );
        let child = tumbler(url)
            .args(["elect", name, "--value", value, "--grace", "1s"])
            .args(extra)
            .args(["--", "sh", "-c", &script])
            .spawn()
            .expect("spawn tumbler elect");
        Candidate { child, go, pid }
    }

    /// Lets the command end; tumbler resigns and exits with the command's code.
    async fn finish(&mut self) -> i32 {
        std::fs::write(&self.go, "").expect("create the go file");
        exit_code(&mut self.child, PATIENCE).await
    }

    /// The pid of the command's shell.
    fn command_pid(&self) -> libc::pid_t {
        std::fs::read_to_string(&self.pid)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.go, "");
    }
}

/// Whether `pid` is gone (or a zombie nobody reaped yet: it runs no more code either).
fn is_dead(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// `tumbler leader --json NAME`'s leader: (value, term), `None` when nobody leads.
async fn leader_json(url: &str, name: &str) -> Option<(String, u64)> {
    let out = tumbler(url)
        .args(["leader", "--json", name])
        .output()
        .await
        .expect("tumbler leader");
    assert!(
        out.status.success(),
        "leader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_leader(&String::from_utf8_lossy(&out.stdout), name)
}

fn parse_leader(line: &str, name: &str) -> Option<(String, u64)> {
    let json: serde_json::Value = serde_json::from_str(line.trim()).expect("leader JSON");
    assert_eq!(json["name"], name, "{line}");
    let leader = &json["leader"];
    if leader.is_null() {
        return None;
    }
    assert!(
        leader["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{line}"
    );
    Some((
        leader["value"].as_str().expect("value").to_owned(),
        leader["term"].as_u64().expect("term"),
    ))
}

/// A `tumbler leader --watch --json` follower and its output lines.
struct Watcher {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    name: String,
}

impl Watcher {
    fn start(url: &str, name: &str) -> Watcher {
        let mut child = tumbler(url)
            .args(["leader", "--watch", "--json", name])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tumbler leader --watch");
        let stdout = child.stdout.take().expect("stdout");
        Watcher {
            child,
            lines: BufReader::new(stdout).lines(),
            name: name.into(),
        }
    }

    /// The next leadership printed.
    async fn next(&mut self) -> Option<(String, u64)> {
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("--watch printed nothing in time")
            .expect("read --watch")
            .expect("--watch ended");
        parse_leader(&line, &self.name)
    }

    /// Reads lines until one satisfies `wanted`; returns it.
    async fn until(
        &mut self,
        wanted: impl Fn(&Option<(String, u64)>) -> bool,
    ) -> Option<(String, u64)> {
        loop {
            let leader = self.next().await;
            if wanted(&leader) {
                return leader;
            }
        }
    }
}

/// The store's promised bound on how long a crashed holder keeps a lock from others.
async fn crash_release_bound(url: &str) -> Duration {
    let locks = tumbler_locks::connect(url).await.expect("connect");
    let bound = locks
        .capabilities()
        .crash_release_bound
        .expect("the store promises a crash-release bound");
    let _ = locks.shutdown().await;
    bound
}

/// Two candidates; the leader's tumbler is SIGKILLed: its command dies with it, the other is
/// elected within the store's bound with a higher term, the two commands never overlap, and
/// `leader --json` and `--watch` show each leader; once the new leader's command ends it
/// resigns and nobody leads.
async fn failover(url: &str, test: &str) {
    let name = "cli/elect-failover";
    let dir = scratch(test);
    let log = dir.join("log");
    let mut a = Candidate::start(url, name, "a", &dir, &[]);
    let term_a = wait_log(&log, PATIENCE, |e| started(e, "a")).await;
    let mut b = Candidate::start(url, name, "b", &dir, &[]);
    assert_eq!(leader_json(url, name).await, Some(("a".into(), term_a)));
    let mut watcher = Watcher::start(url, name);
    assert_eq!(watcher.next().await, Some(("a".into(), term_a)));
    assert!(
        started(&read_log(&log), "b").is_none(),
        "b ran while a leads"
    );

    let bound = crash_release_bound(url).await;
    let command_a = a.command_pid();
    a.child.start_kill().expect("SIGKILL a");
    let killed = Instant::now();
    a.child.wait().await.expect("reap a");
    let deadline = Instant::now() + PATIENCE;
    while !is_dead(command_a) {
        assert!(
            Instant::now() < deadline,
            "a's command outlived its tumbler"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term_b = wait_log(&log, bound + TAKEOVER_SLACK + PATIENCE, |e| started(e, "b")).await;
    let took = killed.elapsed();
    assert!(
        took < bound + TAKEOVER_SLACK,
        "b took over {took:?} after a was killed (the store's bound: {bound:?})"
    );
    assert!(term_b > term_a, "terms went {term_a} then {term_b}");
    assert_eq!(
        watcher.until(|l| l.is_some()).await,
        Some(("b".into(), term_b))
    );
    assert_eq!(leader_json(url, name).await, Some(("b".into(), term_b)));

    assert_eq!(b.finish().await, 0);
    assert_eq!(watcher.until(|l| l.is_none()).await, None);
    assert_eq!(leader_json(url, name).await, None);
    signal(&watcher.child, libc::SIGINT);
    assert_eq!(exit_code(&mut watcher.child, PATIENCE).await, 130);

    let entries = read_log(&log);
    let first_b = entries
        .iter()
        .position(|e| e.value == "b")
        .expect("b logged");
    assert!(
        entries[first_b..]
            .iter()
            .all(|e| e.value == "b" && e.term == term_b),
        "a's command ran after b's started: {entries:?}"
    );
    assert!(
        entries[..first_b]
            .iter()
            .all(|e| e.value == "a" && e.term == term_a),
        "{entries:?}"
    );
    assert_eq!(entries.last().map(|e| e.what.as_str()), Some("end"));
    let _ = std::fs::remove_dir_all(dir);
}

/// While one candidate leads: another with `--timeout` exits busy without running, and one
/// interrupted while campaigning exits 130 and leaves nothing behind (nobody leads after the
/// leader resigns; a later candidate is elected at once).
async fn busy_and_withdrawn(url: &str, test: &str) {
    let name = "cli/elect-busy";
    let dir = scratch(test);
    let log = dir.join("log");
    let mut a = Candidate::start(url, name, "a", &dir, &[]);
    let term_a = wait_log(&log, PATIENCE, |e| started(e, "a")).await;

    let mut timed = Candidate::start(url, name, "t", &dir, &["--timeout", "300ms"]);
    assert_eq!(exit_code(&mut timed.child, PATIENCE).await, BUSY);

    let mut quitter = Candidate::start(url, name, "q", &dir, &[]);
    // The leader is read through the quitter's own store until it campaigns: a process that
    // has connected and waits shows no output, so wait for its watcher-visible absence only.
    assert_eq!(leader_json(url, name).await, Some(("a".into(), term_a)));
    signal(&quitter.child, libc::SIGINT);
    assert_eq!(exit_code(&mut quitter.child, PATIENCE).await, 130);

    assert_eq!(a.finish().await, 0);
    assert_eq!(leader_json(url, name).await, None);
    let mut c = Candidate::start(url, name, "c", &dir, &[]);
    let term_c = wait_log(&log, PATIENCE, |e| started(e, "c")).await;
    assert!(term_c > term_a);
    assert_eq!(c.finish().await, 0);
    let entries = read_log(&log);
    assert!(
        entries.iter().all(|e| e.value == "a" || e.value == "c"),
        "a candidate that was not elected ran: {entries:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// An empty `--value` is refused with lockcore's message and 77, before anything runs.
async fn empty_value_refused(url: &str, test: &str) {
    let dir = scratch(test);
    let ran = dir.join("ran");
    let out = tumbler(url)
        .args(["elect", "cli/elect-empty", "--value", "", "--", "touch"])
        .arg(&ran)
        .output();
    let out = tokio::time::timeout(PATIENCE, out)
        .await
        .expect("elect --value '' hung")
        .expect("run tumbler");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(ERROR), "{stderr}");
    assert!(
        stderr.contains("the value advertised in election cli/elect-empty is empty"),
        "{stderr}"
    );
    assert!(!ran.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// The end-to-end tests for one store; `$start` yields (servers kept alive, URL).
macro_rules! store_tests {
    ($module:ident, $start:expr) => {
        mod $module {
            #[tokio::test]
            async fn failover() {
                let (_servers, url) = $start.await;
                super::failover(&url, concat!(stringify!($module), "-failover")).await;
            }

            #[tokio::test]
            async fn busy_and_withdrawn() {
                let (_servers, url) = $start.await;
                super::busy_and_withdrawn(&url, concat!(stringify!($module), "-busy")).await;
            }

            #[tokio::test]
            async fn empty_value_refused() {
                let (_servers, url) = $start.await;
                super::empty_value_refused(&url, concat!(stringify!($module), "-empty")).await;
            }
        }
    };
}

store_tests!(zookeeper, super::support::stores::zookeeper());
store_tests!(redis, super::support::stores::redis());
store_tests!(etcd, super::support::stores::etcd());
store_tests!(consul, super::support::stores::consul());

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `tumbler ARGS` against `url`: exit code and stderr, failing if it hangs.
async fn refused(url: &str, args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(PATIENCE, tumbler(url).args(args).output())
        .await
        .unwrap_or_else(|_| panic!("tumbler {args:?} hung on {url}"))
        .expect("run tumbler");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A store that is down: elect, leader and leader --watch exit 77 naming it, without hanging
/// and without running the command.
#[tokio::test]
async fn store_down_is_an_error() {
    let dir = scratch("elect-down");
    let ran = dir.join("ran");
    let ran = ran.to_str().expect("UTF-8 path");
    for scheme in ["redis", "zk", "etcd", "consul"] {
        let port = closed_port();
        let url = format!("{scheme}://127.0.0.1:{port}");
        for args in [
            &["elect", "cli/down", "--value", "a", "--", "touch", ran][..],
            &["leader", "cli/down"][..],
            &["leader", "--watch", "--json", "cli/down"][..],
        ] {
            let (code, stderr) = refused(&url, args).await;
            assert_eq!(code, ERROR, "{url} {args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("127.0.0.1:{port}")),
                "{url} {args:?} does not name the store: {stderr}"
            );
        }
    }
    assert!(!Path::new(ran).exists(), "a command ran without a store");
    let _ = std::fs::remove_dir_all(dir);
}

/// A malformed URL is refused with the connector's message and 77.
#[tokio::test]
async fn malformed_url_is_an_error() {
    for args in [
        &["elect", "cli/bad", "--value", "a", "--", "true"][..],
        &["leader", "cli/bad"][..],
    ] {
        let (code, stderr) = refused("redis//127.0.0.1:6379", args).await;
        assert_eq!(code, ERROR, "{args:?}: {stderr}");
        assert!(
            stderr.contains("redis//127.0.0.1:6379"),
            "{args:?}: {stderr}"
        );
    }
}

/// Usage errors: no command, a bad election name.
#[tokio::test]
async fn usage_errors() {
    let (code, stderr) = refused("redis://127.0.0.1:1", &["elect", "cli/x"]).await;
    assert_eq!(code, ERROR, "{stderr}");
    let (code, stderr) = refused("redis://127.0.0.1:1", &["leader"]).await;
    assert_eq!(code, ERROR, "{stderr}");
}

#[test]
fn help_is_complete() {
    for (sub, needles) in [
        (
            "elect",
            &[
                "--value",
                "--timeout",
                "--grace",
                "TUMBLER_TERM",
                "TUMBLER_FENCING_TOKEN",
                "HOSTNAME:PID",
                "75",
                "76",
                "77",
                "78",
                "127",
                "128+N",
            ][..],
        ),
        ("leader", &["--watch", "--json", "term", "77", "130"][..]),
        ("", &["elect", "leader"][..]),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tumbler"));
        if !sub.is_empty() {
            cmd.arg(sub);
        }
        let out = cmd.arg("--help").output().expect("tumbler --help");
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in needles {
            assert!(
                text.contains(needle),
                "{sub} --help lacks {needle}:\n{text}"
            );
        }
    }
}
