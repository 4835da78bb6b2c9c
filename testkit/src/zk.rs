//! Real ZooKeeper servers (Debian's ZooKeeper 3.8 jars on `java`): standalone and ensembles.
//!
//! Servers run `org.apache.zookeeper.server.quorum.QuorumPeerMain` with all four-letter words
//! enabled, the admin server off, extended types (TTL nodes) on, a short tick and a log4j
//! configuration that writes to `server.log` in the node's folder.
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use testkit::zk::{ZkEnsemble, ZooKeeper};
//! let zk = ZooKeeper::start().await?;
//! println!("{}", zk.connect_string()); // 127.0.0.1:<port>
//! let ens = ZkEnsemble::start(3).await?;
//! let old = ens.kill_leader().await?;   // waits for the ensemble to elect a new leader
//! ens.leader().await?;
//! ens.restart(old).await?;              // rejoins with its data
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::join::join_all;
use crate::process::{ServerProcess, Spec};
use crate::ready::{retry_on_port_clash, start_timeout, wait_ready};
use crate::workdir::WorkDir;

/// How long a ZooKeeper start (JVM start + election) may take.
const START_TIMEOUT: Duration = Duration::from_secs(40);
/// How long [`ZkEnsemble::leader`] looks for a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a four-letter-word request may take.
const FOUR_LETTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Tunables of a ZooKeeper server or ensemble.
#[derive(Debug, Clone)]
pub struct ZkOptions {
    /// `tickTime` in milliseconds (default 200). Session expiry is checked once per tick, and
    /// followers notice a dead leader after `syncLimit` (5) ticks.
    pub tick_time_ms: u32,
    /// `minSessionTimeout` in milliseconds (default 1000): shorter client requests are raised.
    pub min_session_timeout_ms: u32,
    /// `maxSessionTimeout` in milliseconds (default 60000): longer client requests are lowered.
    pub max_session_timeout_ms: u32,
    /// JVM heap limit in MiB (default 256).
    pub heap_mb: u32,
    /// Runs the server on this movable clock (default: the real one).
    pub clock: Option<std::sync::Arc<crate::clock::FakeClock>>,
}

impl Default for ZkOptions {
    fn default() -> Self {
        ZkOptions {
            tick_time_ms: 200,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 60_000,
            heap_mb: 256,
            clock: None,
        }
    }
}

/// One quorum member's ports: `(myid, quorum port, election port)`.
type Peer = (usize, u16, u16);

/// One running ZooKeeper server: standalone, or a member of a [`ZkEnsemble`].
///
/// Dropping it kills the JVM (SIGKILL) and waits for it to exit. Methods take `&self`.
#[derive(Debug)]
pub struct ZooKeeper {
    client_port: u16,
    data_dir: PathBuf,
    proc: ServerProcess,
    // Standalone servers own their folder; ensemble members share the ensemble's.
    _dir: Option<WorkDir>,
}

impl ZooKeeper {
    /// Starts a standalone server with default [`ZkOptions`] and waits until `srvr` shows a
    /// `Mode:` line.
    pub async fn start() -> Result<ZooKeeper> {
        ZooKeeper::start_with(ZkOptions::default()).await
    }

    /// Starts a standalone server with `opts`.
    pub async fn start_with(opts: ZkOptions) -> Result<ZooKeeper> {
        retry_on_port_clash(|| async {
            let dir = WorkDir::new("zk")?;
            let port = crate::ports::try_free_port()?;
            let zk = ZooKeeper::spawn_node(dir.path(), port, &opts, None, None)?;
            let zk = ZooKeeper {
                _dir: Some(dir),
                ..zk
            };
            zk.wait_serving().await?;
            Ok(zk)
        })
        .await
    }

    /// Writes the node's configuration into `dir` and starts its JVM (without waiting).
    fn spawn_node(
        dir: &Path,
        client_port: u16,
        opts: &ZkOptions,
        quorum: Option<(usize, &[Peer])>,
        tls: Option<&SecurePort>,
    ) -> Result<ZooKeeper> {
        let java = crate::bins::java()?;
        let mut classpath = crate::bins::zookeeper_classpath()?;
        if tls.is_some() {
            // The Netty connection factory needs Netty's codec and handler (SSL) jars, which
            // the zookeeper jar's manifest does not list.
            for jar in NETTY_JARS {
                classpath.push(':');
                classpath.push_str(jar);
            }
        }
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
        let mut cfg = format!(
            "tickTime={tick}\n\
             dataDir={data}\n\
             clientPort={client_port}\n\
             clientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=*\n\
             extendedTypesEnabled=true\n\
             minSessionTimeout={min}\n\
             maxSessionTimeout={max}\n\
             forceSync=no\n\
             maxClientCnxns=0\n",
            tick = opts.tick_time_ms,
            data = data_dir.display(),
            min = opts.min_session_timeout_ms,
            max = opts.max_session_timeout_ms,
        );
        if let Some((myid, peers)) = quorum {
            cfg.push_str("initLimit=25\nsyncLimit=5\n");
            for (id, qp, ep) in peers {
                let _ = writeln!(cfg, "server.{id}=127.0.0.1:{qp}:{ep}");
            }
            write_file(&data_dir.join("myid"), &format!("{myid}\n"))?;
        }
        let mut tls_args = Vec::new();
        if let Some(tls) = tls {
            let _ = writeln!(
                cfg,
                "secureClientPort={}\nsecureClientPortAddress=127.0.0.1",
                tls.port
            );
            tls_args = tls.jvm_args();
        }
        let cfg_path = dir.join("zoo.cfg");
        write_file(&cfg_path, &cfg)?;
        let log4j = dir.join("log4j.properties");
        write_file(
            &log4j,
            "log4j.rootLogger=INFO, CONSOLE\n\
             log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] %-5p [%t:%C{1}@%L] %m%n\n",
        )?;
        let mut args: Vec<String> = vec![
            format!("-Xmx{}m", opts.heap_mb),
            "-XX:+UseSerialGC".into(),
            "-XX:TieredStopAtLevel=1".into(),
            "-XX:-UsePerfData".into(),
            "-XX:+ExitOnOutOfMemoryError".into(),
            format!("-Djava.io.tmpdir={}", dir.display()),
            format!("-Dlog4j.configuration=file:{}", log4j.display()),
            "-Dzookeeper.admin.enableServer=false".into(),
            "-Dzookeeper.jmx.log4j.disable=true".into(),
            "-Dzookeeper.cnxTimeout=1000".into(),
            "-Dzookeeper.4lw.commands.whitelist=*".into(),
        ];
        args.extend(tls_args);
        args.extend([
            "-cp".into(),
            classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain".into(),
            cfg_path.display().to_string(),
        ]);
        let label = match quorum {
            Some((id, _)) => format!("zookeeper ensemble member {id}"),
            None => "zookeeper".to_string(),
        };
        let spec = Spec {
            name: format!(
                "{label} on 127.0.0.1:{client_port} (folder {})",
                dir.display()
            ),
            program: java,
            args: args.into_iter().map(Into::into).collect(),
            cwd: dir.to_path_buf(),
            log: dir.join("server.log"),
            env: opts.clock.as_ref().map(|c| c.env()).unwrap_or_default(),
        };
        Ok(ZooKeeper {
            client_port,
            data_dir,
            proc: ServerProcess::spawn(spec)?,
            _dir: None,
        })
    }

    /// Waits until `srvr` shows a `Mode:` line (the server is serving requests).
    async fn wait_serving(&self) -> Result<()> {
        wait_ready(&self.proc, start_timeout(START_TIMEOUT), || async {
            match self.srvr().await {
                Ok(s) if s.contains("Mode: ") => Ok(()),
                Ok(s) => Err(format!("srvr said: {}", s.trim())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// `127.0.0.1:<client port>`, the connect string for this one server.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The server's data folder (kept across [`ZooKeeper::restart`]).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The JVM's process id, `None` after [`ZooKeeper::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Sends a four-letter word (`srvr`, `stat`, `mntr`, `cons`, ...) and returns the answer.
    pub async fn four_letter(&self, word: &str) -> Result<String> {
        four_letter(self.addr(), word).await
    }

    /// The answer to `srvr` (contains `Mode: standalone|leader|follower` when serving).
    pub async fn srvr(&self) -> Result<String> {
        self.four_letter("srvr").await
    }

    /// The `Mode:` value from `srvr` (`standalone`, `leader`, `follower`, `observer`), or an
    /// error if the server is not serving.
    pub async fn mode(&self) -> Result<String> {
        let s = self.srvr().await?;
        s.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
            .ok_or_else(|| Error::protocol(format!("srvr to {}", self.proc.name()), s.trim()))
    }

    /// Kills the JVM (SIGKILL) and waits for it to exit. Does nothing if it is not running.
    pub async fn kill(&self) {
        self.proc.kill_async().await;
    }

    /// Stops the JVM with SIGSTOP: connections stay open, nothing is answered, no heartbeats.
    pub fn pause(&self) -> Result<()> {
        self.proc.pause()
    }

    /// Continues a paused JVM (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.proc.resume()
    }

    /// Kills the server if it runs and starts it again with the same port and data folder;
    /// waits until it serves again (for an ensemble member: until it has rejoined).
    pub async fn restart(&self) -> Result<()> {
        self.proc.kill_async().await;
        self.proc.start()?;
        self.wait_serving().await
    }
}

/// A ZooKeeper ensemble of independent JVMs on loopback, in one temporary folder.
///
/// Dropping it kills every member. Methods take `&self`.
#[derive(Debug)]
pub struct ZkEnsemble {
    nodes: Vec<ZooKeeper>,
    /// With [`ZkEnsemble::start_partitionable`]: for each ordered pair `(from, to)` of members,
    /// the proxies (quorum port, election port) through which `from` reaches `to`.
    links: Vec<PeerLink>,
    _dir: WorkDir,
}

/// The proxies through which one member reaches another.
#[derive(Debug)]
struct PeerLink {
    from: usize,
    to: usize,
    proxies: [crate::proxy::FaultProxy; 2],
}

impl ZkEnsemble {
    /// Starts an ensemble of `n` members (n >= 2; 3 is usual) with default [`ZkOptions`] and
    /// waits until every member serves and one is the leader.
    pub async fn start(n: usize) -> Result<ZkEnsemble> {
        ZkEnsemble::start_with(n, ZkOptions::default()).await
    }

    /// Starts an ensemble of `n` members with `opts`.
    pub async fn start_with(n: usize, opts: ZkOptions) -> Result<ZkEnsemble> {
        if n < 2 {
            return Err(Error::InvalidArgument(format!(
                "a ZooKeeper ensemble needs at least 2 members, got {n}; use ZooKeeper::start for one"
            )));
        }
        retry_on_port_clash(|| ZkEnsemble::start_once(n, &opts)).await
    }

    /// Like [`ZkEnsemble::start`], but every member reaches every other through fault proxies
    /// of its own (one per ordered pair and port), so that [`ZkEnsemble::isolate`] can cut a
    /// member off from the quorum while its clients stay connected to it.
    pub async fn start_partitionable(n: usize) -> Result<ZkEnsemble> {
        crate::proxy::check_partitionable("ZooKeeper ensemble", n)?;
        let opts = ZkOptions::default();
        retry_on_port_clash(|| ZkEnsemble::start_links(n, &opts)).await
    }

    async fn start_once(n: usize, opts: &ZkOptions) -> Result<ZkEnsemble> {
        let dir = WorkDir::new("zk-ensemble")?;
        let ports = crate::ports::free_ports(3 * n)?;
        let peers: Vec<Peer> = (0..n)
            .map(|i| (i + 1, ports[3 * i + 1], ports[3 * i + 2]))
            .collect();
        let views = vec![peers; n];
        ZkEnsemble::spawn(dir, &ports, &views, opts, Vec::new()).await
    }

    async fn start_links(n: usize, opts: &ZkOptions) -> Result<ZkEnsemble> {
        let dir = WorkDir::new("zk-ensemble")?;
        let ports = crate::ports::free_ports(3 * n)?;
        let real: Vec<Peer> = (0..n)
            .map(|i| (i + 1, ports[3 * i + 1], ports[3 * i + 2]))
            .collect();
        let mut links = Vec::new();
        let mut views = Vec::with_capacity(n);
        for from in 0..n {
            let mut view = real.clone();
            for (to, entry) in view.iter_mut().enumerate() {
                if to == from {
                    continue;
                }
                let quorum = crate::proxy::FaultProxy::start(local(real[to].1)).await?;
                let election = crate::proxy::FaultProxy::start(local(real[to].2)).await?;
                *entry = (to + 1, quorum.addr().port(), election.addr().port());
                links.push(PeerLink {
                    from,
                    to,
                    proxies: [quorum, election],
                });
            }
            views.push(view);
        }
        ZkEnsemble::spawn(dir, &ports, &views, opts, links).await
    }

    /// Starts member `i` with `views[i]` as its list of servers, and waits for a leader.
    async fn spawn(
        dir: WorkDir,
        ports: &[u16],
        views: &[Vec<Peer>],
        opts: &ZkOptions,
        links: Vec<PeerLink>,
    ) -> Result<ZkEnsemble> {
        let mut nodes = Vec::with_capacity(views.len());
        for (i, view) in views.iter().enumerate() {
            let node_dir = dir.sub(&format!("node{}", i + 1))?;
            nodes.push(ZooKeeper::spawn_node(
                &node_dir,
                ports[3 * i],
                opts,
                Some((i + 1, view)),
                None,
            )?);
        }
        let ens = ZkEnsemble {
            nodes,
            links,
            _dir: dir,
        };
        for r in join_all(ens.nodes.iter().map(|z| z.wait_serving())).await {
            r?;
        }
        ens.leader().await?;
        Ok(ens)
    }

    /// `127.0.0.1:a,127.0.0.1:b,...` listing every member.
    pub fn connect_string(&self) -> String {
        self.nodes
            .iter()
            .map(ZooKeeper::connect_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i` (0-based; its ZooKeeper `myid` is `i + 1`). Panics if `i >= len()`.
    pub fn node(&self, i: usize) -> &ZooKeeper {
        &self.nodes[i]
    }

    /// All members.
    pub fn nodes(&self) -> &[ZooKeeper] {
        &self.nodes
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false (an ensemble has at least 2 members).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Index of the member whose `srvr` says `Mode: leader`; waits (up to 30 s) while the
    /// ensemble has no leader, e.g. during an election.
    pub async fn leader(&self) -> Result<usize> {
        let start = Instant::now();
        loop {
            let mut said = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                if node.pid().is_none() {
                    said.push(format!("{i}: killed"));
                    continue;
                }
                match node.mode().await {
                    Ok(m) if m == "leader" => return Ok(i),
                    Ok(m) => said.push(format!("{i}: {m}")),
                    Err(e) => said.push(format!("{i}: {e}")),
                }
            }
            if start.elapsed() > LEADER_TIMEOUT {
                return Err(Error::NoLeader {
                    what: format!("zookeeper ensemble {}", self.connect_string()),
                    after: start.elapsed(),
                    detail: said.join("; "),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Finds the leader, kills it (SIGKILL) and returns its index.
    pub async fn kill_leader(&self) -> Result<usize> {
        let i = self.leader().await?;
        self.nodes[i].kill().await;
        Ok(i)
    }

    /// Restarts member `i` with its data and waits until it serves again.
    pub async fn restart(&self, i: usize) -> Result<()> {
        self.member(i)?.restart().await
    }

    /// Cuts member `i` off from every other member (its peer links black-holed both ways)
    /// while its clients stay connected to it. Needs [`ZkEnsemble::start_partitionable`].
    pub fn isolate(&self, i: usize) -> Result<()> {
        self.set_links(i, crate::proxy::ProxyMode::Blackhole)
    }

    /// Ends [`ZkEnsemble::isolate`] for member `i`.
    pub fn rejoin(&self, i: usize) -> Result<()> {
        self.set_links(i, crate::proxy::ProxyMode::Pass)
    }

    fn set_links(&self, i: usize, mode: crate::proxy::ProxyMode) -> Result<()> {
        self.member(i)?;
        if self.links.is_empty() {
            return Err(Error::InvalidArgument(
                "this ensemble has no peer links to cut; start it with \
                 ZkEnsemble::start_partitionable"
                    .into(),
            ));
        }
        for link in self.links.iter().filter(|l| l.from == i || l.to == i) {
            for proxy in &link.proxies {
                proxy.set_mode(mode);
            }
        }
        Ok(())
    }

    fn member(&self, i: usize) -> Result<&ZooKeeper> {
        self.nodes.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "ensemble member {i} does not exist (it has {})",
                self.nodes.len()
            ))
        })
    }
}

/// `127.0.0.1:port`.
fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))
}

/// The Netty jars ZooKeeper's Netty connection factory needs besides the manifest's.
const NETTY_JARS: [&str; 2] = [
    "/usr/share/java/netty-codec.jar",
    "/usr/share/java/netty-handler.jar",
];

/// The password of the throwaway keystores.
const STORE_PASSWORD: &str = "testkit";

/// A secure client port and the stores that serve it.
#[derive(Debug)]
struct SecurePort {
    port: u16,
    keystore: PathBuf,
    truststore: PathBuf,
}

impl SecurePort {
    /// The JVM properties that make ZooKeeper serve TLS on its secure client port (Netty is
    /// required for it) and ask clients for a certificate signed by the CA.
    fn jvm_args(&self) -> Vec<String> {
        vec![
            "-Dzookeeper.serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory"
                .into(),
            format!(
                "-Dzookeeper.ssl.keyStore.location={}",
                self.keystore.display()
            ),
            format!("-Dzookeeper.ssl.keyStore.password={STORE_PASSWORD}"),
            "-Dzookeeper.ssl.keyStore.type=PKCS12".into(),
            format!(
                "-Dzookeeper.ssl.trustStore.location={}",
                self.truststore.display()
            ),
            format!("-Dzookeeper.ssl.trustStore.password={STORE_PASSWORD}"),
            "-Dzookeeper.ssl.trustStore.type=PKCS12".into(),
            "-Dzookeeper.ssl.clientAuth=need".into(),
        ]
    }
}

/// A standalone ZooKeeper that also serves clients over TLS on its secure client port
/// (Netty), with a throwaway CA made by `keytool`: the server's keystore and truststore, and a
/// client certificate and key in PEM files. Clients must present a certificate signed by the
/// CA. The plain client port stays open (four-letter words, inspection).
///
/// ```no_run
/// # async fn demo() -> testkit::Result<()> {
/// let zk = testkit::zk::ZkTls::start().await?;
/// println!("tls on 127.0.0.1:{} trusting {}", zk.secure_port(), zk.ca_file().display());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ZkTls {
    server: ZooKeeper,
    secure_port: u16,
    certs: PathBuf,
}

impl ZkTls {
    /// Makes the CA, stores and certificates (server: `127.0.0.1` and `localhost`; client: CN
    /// `client`) and starts the server; returns once it serves on both ports.
    pub async fn start() -> Result<ZkTls> {
        retry_on_port_clash(|| async {
            let dir = WorkDir::new("zk-tls")?;
            let certs = dir.sub("certs")?;
            make_stores(&certs)?;
            let ports = crate::ports::free_ports(2)?;
            let secure = SecurePort {
                port: ports[1],
                keystore: certs.join("keystore.p12"),
                truststore: certs.join("truststore.p12"),
            };
            let zk = ZooKeeper::spawn_node(
                dir.path(),
                ports[0],
                &ZkOptions::default(),
                None,
                Some(&secure),
            )?;
            let zk = ZooKeeper {
                _dir: Some(dir),
                ..zk
            };
            zk.wait_serving().await?;
            let secure_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, secure.port));
            wait_ready(&zk.proc, start_timeout(START_TIMEOUT), || async move {
                TcpStream::connect(secure_addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("secure client port {secure_addr}: {e}"))
            })
            .await?;
            Ok(ZkTls {
                server: zk,
                secure_port: secure.port,
                certs,
            })
        })
        .await
    }

    /// The server (plain client port, process control, logs).
    pub fn server(&self) -> &ZooKeeper {
        &self.server
    }

    /// The TLS client port.
    pub fn secure_port(&self) -> u16 {
        self.secure_port
    }

    /// `127.0.0.1:<secure port>`.
    pub fn secure_connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.secure_port)
    }

    /// The CA certificate (PEM) that signed the server's and the client's certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// The client certificate (PEM), CN `client`.
    pub fn client_cert_file(&self) -> PathBuf {
        self.certs.join("client.pem")
    }

    /// The client's private key (PEM, PKCS #8).
    pub fn client_key_file(&self) -> PathBuf {
        self.certs.join("client.key")
    }
}

/// Writes into `dir`: the CA (`ca.p12`, `ca.pem`), the server's `keystore.p12` (key and
/// certificate chain) and `truststore.p12` (the CA), and the client's `client.pem` and
/// `client.key`. `keytool` makes and signs everything; `openssl` only makes the client's key
/// and signing request, since `keytool` cannot write a private key out as PEM.
fn make_stores(dir: &Path) -> Result<()> {
    let store = ["-storetype", "PKCS12", "-storepass", STORE_PASSWORD];
    let ec = ["-keyalg", "EC", "-groupname", "secp256r1", "-validity", "2"];
    let keytool = |args: &[&str]| run_tool(dir, "keytool", &[args, &store[..]].concat());
    keytool(
        &[
            &["-genkeypair", "-alias", "ca", "-keystore", "ca.p12"][..],
            &ec,
            &["-dname", "CN=testkit-zk-ca", "-ext", "bc:c"],
        ]
        .concat(),
    )?;
    keytool(&[
        "-exportcert",
        "-alias",
        "ca",
        "-keystore",
        "ca.p12",
        "-rfc",
        "-file",
        "ca.pem",
    ])?;
    // The server's key in its keystore, certified by the CA.
    keytool(
        &[
            &[
                "-genkeypair",
                "-alias",
                "server",
                "-keystore",
                "keystore.p12",
            ][..],
            &ec,
            &["-dname", "CN=127.0.0.1"],
        ]
        .concat(),
    )?;
    keytool(&[
        "-certreq",
        "-alias",
        "server",
        "-keystore",
        "keystore.p12",
        "-file",
        "server.csr",
    ])?;
    keytool(&[
        "-gencert",
        "-alias",
        "ca",
        "-keystore",
        "ca.p12",
        "-infile",
        "server.csr",
        "-outfile",
        "server.pem",
        "-rfc",
        "-validity",
        "2",
        "-ext",
        "san=ip:127.0.0.1,dns:localhost",
        "-ext",
        "eku=serverAuth,clientAuth",
    ])?;
    keytool(&[
        "-importcert",
        "-alias",
        "ca",
        "-file",
        "ca.pem",
        "-keystore",
        "keystore.p12",
        "-noprompt",
    ])?;
    keytool(&[
        "-importcert",
        "-alias",
        "server",
        "-file",
        "server.pem",
        "-keystore",
        "keystore.p12",
    ])?;
    keytool(&[
        "-importcert",
        "-alias",
        "ca",
        "-file",
        "ca.pem",
        "-keystore",
        "truststore.p12",
        "-noprompt",
    ])?;
    // The client's key as PEM, certified by the CA.
    run_tool(
        dir,
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=client",
        ],
    )?;
    keytool(&[
        "-gencert",
        "-alias",
        "ca",
        "-keystore",
        "ca.p12",
        "-infile",
        "client.csr",
        "-outfile",
        "client.pem",
        "-rfc",
        "-validity",
        "2",
        "-ext",
        "eku=clientAuth",
    ])
}

/// Runs `program` (`keytool` from the JDK, or `openssl`) in `dir`.
fn run_tool(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            Error::io(
                format!("running {program} (JDK keytool / Debian openssl)"),
                e,
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::protocol(
            format!("{program} {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Sends a ZooKeeper four-letter word to `addr` and returns the whole answer.
pub async fn four_letter(addr: SocketAddr, word: &str) -> Result<String> {
    let what = || format!("four-letter word `{word}` to zookeeper at {addr}");
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(word.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    match tokio::time::timeout(FOUR_LETTER_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| Error::io(what(), e)),
        Err(_) => Err(Error::protocol(
            what(),
            format!("no answer within {FOUR_LETTER_TIMEOUT:?}"),
        )),
    }
}
