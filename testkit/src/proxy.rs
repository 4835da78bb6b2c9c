//! A TCP fault proxy to put between one client and one server.
//!
//! The client connects to [`FaultProxy::addr`]; the proxy connects to the upstream server and
//! copies bytes both ways. At run time a test can switch the [`ProxyMode`], or reset every open
//! connection with [`FaultProxy::cut_all`]. The proxy runs on the kit's background runtime, so
//! its controls are plain synchronous calls that have taken effect when they return.
//!
//! ```no_run
//! # async fn demo(redis: &testkit::redis::Redis) -> testkit::Result<()> {
//! use std::time::Duration;
//! use testkit::proxy::{FaultProxy, ProxyMode};
//! let proxy = FaultProxy::start(redis.addr()).await?;
//! // point the client at proxy.addr() ...
//! proxy.set_mode(ProxyMode::Latency(Duration::from_millis(100)));
//! proxy.set_mode(ProxyMode::Blackhole); // requests hang
//! proxy.set_mode(ProxyMode::Pass);      // held bytes flow again
//! proxy.cut_all();                      // the client sees a connection reset
//! proxy.set_mode(ProxyMode::Refuse);    // new connections are refused
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};

/// How long a control call waits for the proxy to apply it.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest chunk copied at once.
const CHUNK: usize = 16 * 1024;

/// What the proxy does with traffic. Switch with [`FaultProxy::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Copy bytes both ways as they come.
    #[default]
    Pass,
    /// Delay every chunk by this long in each direction (a round trip gets twice the delay).
    /// Order is kept; throughput is not limited.
    Latency(Duration),
    /// Accept new connections but forward nothing in either direction, on new and existing
    /// connections alike: like a network partition. Bytes are held, not dropped, so switching
    /// back to [`ProxyMode::Pass`] delivers them, as TCP would after a partition heals.
    Blackhole,
    /// Close the listening socket so new connections are refused (`ECONNREFUSED`); open
    /// connections keep passing traffic. Switching to another mode listens again on the same
    /// port.
    Refuse,
}

/// Counters of a proxy (cheap atomics, updated as traffic flows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections open right now.
    pub open: u64,
    /// Bytes forwarded from clients to the upstream server.
    pub bytes_to_upstream: u64,
    /// Bytes forwarded from the upstream server to clients.
    pub bytes_to_client: u64,
}

/// Connection-kill signal: bumping `gen` ends every connection accepted before the bump.
#[derive(Debug, Clone, Copy, Default)]
struct Kill {
    gen: u64,
    /// Close normally (FIN) instead of resetting (RST): used when the proxy is dropped.
    graceful: bool,
}

enum Ctl {
    Close(std_mpsc::Sender<()>),
    Open(std_mpsc::Sender<()>),
    Shutdown(std_mpsc::Sender<()>),
}

struct Shared {
    upstream: SocketAddr,
    port: u16,
    mode: watch::Sender<ProxyMode>,
    /// For a sender-aware proxy: the HTTP request header that names a connection's sender, and
    /// each sender's own mode (see [`FaultProxy::start_sender_aware`]).
    sender_header: Option<&'static str>,
    senders: Mutex<std::collections::HashMap<String, watch::Sender<ProxyMode>>>,
    kill: watch::Sender<Kill>,
    open: Mutex<HashSet<u64>>,
    closed: Condvar,
    next_id: AtomicU64,
    accepted: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Shared {
    fn open_set(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fault proxy on `127.0.0.1`. Dropping it stops listening and closes every
/// connection. Send + Sync; methods take `&self`.
pub struct FaultProxy {
    shared: Arc<Shared>,
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr())
            .field("upstream", &self.shared.upstream)
            .field("mode", &self.mode())
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy in [`ProxyMode::Pass`] that forwards to `upstream`. It listens on a free
    /// loopback port below the ephemeral range (so the port stays free while refusing).
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        FaultProxy::start_inner(upstream, None).await
    }

    /// Starts a proxy for HTTP/1 traffic from several senders that name themselves in the
    /// request header `header` (etcd's peers send `X-Server-From: <member id>`). Each
    /// connection is told apart by the first request's headers, and besides the proxy's mode
    /// follows its sender's mode ([`FaultProxy::set_sender_mode`]): the stricter of the two
    /// applies (a blackhole of either holds its bytes). A connection whose first request does not
    /// name a sender follows the proxy's mode alone.
    pub async fn start_sender_aware(
        upstream: SocketAddr,
        header: &'static str,
    ) -> Result<FaultProxy> {
        FaultProxy::start_inner(upstream, Some(header)).await
    }

    /// Sets the mode of the connections of `sender` (see [`FaultProxy::start_sender_aware`]):
    /// [`ProxyMode::Pass`] or [`ProxyMode::Blackhole`]; it applies to open connections as well
    /// as new ones.
    pub fn set_sender_mode(&self, sender: &str, mode: ProxyMode) {
        sender_mode(&self.shared, sender).send_replace(mode);
    }

    async fn start_inner(
        upstream: SocketAddr,
        sender_header: Option<&'static str>,
    ) -> Result<FaultProxy> {
        let rt = crate::runtime::runtime()?;
        let mut last_err = None;
        let mut bound = None;
        for _ in 0..5 {
            let port = crate::ports::try_free_port()?;
            match std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                Ok(l) => {
                    bound = Some((l, port));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some((std_listener, port)) = bound else {
            return Err(Error::io(
                "binding the fault proxy's port",
                last_err.unwrap_or_else(|| std::io::Error::other("no port")),
            ));
        };
        std_listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring the fault proxy's socket", e))?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener)
                .map_err(|e| Error::io("registering the fault proxy's socket", e))?
        };
        let (mode, _) = watch::channel(ProxyMode::Pass);
        let (kill, _) = watch::channel(Kill::default());
        let shared = Arc::new(Shared {
            upstream,
            port,
            mode,
            sender_header,
            senders: Mutex::new(std::collections::HashMap::new()),
            kill,
            open: Mutex::new(HashSet::new()),
            closed: Condvar::new(),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        });
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        rt.spawn(accept_loop(shared.clone(), Some(listener), ctl_rx));
        Ok(FaultProxy { shared, ctl })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.shared.port))
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.borrow()
    }

    /// Switches the mode. It applies to open connections as well as new ones; when this
    /// returns, no further byte is forwarded under the old mode's rules except a chunk already
    /// being written, and a switch to or from [`ProxyMode::Refuse`] has closed or reopened the
    /// listening socket. (A reopen that fails is logged and retried in the background.)
    pub fn set_mode(&self, mode: ProxyMode) {
        let old = self.shared.mode.send_replace(mode);
        let refuse_now = mode == ProxyMode::Refuse;
        if (old == ProxyMode::Refuse) != refuse_now {
            let (tx, rx) = std_mpsc::channel();
            let msg = if refuse_now {
                Ctl::Close(tx)
            } else {
                Ctl::Open(tx)
            };
            if self.ctl.send(msg).is_ok() {
                let _ = rx.recv_timeout(CONTROL_TIMEOUT);
            }
        }
    }

    /// Resets every open connection now: both the client's and the upstream side get an RST
    /// (`SO_LINGER` 0, then close), so clients see "connection reset by peer". Returns once those
    /// connections are closed, with how many there were. New connections are not affected.
    pub fn cut_all(&self) -> usize {
        self.end_all(false)
    }

    fn end_all(&self, graceful: bool) -> usize {
        let victims: Vec<u64> = self.shared.open_set().iter().copied().collect();
        self.shared.kill.send_modify(|k| {
            k.gen += 1;
            k.graceful = graceful;
        });
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        let mut open = self.shared.open_set();
        while victims.iter().any(|id| open.contains(id)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("testkit proxy: some connections did not close in time");
                break;
            }
            open = match self.shared.closed.wait_timeout(open, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        victims.len()
    }

    /// Number of connections accepted since start.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Number of connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.shared.open_set().len() as u64
    }

    /// All counters at once.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            accepted: self.connections(),
            open: self.open_connections(),
            bytes_to_upstream: self.shared.bytes_up.load(Ordering::SeqCst),
            bytes_to_client: self.shared.bytes_down.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let (tx, rx) = std_mpsc::channel();
        if self.ctl.send(Ctl::Shutdown(tx)).is_ok() {
            let _ = rx.recv_timeout(CONTROL_TIMEOUT);
        }
        self.end_all(true);
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    mut listener: Option<TcpListener>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
) {
    loop {
        tokio::select! {
            cmd = ctl.recv() => match cmd {
                None => return,
                Some(Ctl::Shutdown(ack)) => {
                    drop(listener.take());
                    let _ = ack.send(());
                    return;
                }
                Some(Ctl::Close(ack)) => {
                    if let Some(l) = listener.take() {
                        close_listener(&shared, l);
                    }
                    let _ = ack.send(());
                }
                Some(Ctl::Open(ack)) => {
                    if listener.is_none() {
                        listener = rebind(shared.port).await;
                    }
                    let _ = ack.send(());
                }
            },
            r = accept(&listener) => match r {
                Ok(client) => adopt(&shared, client),
                Err(e) => {
                    tracing::warn!("testkit proxy on port {}: accept failed: {e}", shared.port);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            // Reopen in the background if an earlier reopen failed.
            _ = tokio::time::sleep(Duration::from_millis(200)),
                if listener.is_none() && *shared.mode.borrow() != ProxyMode::Refuse => {
                listener = rebind(shared.port).await;
            }
        }
    }
}

/// Registers an accepted connection and starts forwarding it.
fn adopt(shared: &Arc<Shared>, client: TcpStream) {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let gen = shared.kill.borrow().gen;
    shared.open_set().insert(id);
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    let guard = OpenGuard {
        shared: shared.clone(),
        id,
    };
    tokio::spawn(serve(guard, client, gen));
}

/// Stops listening. Connections the kernel has already completed (waiting in the accept queue)
/// are adopted first: their clients saw `connect` succeed, so they count as open connections.
fn close_listener(shared: &Arc<Shared>, listener: TcpListener) {
    let Ok(std_listener) = listener.into_std() else {
        return;
    };
    while let Ok((s, _)) = std_listener.accept() {
        let adopted = s
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(s));
        match adopted {
            Ok(client) => adopt(shared, client),
            Err(e) => tracing::warn!("testkit proxy: dropping a queued connection: {e}"),
        }
    }
}

async fn accept(listener: &Option<TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Listens on `port` again, retrying for a second if it is briefly in use.
async fn rebind(port: u16) -> Option<TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(l) => return Some(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::error!(
        "testkit proxy: cannot listen on 127.0.0.1:{port} again: {:?}; retrying",
        last
    );
    None
}

/// Removes a connection from the open set when its task ends (even if aborted).
struct OpenGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.shared.open_set().remove(&self.id);
        self.shared.closed.notify_all();
    }
}

/// How a connection ended.
enum End {
    /// Both directions finished normally.
    Done,
    /// A side failed: reset the other too.
    Failed,
    /// Killed by `cut_all` (reset) or proxy drop (graceful).
    Killed { graceful: bool },
}

/// Resolves when the kill generation moves past `gen`, with whether to close gracefully.
async fn killed(mut rx: watch::Receiver<Kill>, gen: u64) -> bool {
    loop {
        let k = *rx.borrow_and_update();
        if k.gen != gen {
            return k.graceful;
        }
        if rx.changed().await.is_err() {
            return true;
        }
    }
}

/// Resolves once the mode is not [`ProxyMode::Blackhole`].
async fn not_blackholed(rx: &mut watch::Receiver<ProxyMode>) -> bool {
    loop {
        if *rx.borrow_and_update() != ProxyMode::Blackhole {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

/// Refuses a partitionable `what` of fewer than 3 members: cutting one off must leave a
/// majority.
pub(crate) fn check_partitionable(what: &str, n: usize) -> Result<()> {
    if n < 3 {
        return Err(Error::InvalidArgument(format!(
            "a partitionable {what} needs at least 3 members (a majority must remain), got {n}"
        )));
    }
    Ok(())
}

/// The mode channel of `sender`, made (in [`ProxyMode::Pass`]) on first use.
fn sender_mode(shared: &Shared, sender: &str) -> watch::Sender<ProxyMode> {
    let mut senders = shared.senders.lock().unwrap_or_else(|p| p.into_inner());
    senders
        .entry(sender.to_owned())
        .or_insert_with(|| watch::channel(ProxyMode::Pass).0)
        .clone()
}

/// The most bytes of a first request read to find its sender.
const HEADERS_MAX: usize = 16 * 1024;

/// Reads the start of a sender-aware connection up to the end of the first request's headers
/// (or [`HEADERS_MAX`], or EOF) and returns those bytes with the sender they name.
async fn read_sender(client: &mut TcpStream, header: &str) -> (Vec<u8>, Option<String>) {
    let mut head = Vec::new();
    let mut buf = vec![0u8; 4096];
    while head.len() < HEADERS_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let sender = text
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(header))
        .map(|(_, value)| value.trim().to_owned());
    (head, sender)
}

/// A mode channel that follows the stricter of the proxy's mode and the sender's: a blackhole
/// of either wins, else the proxy's mode. It lives as long as its receivers.
fn combined_mode(shared: &Shared, sender: &watch::Sender<ProxyMode>) -> watch::Receiver<ProxyMode> {
    let mut proxy = shared.mode.subscribe();
    let mut own = sender.subscribe();
    let strictest = |proxy: ProxyMode, own: ProxyMode| {
        if own == ProxyMode::Blackhole {
            ProxyMode::Blackhole
        } else {
            proxy
        }
    };
    let (tx, rx) = watch::channel(strictest(*proxy.borrow(), *own.borrow()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = proxy.changed() => if changed.is_err() { return },
                changed = own.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
            let mode = strictest(*proxy.borrow_and_update(), *own.borrow_and_update());
            tx.send_replace(mode);
        }
    });
    rx
}

async fn serve(guard: OpenGuard, mut client: TcpStream, gen: u64) {
    let shared = guard.shared.clone();
    let kill_rx = shared.kill.subscribe();
    let _ = client.set_nodelay(true);
    // A sender-aware proxy reads the first request's headers to learn whose connection this is.
    let (head, mut mode_rx) = match shared.sender_header {
        Some(header) => {
            let (head, sender) = tokio::select! {
                read = read_sender(&mut client, header) => read,
                graceful = killed(kill_rx.clone(), gen) => {
                    finish(&client, None, graceful);
                    return;
                }
            };
            let mode = match sender {
                Some(sender) => combined_mode(&shared, &sender_mode(&shared, &sender)),
                None => shared.mode.subscribe(),
            };
            (head, mode)
        }
        None => (Vec::new(), shared.mode.subscribe()),
    };

    // Connect upstream only once traffic may flow: a blackholed client gets no further.
    let connect = async {
        not_blackholed(&mut mode_rx).await;
        TcpStream::connect(shared.upstream).await
    };
    let upstream = tokio::select! {
        r = connect => r,
        graceful = killed(kill_rx.clone(), gen) => {
            finish(&client, None, graceful);
            return;
        }
    };
    let mut upstream = match upstream {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(
                "testkit proxy: upstream {} unreachable: {e}",
                shared.upstream
            );
            finish(&client, None, false);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if !head.is_empty() {
        shared
            .bytes_up
            .fetch_add(head.len() as u64, Ordering::SeqCst);
        if upstream.write_all(&head).await.is_err() {
            finish(&client, Some(&upstream), false);
            return;
        }
    }

    let end = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let up = pump(cr, uw, mode_rx.clone(), &shared.bytes_up);
        let down = pump(ur, cw, mode_rx.clone(), &shared.bytes_down);
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => match r {
                Ok(_) => End::Done,
                Err(_) => End::Failed,
            },
            graceful = killed(kill_rx, gen) => End::Killed { graceful },
        }
    };
    match end {
        End::Done => {}
        End::Failed => finish(&client, Some(&upstream), false),
        End::Killed { graceful } => finish(&client, Some(&upstream), graceful),
    }
    drop(guard);
}

/// Prepares the sockets for closing: with `graceful == false` they are set to reset (RST) on
/// close. The caller then drops them.
fn finish(client: &TcpStream, upstream: Option<&TcpStream>, graceful: bool) {
    if !graceful {
        let _ = client.set_zero_linger();
        if let Some(u) = upstream {
            let _ = u.set_zero_linger();
        }
    }
}

/// Copies `from` to `to` under the current mode until EOF (then shuts `to` down for writing).
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    mode_rx: watch::Receiver<ProxyMode>,
    bytes: &AtomicU64,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Reader and writer are decoupled by a small queue so latency delays chunks without
    // limiting throughput; `None` marks EOF.
    let (tx, mut rx) = mpsc::channel::<Option<(Instant, Vec<u8>)>>(64);
    let mut read_mode = mode_rx.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            if !not_blackholed(&mut read_mode).await {
                return Ok(());
            }
            let n = from.read(&mut buf).await?;
            let item = (n > 0).then(|| (Instant::now(), buf[..n].to_vec()));
            let eof = item.is_none();
            if tx.send(item).await.is_err() || eof {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let mut write_mode = mode_rx;
    let writer = async move {
        while let Some(item) = rx.recv().await {
            let Some((read_at, data)) = item else {
                to.shutdown().await?;
                return Ok(());
            };
            // Hold the chunk while blackholed, and until it is due under latency.
            loop {
                let mode = *write_mode.borrow_and_update();
                match mode {
                    ProxyMode::Blackhole => {
                        if write_mode.changed().await.is_err() {
                            return Ok(());
                        }
                    }
                    ProxyMode::Latency(d) if Instant::now() < read_at + d => {
                        tokio::select! {
                            _ = tokio::time::sleep_until((read_at + d).into()) => {}
                            r = write_mode.changed() => if r.is_err() { return Ok(()) },
                        }
                    }
                    _ => break,
                }
            }
            // Counted before writing, so a peer that has read the bytes sees them counted.
            bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
            to.write_all(&data).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}
