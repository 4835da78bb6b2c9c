//! `tumbler`: distributed locks from the shell.

mod bench;
mod exit;
mod lab;
mod markup;
mod run;
mod spinner;
mod status;

use std::time::Duration;

use clap::{Parser, Subcommand};

const URL_HELP: &str = "\
The store, by URL (or the TUMBLER_URL environment variable):
  redis://[user:password@]host:port[?ttl=30s&prefix=app:]     one Redis server
  rediss://...                                                 Redis over TLS
  redis+redlock://host1:port,host2:port,host3:port             Redlock over independent masters
  zk://[user:password@]host:port[,host:port...][/chroot]       ZooKeeper
  etcd://[user:password@]host:port[,host:port...]              etcd (etcds:// for TLS)
  consul://host:port[?token=...]                               Consul (consuls:// for HTTPS)
Each store needs its cargo feature (the tumbler CLI is built with all of them).
memory:// only works inside one process, so it is useless for the CLI.";

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
command SIGTERM, then SIGKILL after --grace, and exits with code 76. SIGTERM and SIGINT sent to
tumbler are forwarded to the command; the lock is released when the command ends.

Exit codes:
  the command's own code   the command ran to completion (128+N if it died of signal N)
  75                       the lock was not acquired (--no-wait found it held, or --timeout passed)
  76                       the lock was lost while the command ran; the command was stopped
  77                       tumbler failed: bad arguments, unreachable store, command not found

While waiting on a terminal, a spinner shows who holds the lock.")]
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
        /// How long the command may take to exit after SIGTERM when the lock is lost.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        grace: Duration,
        /// The lock's name, e.g. jobs/nightly.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
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
    #[command(after_help = "\
Scenarios: single (one client acquire+release); contend-1, contend-8, contend-64 (N clients
on one name); names-1k, names-10k (one client holds N names); semaphore (8 clients, 3
permits); rwlock-read-heavy (8 clients, 9 reads : 1 write). Latencies come from HDR histograms; hand-off is the time from
one holder starting its release to the next holder's acquisition; req/op counts server-side
requests per acquisition (Redis INFO commandstats, ZooKeeper mntr, etcd /metrics, the Consul
test server's counter). On redis:// URLs rslock is measured too, as a comparison.")]
    Bench {
        /// Store URLs to measure (repeatable; TUMBLER_URL/--url counts as one).
        #[arg(long = "target", value_name = "URL")]
        targets: Vec<String>,
        /// Start local servers and measure them: any of redis,zk,etcd,consul.
        #[arg(long, value_delimiter = ',')]
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
        /// Do not measure peer libraries (rslock).
        #[arg(long)]
        no_peers: bool,
    },
    /// Put every store through the same faults with the same workload and compare safety.
    #[command(after_help = "\
Each cell starts fresh local servers (through testkit), a victim process that holds the lock and
writes every 20 ms to two resources, and a rival process waiting for the lock; then injects the
fault. Faults: crash (SIGKILL the holder), paused (SIGSTOP it for 2x the TTL), partition
(black-hole its connection for 2x the TTL), restart (Redis restarted without persistence; for
Redlock one of three masters), leader-kill (3-node ZooKeeper ensemble, 3-member etcd cluster).

Columns: unfenced overlaps = writes by the old holder after the rival held the lock; fenced
rejects = writes a fencing-aware resource refused (token lower than one it saw); stale accepted
must be 0; usable again after = fault to the rival's acquisition; lost() lead = how long before
the rival's acquisition the old holder's lost() fired (negative: after). Exits non-zero if the
fenced resource ever accepted a stale write.")]
    Lab {
        /// Stores to test: redis, naive-redis, redlock, zookeeper (zk), etcd, consul.
        #[arg(long, value_delimiter = ',', value_parser = lab::parse_store)]
        store: Vec<lab::Store>,
        /// Faults to inject: crash, paused, partition, restart, leader-kill.
        #[arg(long, value_delimiter = ',', value_parser = lab::parse_fault)]
        fault: Vec<lab::Fault>,
        /// Folder for lab.md, lab.html and lab.json.
        #[arg(long, default_value = "lab-report")]
        out: std::path::PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
    tumbler::params::parse_duration(text)
}

fn main() {
    let cli = Cli::parse();
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

async fn dispatch(cli: Cli) -> i32 {
    match cli.command {
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
        } => {
            let args = lab::LabArgs {
                stores: if store.is_empty() {
                    lab::Store::ALL.to_vec()
                } else {
                    store
                },
                faults: if fault.is_empty() {
                    lab::Fault::ALL.to_vec()
                } else {
                    fault
                },
                out,
                json,
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
        let args = bench::BenchArgs {
            urls: cli.url.into_iter().chain(targets).collect(),
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
    let locks = match tumbler::connect(&url).await {
        Ok(locks) => locks,
        Err(e) => {
            eprintln!("tumbler: {e}");
            return exit::ERROR;
        }
    };
    let result = match cli.command {
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
            )
            .await
        }
        Command::Status { name, json } => {
            status::status(locks.clone(), &name, json).await.map(|()| 0)
        }
        Command::Revoke { name } => status::revoke(locks.clone(), &name).await.map(|()| 0),
        Command::Bench { .. } | Command::Lab { .. } | Command::LabWorker { .. } => Ok(0),
    };
    let _ = locks.shutdown().await;
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("tumbler: {message}");
            exit::ERROR
        }
    }
}
