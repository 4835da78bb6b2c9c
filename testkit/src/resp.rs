//! A minimal Redis (RESP2) client: enough to check readiness and to poke a server in tests.
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! let redis = testkit::redis::Redis::start().await?;
//! let mut conn = testkit::resp::RespConn::connect(redis.addr()).await?;
//! assert_eq!(conn.cmd(&["PING"]).await?, testkit::resp::Reply::Simple("PONG".into()));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3\r\nfoo` (`None` for the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `*2 ...` (`None` for the null array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text if it is a simple or bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) => Some(s),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The reply as owned text (a simple or bulk string; invalid UTF-8 replaced), or a
    /// protocol error naming `what` was asked.
    pub fn into_text(self, what: &str) -> Result<String> {
        match self {
            Reply::Simple(s) => Ok(s),
            Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            other => Err(Error::protocol(what, format!("{other:?}"))),
        }
    }

    /// `Ok` for `+OK`, else a protocol error naming `what` was asked.
    pub fn expect_ok(self, what: &str) -> Result<()> {
        match self {
            Reply::Simple(s) if s == "OK" => Ok(()),
            other => Err(Error::protocol(what, format!("{other:?}"))),
        }
    }
}

/// One connection to a Redis server.
#[derive(Debug)]
pub struct RespConn {
    stream: BufReader<TcpStream>,
    peer: SocketAddr,
}

impl RespConn {
    /// Connects to `addr` (no timeout: wrap in `tokio::time::timeout` if the peer may hang).
    pub async fn connect(addr: SocketAddr) -> Result<RespConn> {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::io(format!("connecting to redis at {addr}"), e))?;
        let _ = s.set_nodelay(true);
        Ok(RespConn {
            stream: BufReader::new(s),
            peer: addr,
        })
    }

    /// Sends one command without reading its reply (see [`RespConn::read_reply`]).
    pub async fn send(&mut self, args: &[&str]) -> Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        self.stream
            .get_mut()
            .write_all(&buf)
            .await
            .map_err(|e| Error::io(format!("sending {:?} to redis at {}", args, self.peer), e))
    }

    /// Reads one reply.
    pub async fn read_reply(&mut self) -> Result<Reply> {
        let peer = self.peer;
        read_reply(&mut self.stream)
            .await
            .map_err(|e| Error::io(format!("reading a reply from redis at {peer}"), e))
    }

    /// Sends one command and reads its reply. A Redis error reply is returned as
    /// [`Reply::Error`], not as an `Err`.
    pub async fn cmd(&mut self, args: &[&str]) -> Result<Reply> {
        self.send(args).await?;
        self.read_reply().await
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

async fn read_line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed by the server",
        ));
    }
    if !line.ends_with("\r\n") {
        return Err(bad(format!("line without CRLF: {line:?}")));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn read_reply(
    r: &mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Reply>> + Send + '_>> {
    Box::pin(async move {
        let line = read_line(r).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let num = || -> std::io::Result<i64> {
            rest.parse::<i64>()
                .map_err(|_| bad(format!("bad number in {line:?}")))
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(num()?),
            "$" => {
                let n = num()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    r.read_exact(&mut buf).await?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let n = num()?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(read_reply(r).await?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad(format!("unknown reply type in {line:?}"))),
        })
    })
}
