//! `tumbler`: distributed locks from the shell.

mod bench;
mod elect;
mod exit;
mod interrupt;
mod lab;
mod leader;
mod manual;
mod markup;
mod out_dir;
mod recovery;
mod run;
mod spinner;
mod status;
mod supervise;

use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use tumbler_locks::params::format_duration;

/// Where `bench --local` and `lab` get their servers, in the help of both (a macro, so that
/// `concat!` can append it to their help).
macro_rules! servers_help {
    () => {
        "\
Servers: --local and every lab cell start real servers on free loopback ports from programs
installed on this machine, also for a tumbler installed with `cargo install`: redis-server,
etcd, and ZooKeeper (its jars under /usr/share/java, run with java) from the Debian packages
redis-server, etcd-server and zookeeper (scripts/setup in tumbler's source installs them).
They are looked up in $TESTKIT_REDIS_SERVER, $TESTKIT_ETCD, $TESTKIT_JAVA and
$TESTKIT_ZK_CLASSPATH, then $PATH; one that is missing is named with where it was looked for.
Consul is a protocol test server built into tumbler (no Consul agent needed)."
    };
}

const URL_HELP: &str = "\
The store, by URL (or the TUMBLER_URL environment variable):
  redis://[user:password@]host:port[?ttl=30s&prefix=app:]     one Redis server
  rediss://...                                                 Redis over TLS
  redis+redlock://host1:port,host2:port,host3:port             Redlock over independent masters
  zk://[user:password@]host:port[,host:port...][/chroot]       ZooKeeper (zk+tls:// for TLS)
  etcd://[user:password@]host:port[,host:port...]              etcd (etcds:// for TLS)
  consul://host:port[?token=...]                               Consul (consuls:// for HTTPS)
TLS parameters are the same on every store: tls_ca, tls_cert, tls_key.
Each store needs its cargo feature (the tumbler CLI is built with all of them).
memory:// only works inside one process, so it is useless for the CLI.

Exit codes (every subcommand; `tumbler run --help` and `tumbler elect --help` list theirs):
  0    success (for run and elect: the command's own code)
  77   tumbler failed: bad arguments (a usage error), unreachable store
  130  interrupted by SIGINT (143: SIGTERM, 129: SIGHUP); waits were cancelled and holds
       released";

/// How long tumbler waits, before exiting, for the backend to release every hold and waiter
/// it still has (a cancelled wait's queue entry, a release retried in the background): a few
/// round trips on a healthy store, and a store that does not answer must not keep tumbler.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);

/// Distributed locks from the shell: run commands under a lock held on ZooKeeper, Redis, etcd or
/// Consul, inspect locks and ask their holders to let go.
#[derive(Parser)]
#[command(name = "tumbler", version, after_help = URL_HELP)]
struct Cli {
    /// The store's URL (see below). Also read from TUMBLER_URL.
    #[arg(long, env = "TUMBLER_URL", global = true)]
    url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command while holding a lock (like flock, `etcdctl lock` and `consul lock`).
    #[command(after_help = "\
The command gets TUMBLER_LOCK_NAME and TUMBLER_FENCING_TOKEN in its environment; pass the token
to whatever the lock protects so it can reject stale writers.

If the lock is lost while the command runs (session expired, renewal failed), tumbler sends the
command SIGTERM, then SIGKILL after --grace, and exits with code 76. `tumbler revoke NAME` (from
anywhere) does the same and tumbler exits with code 78, having released the lock. SIGTERM,
SIGINT and SIGHUP sent to tumbler while the command runs are forwarded to the command; the lock
is released when the command ends. Sent while tumbler waits for the lock, they cancel the wait
(leaving no queue entry behind) and tumbler exits with 128+N. If tumbler itself is killed
(SIGKILL), the kernel kills the command too (PR_SET_PDEATHSIG), so that it cannot go on working
once the store gives the lock to someone else (processes the command started are its to stop).

Exit codes:
  the command's own code   the command ran to completion (128+N if it died of signal N)
  75                       the lock was not acquired (--no-wait found it held, or --timeout passed;
                           also while the store grants nothing after a restart, see below)
  76                       the lock was lost while the command ran; the command was stopped
  77                       tumbler failed: bad arguments (a usage error), unreachable store
  78                       the lock was revoked (tumbler revoke); the command was stopped
  126                      the command exists but cannot be executed (e.g. not executable)
  127                      the command was not found
  128+N                    tumbler got signal N (SIGHUP: 129, SIGINT: 130, SIGTERM: 143) while
                           waiting

While waiting on a terminal, a spinner shows who holds the lock.

A Redis server that does not persist every write may have forgotten locks in a restart, so for
`restart_delay` (a URL parameter, default: the ttl) after one no lock is granted. tumbler says so
when it applies: run prints the time left before it waits, and `tumbler status` shows it.")]
    Run {
        /// Give up after waiting this long (e.g. 500ms, 10s, 2m) and exit 75.
        #[arg(long, value_parser = parse_duration, conflicts_with = "no_wait")]
        timeout: Option<Duration>,
        /// Do not wait: exit 75 at once if the lock is held.
        #[arg(long)]
        no_wait: bool,
        /// Take one permit of a semaphore with this many permits instead of a mutex.
        #[arg(long, value_name = "LIMIT")]
        semaphore: Option<u32>,
        /// How long the command may take to exit after SIGTERM when the lock is lost or revoked,
        /// before it gets SIGKILL.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        grace: Duration,
        /// The lock's name, e.g. jobs/nightly.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Campaign in an election and run a command while leading (like `etcdctl elect`).
    #[command(after_help = "\
tumbler campaigns with --value (default: HOSTNAME:PID), which `tumbler leader NAME` and the store's
own tools (etcdctl elect -l, Curator's LeaderLatch, Consul's leader-election guide) show while it
leads. Candidates are elected in the order they campaigned where the store keeps one.

Once elected, tumbler runs the command with TUMBLER_TERM (the leadership's term, a fencing token
that strictly increases from one leader to the next), TUMBLER_FENCING_TOKEN (the same number, as
under tumbler run) and TUMBLER_LOCK_NAME (the election's name) in its environment; pass the term
to whatever the leader writes to so it can reject a deposed leader. When the command exits,
tumbler resigns and the next candidate is elected.

The command is supervised as under `tumbler run`: if the leadership is lost (session expired,
renewal failed, store gone for too long), tumbler sends the command SIGTERM, then SIGKILL after
--grace, and exits with 76; `tumbler revoke NAME` does the same with 78, having resigned.
SIGTERM, SIGINT and SIGHUP sent to tumbler while the command runs are forwarded to it. Sent while
tumbler campaigns, they withdraw the candidacy (nothing stays behind on the store) and tumbler
exits with 128+N. If tumbler is killed (SIGKILL), the kernel kills the command too, and the store
elects the next candidate once the dead leader's session or TTL runs out.

Exit codes (those of tumbler run):
  the command's own code   the command ran to completion (128+N if it died of signal N)
  75                       not elected within --timeout (also while the store grants nothing
                           after a restart)
  76                       the leadership was lost while the command ran; the command was stopped
  77                       tumbler failed: bad arguments (an empty or too long --value, a usage
                           error), unreachable store, a store without elections
  78                       revoked (tumbler revoke); the command was stopped and tumbler resigned
  126                      the command exists but cannot be executed (e.g. not executable)
  127                      the command was not found
  128+N                    tumbler got signal N (SIGHUP: 129, SIGINT: 130, SIGTERM: 143) while
                           campaigning")]
    Elect {
        /// What this candidate advertises while it leads (default: HOSTNAME:PID).
        #[arg(long)]
        value: Option<String>,
        /// Give up after campaigning this long (e.g. 500ms, 10s, 2m) and exit 75; 0s makes one
        /// attempt.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// How long the command may take to exit after SIGTERM when the leadership is lost or
        /// revoked, before it gets SIGKILL.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        grace: Duration,
        /// The election's name, e.g. services/indexer.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show who leads an election (value, term, id), or follow it with --watch.
    #[command(after_help = "\
Prints `NAME: VALUE (term T, id ID)` or `NAME: nobody leads`; with --json one object
{\"name\": ..., \"leader\": {\"value\": ..., \"term\": ..., \"id\": ...}} (leader: null when nobody
leads). Values are shown as UTF-8 (other bytes as U+FFFD). The id is the store's identity of
the leader (lease, session, node or key).

With --watch: the current leader first, then one line (with --json one object per line) per
change (another leader, a value the leader proclaimed, nobody), until interrupted (exit 130,
SIGTERM 143). Leaders that came and went between two reads may be skipped; terms never go back.
A lost connection is reported on stderr and following resumes when the store answers again,
printing the leader if it changed meanwhile; if the store does not answer again within its
request timeout (the request_timeout URL parameter), tumbler exits with 77, as status would.

Exit codes:
  0      printed (whether or not anyone leads)
  77     tumbler failed: bad arguments, unreachable store, a store without elections
  128+N  --watch ended by signal N (SIGINT: 130, SIGTERM: 143)")]
    Leader {
        /// The election's name.
        name: String,
        /// Follow the leadership: print a line per change until interrupted.
        #[arg(long)]
        watch: bool,
        /// Print JSON (one object per line with --watch) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show whether a lock is held, by whom, with which tokens, and how many wait.
    Status {
        /// The lock's name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the holders of a lock to release it (cooperative: their revoke_requested() fires).
    Revoke {
        /// The lock's name.
        name: String,
    },
    /// Measure throughput and latency of every store side by side (and peers where available).
    #[command(after_help = concat!(
        "\
Scenarios: single (one client acquire+release); contend-1, contend-8, contend-64 (N clients
on one name); names-1k, names-10k (one client holds N names); semaphore (8 clients, 3
permits); rwlock-read-heavy (8 clients, 9 reads : 1 write). Latencies come from HDR histograms; hand-off is the time from
one holder starting its release to the next holder's acquisition; req/op counts server-side
requests per acquisition (Redis INFO commandstats, ZooKeeper mntr, etcd /metrics, the Consul
test server's counter); delivered/op is what the server sends per acquisition: Redis kB
written (total_net_output_bytes) and pub/sub messages published (pub), etcd events sent to
watchers (ev), ZooKeeper watch notifications (ntf), blocking queries answered by a --local
Consul (ans). Peers measured on the same server as a comparison: rslock on redis:// URLs,
Curator's InterProcessMutex on zk:// (needs a JDK and libcurator-recipes-java), Go's
concurrency.Mutex on etcd:// (built on first use with golang-go and golang-etcd-server-dev);
scripts/setup installs them.

",
        servers_help!()
    ))]
    Bench {
        /// Store URLs to measure (repeatable; TUMBLER_URL/--url counts as one).
        #[arg(long = "target", value_name = "URL")]
        targets: Vec<String>,
        /// Start local servers and measure them: any of redis,zk,etcd,consul.
        #[arg(long, value_delimiter = ',', value_parser = ["redis", "zk", "etcd", "consul"])]
        local: Vec<String>,
        /// Scenarios to run (comma-separated); default: all but names-10k.
        #[arg(long, value_delimiter = ',', value_parser = bench::Scenario::parse)]
        scenario: Vec<bench::Scenario>,
        /// How long each timed scenario runs.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        duration: Duration,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Write throughput.svg and latency.svg into this folder.
        #[arg(long, value_name = "DIR")]
        svg: Option<std::path::PathBuf>,
        /// Do not measure peer libraries (rslock, Curator, Go's concurrency.Mutex).
        #[arg(long)]
        no_peers: bool,
    },
    /// Put every store through the same faults with the same workload and compare safety.
    #[command(after_help = concat!(
        "\
Each cell starts fresh local servers (through testkit), a victim process that holds the lock and
writes every 20 ms to two resources, and a rival process waiting for the lock; then injects the
fault. Faults: crash (SIGKILL the holder), paused (SIGSTOP it for 2x the TTL), partition
(black-hole its connection for 2x the TTL), restart (Redis restarted without persistence; for
Redlock one of three masters), leader-kill (3-node ZooKeeper ensemble, 3-member etcd cluster),
store-stalled (SIGSTOP every server for 2x the TTL), slow-network (the holder's link delays each
byte by 3/4 of the TTL each way, for 2x the TTL), waiter-crash (SIGKILL a waiting rival, then
the holder; a new rival's wait shows what the dead waiter cost), minority-partition (ZooKeeper
and etcd: the holder's server, a follower, cut off from the other two for 2x the TTL), clock-jump
(ZooKeeper and Redis: the server's clock jumps 10x the TTL ahead; ZooKeeper needs Debian's
faketime package, Redis a C compiler to build testkit's wall clock library).

Columns: unfenced overlaps = writes by the old holder after the rival held the lock; fenced
rejects = writes a fencing-aware resource refused (token lower than one it saw); stale accepted
must be 0; usable again after = fault to the rival's acquisition; lost() lead = how long before
the rival's acquisition the old holder's lost() fired (negative: after); with --trials N, times
are the median (min…max) over the trials, each drawing its fault time from --seed. The verdict
column compares each cell with its store's promises. Exits non-zero if a promise broke (the
fenced resource accepted a stale write, or a careful client wrote after the rival held).

",
        servers_help!()
    ))]
    Lab {
        /// Stores to test: redis, naive-redis, redlock, zookeeper (zk), etcd, consul.
        #[arg(long, value_delimiter = ',', value_parser = lab::parse_store)]
        store: Vec<lab::Store>,
        /// Faults to inject: crash, paused, partition, restart, leader-kill, store-stalled,
        /// slow-network, waiter-crash, minority-partition, clock-jump.
        #[arg(long, value_delimiter = ',', value_parser = lab::parse_fault)]
        fault: Vec<lab::Fault>,
        /// Folder for lab.md, lab.html and lab.json.
        #[arg(long, default_value = "lab-report")]
        out: std::path::PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Trials per cell, each with its fault time drawn from the seed.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        trials: u32,
        /// The seed the trials' timings are drawn from (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "\
Install, for example:
  bash: tumbler completions bash > ~/.local/share/bash-completion/completions/tumbler
  zsh:  tumbler completions zsh > ~/.zfunc/_tumbler   (with fpath+=~/.zfunc before compinit)
  fish: tumbler completions fish > ~/.config/fish/completions/tumbler.fish")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page tumbler(1), or write one page per subcommand with --out.
    #[command(after_help = "\
Install, for example:
  tumbler man --out ~/.local/share/man/man1     (then: man tumbler, man tumbler-run)")]
    Man {
        /// Write tumbler.1 and one tumbler-SUBCOMMAND.1 per subcommand into this folder instead.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// The lab's workload process (internal).
    #[command(hide = true)]
    LabWorker {
        #[arg(long, value_parser = parse_duration, default_value = "20ms")]
        every: Duration,
        #[arg(long)]
        ignore_lost: bool,
        url: String,
        name: String,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    tumbler_locks::params::parse_duration(text)
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => std::process::exit(usage_error(e)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TUMBLER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tumbler: cannot start the async runtime: {e}");
            std::process::exit(exit::ERROR);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // Do not wait for background tasks (renewals) of a finished command.
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

/// Prints clap's message and returns the exit code: 0 for `--help` and `--version`, the
/// documented [`exit::ERROR`] for every usage error (clap's own default would be 2).
fn usage_error(error: clap::Error) -> i32 {
    let _ = error.print();
    if error.use_stderr() {
        exit::ERROR
    } else {
        0
    }
}

async fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Completions { shell } => {
            return report("completions", manual::completions(shell, Cli::command()));
        }
        Command::Man { out } => return report("man", manual::man(Cli::command(), out.as_deref())),
        Command::LabWorker {
            every,
            ignore_lost,
            url,
            name,
        } => return lab::worker::run(&url, &name, every, ignore_lost).await,
        Command::Lab {
            store,
            fault,
            out,
            json,
            trials,
            seed,
        } => {
            let args = lab::LabArgs {
                stores: store,
                faults: fault,
                out,
                json,
                trials,
                seed,
            };
            return match lab::run(args).await {
                Ok(()) => 0,
                Err(message) => {
                    eprintln!("tumbler lab: {message}");
                    exit::ERROR
                }
            };
        }
        _ => {}
    }
    if let Command::Bench {
        targets,
        local,
        scenario,
        duration,
        json,
        svg,
        no_peers,
    } = cli.command
    {
        let urls: Vec<String> = cli.url.into_iter().chain(targets).collect();
        if let Err(message) = check_bench(&urls, &local, duration, svg.as_deref()) {
            eprintln!("tumbler bench: {message}");
            return exit::ERROR;
        }
        let args = bench::BenchArgs {
            urls,
            local,
            scenarios: if scenario.is_empty() {
                bench::default_scenarios()
            } else {
                scenario
            },
            duration,
            json,
            svg,
            peers: !no_peers,
        };
        return match bench::run(args).await {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("tumbler bench: {message}");
                exit::ERROR
            }
        };
    }
    let Some(url) = cli.url else {
        eprintln!(
            "tumbler: no store given; pass --url or set TUMBLER_URL, e.g. \
             TUMBLER_URL=redis://127.0.0.1:6379 (memory:// works only inside one process)\n\n{URL_HELP}"
        );
        return exit::ERROR;
    };
    let mut interrupts = match interrupt::Interrupts::listen() {
        Ok(interrupts) => interrupts,
        Err(message) => {
            eprintln!("tumbler: {message}");
            return exit::ERROR;
        }
    };
    let locks = tokio::select! {
        connected = tumbler_locks::connect(&url) => match connected {
            Ok(locks) => locks,
            Err(e) => {
                eprintln!("tumbler: {e}");
                return exit::ERROR;
            }
        },
        signal = interrupts.recv() => return exit::from_signal(signal),
    };
    let result = command(&locks, cli.command, &mut interrupts).await;
    shutdown(&locks).await;
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("tumbler: {message}");
            exit::ERROR
        }
    }
}

/// The exit code of a subcommand that needs no store: 0, or [`exit::ERROR`] with its message.
fn report(subcommand: &str, result: Result<(), String>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("tumbler {subcommand}: {message}");
            exit::ERROR
        }
    }
}

/// Refuses, before any server starts, a bench that could not measure anything or could not
/// write its charts.
fn check_bench(
    urls: &[String],
    local: &[String],
    duration: Duration,
    svg: Option<&std::path::Path>,
) -> Result<(), String> {
    if urls.is_empty() && local.is_empty() {
        return Err(
            "nothing to measure: give --target URL (repeatable; TUMBLER_URL counts as \
                    one) or --local redis,zk,etcd,consul"
                .into(),
        );
    }
    if duration.is_zero() {
        return Err(format!(
            "--duration {}: the timed scenarios would measure nothing; give e.g. --duration 5s",
            format_duration(duration)
        ));
    }
    match svg {
        Some(dir) => out_dir::writable("--svg", dir),
        None => Ok(()),
    }
}

/// Releases every hold and waiter the backend still has, waiting at most [`SHUTDOWN_LIMIT`].
async fn shutdown(locks: &tumbler_locks::SharedBackend) {
    match tokio::time::timeout(SHUTDOWN_LIMIT, locks.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("tumbler: closing the connection to the store failed: {e}"),
        Err(_) => eprintln!(
            "tumbler: the store did not confirm the cleanup within {}; \
             anything left expires with its session or TTL",
            format_duration(SHUTDOWN_LIMIT)
        ),
    }
}

/// Runs `run`, `elect`, `leader`, `status` or `revoke` on a connected backend. `run` and
/// `elect` handle SIGINT/SIGTERM themselves (they forward them to their command); the others
/// stop at once on either.
async fn command(
    locks: &tumbler_locks::SharedBackend,
    command: Command,
    interrupts: &mut interrupt::Interrupts,
) -> Result<i32, String> {
    let interrupted = |signal| Ok(exit::from_signal(signal));
    match command {
        Command::Run {
            timeout,
            no_wait,
            semaphore,
            grace,
            name,
            command,
        } => {
            run::run(
                locks.clone(),
                run::RunArgs {
                    name,
                    timeout,
                    no_wait,
                    semaphore,
                    grace,
                    command,
                },
                interrupts,
            )
            .await
        }
        Command::Elect {
            value,
            timeout,
            grace,
            name,
            command,
        } => {
            elect::elect(
                locks.clone(),
                elect::ElectArgs {
                    name,
                    value,
                    timeout,
                    grace,
                    command,
                },
                interrupts,
            )
            .await
        }
        Command::Leader { name, watch, json } => tokio::select! {
            done = async {
                if watch {
                    leader::watch(locks.clone(), &name, json).await
                } else {
                    leader::leader(locks.clone(), &name, json).await
                }
            } => done.map(|()| 0),
            signal = interrupts.recv() => interrupted(signal),
        },
        Command::Status { name, json } => tokio::select! {
            done = status::status(locks.clone(), &name, json) => done.map(|()| 0),
            signal = interrupts.recv() => interrupted(signal),
        },
        Command::Revoke { name } => tokio::select! {
            done = status::revoke(locks.clone(), &name) => done.map(|()| 0),
            signal = interrupts.recv() => interrupted(signal),
        },
        Command::Bench { .. }
        | Command::Lab { .. }
        | Command::LabWorker { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(0),
    }
}
