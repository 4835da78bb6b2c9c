//! The fault proxy between a real Redis and a raw client.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use testkit::proxy::{FaultProxy, ProxyMode};
use testkit::redis::Redis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

async fn setup() -> (Redis, FaultProxy) {
    let redis = Redis::start().await.expect("start redis");
    let proxy = FaultProxy::start(redis.addr()).await.expect("start proxy");
    (redis, proxy)
}

/// Sends PING and waits up to `limit` for `+PONG`.
async fn ping(s: &mut TcpStream, limit: Duration) -> std::io::Result<()> {
    s.write_all(PING).await?;
    read_pong(s, limit).await
}

async fn read_pong(s: &mut TcpStream, limit: Duration) -> std::io::Result<()> {
    let mut buf = [0u8; 7];
    match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
        Err(_) => Err(std::io::Error::new(ErrorKind::TimedOut, "no answer")),
        Ok(r) => {
            r?;
            assert_eq!(&buf, b"+PONG\r\n");
            Ok(())
        }
    }
}

/// Polls a counter until it reaches `want` (deadline 5 s).
async fn eventually(what: &str, mut f: impl FnMut() -> u64, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while f() != want {
        assert!(Instant::now() < deadline, "{what}: {} != {want}", f());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn passes_traffic_and_counts_it() {
    let (_redis, proxy) = setup().await;
    assert_eq!(proxy.mode(), ProxyMode::Pass);
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut c, Duration::from_secs(5))
        .await
        .expect("PING through the proxy");
    let st = proxy.stats();
    assert_eq!((st.accepted, st.open), (1, 1));
    assert_eq!(st.bytes_to_upstream, PING.len() as u64);
    assert_eq!(st.bytes_to_client, 7);
    drop(c);
    eventually("open connections", || proxy.open_connections(), 0).await;
    assert_eq!(proxy.connections(), 1);
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let (_redis, proxy) = setup().await;
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    let t = Instant::now();
    ping(&mut c, Duration::from_secs(5)).await.expect("PING");
    let fast = t.elapsed();

    proxy.set_mode(ProxyMode::Latency(Duration::from_millis(150)));
    let t = Instant::now();
    ping(&mut c, Duration::from_secs(5))
        .await
        .expect("PING with latency");
    let slow = t.elapsed();
    assert!(
        slow >= Duration::from_millis(300),
        "round trip {slow:?} < 2 x 150 ms"
    );
    assert!(slow > fast, "{slow:?} vs {fast:?}");
}

#[tokio::test]
async fn blackhole_makes_clients_time_out_and_holds_bytes() {
    let (_redis, proxy) = setup().await;
    let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut old, Duration::from_secs(5))
        .await
        .expect("PING before");

    proxy.set_mode(ProxyMode::Blackhole);
    let e = ping(&mut old, Duration::from_millis(400))
        .await
        .expect_err("answer in blackhole");
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    // New connections are accepted but get nothing either.
    let mut new = TcpStream::connect(proxy.addr())
        .await
        .expect("connect in blackhole");
    let e = ping(&mut new, Duration::from_millis(400))
        .await
        .expect_err("answer in blackhole");
    assert_eq!(e.kind(), ErrorKind::TimedOut);

    // Healing delivers what was held, like TCP after a partition.
    proxy.set_mode(ProxyMode::Pass);
    read_pong(&mut old, Duration::from_secs(5))
        .await
        .expect("held PONG on the old connection");
    read_pong(&mut new, Duration::from_secs(5))
        .await
        .expect("held PONG on the new connection");
}

#[tokio::test]
async fn cut_resets_open_connections_only() {
    let (_redis, proxy) = setup().await;
    let mut a = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut b = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut a, Duration::from_secs(5)).await.expect("PING a");
    ping(&mut b, Duration::from_secs(5)).await.expect("PING b");

    assert_eq!(proxy.cut_all(), 2);
    assert_eq!(proxy.open_connections(), 0);
    let mut buf = [0u8; 1];
    let e = a.read(&mut buf).await.expect_err("read after cut");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    let e = ping(&mut b, Duration::from_secs(5))
        .await
        .expect_err("PING after cut");
    assert!(
        matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{e}"
    );

    let mut c = TcpStream::connect(proxy.addr())
        .await
        .expect("connect after cut");
    ping(&mut c, Duration::from_secs(5))
        .await
        .expect("PING after cut");
}

#[tokio::test]
async fn refuse_rejects_new_connections_until_switched_back() {
    let (_redis, proxy) = setup().await;
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");

    proxy.set_mode(ProxyMode::Refuse);
    let e = TcpStream::connect(proxy.addr())
        .await
        .expect_err("connect while refusing");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    ping(&mut open, Duration::from_secs(5))
        .await
        .expect("open connections keep working");

    proxy.set_mode(ProxyMode::Pass);
    let mut again = TcpStream::connect(proxy.addr())
        .await
        .expect("connect after refuse");
    ping(&mut again, Duration::from_secs(5))
        .await
        .expect("PING after refuse");
}

#[tokio::test]
async fn dead_upstream_resets_the_client_and_drop_closes_the_port() {
    let (redis, proxy) = setup().await;
    redis.kill().await;
    // The proxy accepts, cannot reach the server, and resets the client: depending on timing
    // the client sees the reset in connect or in its first read.
    let r = match TcpStream::connect(proxy.addr()).await {
        Ok(mut c) => {
            let mut buf = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("the proxy closes a connection it cannot forward")
        }
        Err(e) => Err(e),
    };
    assert!(
        matches!(r, Err(ref e) if e.kind() == ErrorKind::ConnectionReset),
        "{r:?}"
    );

    let addr = proxy.addr();
    drop(proxy);
    // The port is free again: binding it ourselves proves the proxy let go of it. (A connect
    // test is not enough: on a busy machine another process may be handed the freed port.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the dropped proxy still holds {addr}: {e}"),
        }
    }
}

/// An echo server on a free loopback port.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Writes `data` and reads as many bytes back within `limit`.
async fn echoed(s: &mut TcpStream, data: &[u8], limit: Duration) -> bool {
    if s.write_all(data).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; data.len()];
    matches!(
        tokio::time::timeout(limit, s.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && back == data
}

#[tokio::test]
async fn a_sender_aware_proxy_cuts_one_sender_and_keeps_the_others() {
    let proxy = FaultProxy::start_sender_aware(echo_server().await, "X-Server-From")
        .await
        .expect("proxy");
    let request =
        |from: &str| format!("GET /raft HTTP/1.1\r\nHost: x\r\nx-server-from: {from}\r\n\r\n");
    let mut a = TcpStream::connect(proxy.addr()).await.expect("connect a");
    let mut b = TcpStream::connect(proxy.addr()).await.expect("connect b");
    let quick = Duration::from_secs(2);
    let held = Duration::from_millis(300);
    assert!(echoed(&mut a, request("a").as_bytes(), quick).await);
    assert!(echoed(&mut b, request("b").as_bytes(), quick).await);
    proxy.set_sender_mode("a", ProxyMode::Blackhole);
    assert!(
        !echoed(&mut a, b"ping-a", held).await,
        "a's bytes passed its blackhole"
    );
    assert!(echoed(&mut b, b"ping-b", quick).await, "b was cut with a");
    // A new connection of the cut sender is held from its first request on.
    let mut a2 = TcpStream::connect(proxy.addr()).await.expect("connect a2");
    assert!(!echoed(&mut a2, request("a").as_bytes(), held).await);
    // The proxy's own mode holds every sender.
    proxy.set_mode(ProxyMode::Blackhole);
    assert!(
        !echoed(&mut b, b"ping-b2", held).await,
        "b passed the proxy's blackhole"
    );
    proxy.set_mode(ProxyMode::Pass);
    proxy.set_sender_mode("a", ProxyMode::Pass);
    // Held bytes flow again, in order.
    let mut back = vec![0u8; b"ping-a".len()];
    tokio::time::timeout(quick, a.read_exact(&mut back))
        .await
        .expect("a's held bytes within 2 s")
        .expect("read");
    assert_eq!(back, b"ping-a");
}
