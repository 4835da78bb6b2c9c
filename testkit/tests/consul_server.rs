//! The Consul test server's rules, pinned over real HTTP (a tiny HTTP/1.1 client on a
//! `TcpStream`, one connection per request).
//!
//! Each test names the Consul behaviour it pins. Waiting is only ever for real deadlines (a TTL,
//! a lock-delay, a `?wait=`), always bounded; "has the server got the request yet" is read from
//! the server's request counters, never guessed with a sleep.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use testkit::consul::{ConsulServer, ConsulServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------- client

/// `api.LockFlagValue` from Consul's Go API.
const LOCK_FLAG: u64 = 0x2ddc_cbc0_58a5_0c18;
/// `api.SemaphoreFlagValue`.
const SEMAPHORE_FLAG: u64 = 0xe0f6_9a2b_aa41_4de0;

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .unwrap_or_else(|| panic!("no X-Consul-Index in {self:?}"))
            .parse()
            .expect("X-Consul-Index is a number")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&body[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .expect("chunk size");
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)),
        ));
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

struct Client {
    addr: SocketAddr,
    token: Option<String>,
}

impl Client {
    fn new(server: &ConsulServer) -> Client {
        Client {
            addr: server.addr(),
            token: None,
        }
    }

    async fn call(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let token;
        let mut headers = Vec::new();
        if let Some(t) = &self.token {
            token = t.clone();
            headers.push(("X-Consul-Token", token.as_str()));
        }
        request(self.addr, method, path, &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, b"").await
    }

    async fn put(&self, path: &str, body: &[u8]) -> Reply {
        self.call("PUT", path, body).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, b"").await
    }

    /// Creates a session from a JSON body; panics unless Consul says 200.
    async fn session(&self, body: Value) -> String {
        let r = self
            .put("/v1/session/create", body.to_string().as_bytes())
            .await;
        assert_eq!(r.status, 200, "session create: {}", r.text());
        r.json()["ID"].as_str().expect("ID").to_string()
    }

    async fn entry(&self, key: &str) -> Option<Value> {
        let r = self.get(&format!("/v1/kv/{key}")).await;
        match r.status {
            404 => None,
            200 => Some(r.json()[0].clone()),
            s => panic!("GET {key}: {s} {}", r.text()),
        }
    }

    async fn put_bool(&self, path: &str, body: &[u8]) -> bool {
        let r = self.put(path, body).await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
        r.json().as_bool().expect("true/false")
    }
}

async fn fast_server() -> ConsulServer {
    ConsulServer::start_with(
        ConsulServerOptions::default().with_min_session_ttl(Duration::from_millis(500)),
    )
    .await
    .expect("start")
}

/// Polls `cond` (no sleeping: yields) until it holds, failing after `limit`.
async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

// ---------------------------------------------------------------------------- lifecycle

#[tokio::test]
async fn binds_loopback_and_reports_addresses() {
    let server = ConsulServer::start().await.unwrap();
    let port = server.addr().port();
    assert!(server.addr().ip().is_loopback());
    assert_eq!(server.http_addr(), format!("127.0.0.1:{port}"));
    assert_eq!(server.url(), format!("http://127.0.0.1:{port}"));
    let r = Client::new(&server).get("/v1/status/leader").await;
    assert_eq!(r.status, 200);
    assert!(r.json().is_string());
}

#[test]
fn handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<ConsulServer>();
    assert_send_sync::<ConsulServerOptions>();
}

#[tokio::test]
async fn keep_alive_connection_serves_several_requests() {
    // Pooling clients (reqwest) reuse connections: answer several requests on one.
    let server = ConsulServer::start().await.unwrap();
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let mut pending = Vec::new();
    for (i, req) in [
        "PUT /v1/kv/ka HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        "GET /v1/kv/ka?raw HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/kv/nope HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .iter()
    .enumerate()
    {
        stream.write_all(req.as_bytes()).await.unwrap();
        // Read one response: head, then Content-Length bytes.
        loop {
            if let Some(split) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..split]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("content-length");
                if pending.len() >= split + 4 + len {
                    let body = pending[split + 4..split + 4 + len].to_vec();
                    let status = head.split(' ').nth(1).unwrap().to_string();
                    pending.drain(..split + 4 + len);
                    match i {
                        0 => assert_eq!((status.as_str(), &body[..]), ("200", &b"true"[..])),
                        1 => assert_eq!((status.as_str(), &body[..]), ("200", &b"hi"[..])),
                        _ => assert_eq!(status, "404"),
                    }
                    break;
                }
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("answered")
                .unwrap();
            assert!(n > 0, "connection closed after request {i}");
            pending.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(server.counters().total, 3);
}

#[tokio::test]
async fn drop_stops_the_server_and_closes_connections() {
    let server = ConsulServer::start().await.unwrap();
    let addr = server.addr();
    let c = Client::new(&server);
    c.put("/v1/kv/k", b"v").await;
    let idx = c.get("/v1/kv/k").await.index();
    let poll = tokio::spawn(async move {
        request(
            addr,
            "GET",
            &format!("/v1/kv/k?index={idx}&wait=60s"),
            &[],
            b"",
        )
        .await
    });
    until(Duration::from_secs(5), "the long-poll to arrive", || {
        server.counters().blocking == 1
    })
    .await;
    drop(server);
    let outcome = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("open long-poll closed when the server is dropped")
        .unwrap();
    assert!(outcome.is_err(), "no answer after drop: {outcome:?}");
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(start.elapsed() < Duration::from_secs(5), "still listening");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------- sessions

#[tokio::test]
async fn session_ttl_must_be_between_10s_and_24h() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    for bad in ["9s", "500ms", "86401s", "25h"] {
        let r = c
            .put(
                "/v1/session/create",
                json!({ "TTL": bad }).to_string().as_bytes(),
            )
            .await;
        assert_eq!(r.status, 500, "TTL {bad}");
        assert!(
            r.text().starts_with("Invalid Session TTL '"),
            "{}",
            r.text()
        );
        assert!(
            r.text().ends_with("must be between [10s=24h0m0s]"),
            "{}",
            r.text()
        );
    }
    let r = c.put("/v1/session/create", br#"{"TTL":"soon"}"#).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.text(),
        "Session TTL 'soon' invalid: time: invalid duration \"soon\""
    );
    for good in ["10s", "24h", "86400s", "1m", "0s", ""] {
        c.session(json!({ "TTL": good })).await;
    }
}

#[tokio::test]
async fn lowered_min_ttl_is_an_opt_in_deviation() {
    let server = fast_server().await;
    let c = Client::new(&server);
    c.session(json!({ "TTL": "500ms" })).await;
    let r = c.put("/v1/session/create", br#"{"TTL":"100ms"}"#).await;
    assert_eq!(r.status, 500);
    assert!(
        r.text().ends_with("must be between [500ms=24h0m0s]"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn session_json_has_consul_fields_and_defaults() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let id = c.put("/v1/session/create", b"").await.json()["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.get(&format!("/v1/session/info/{id}")).await;
    assert_eq!(r.status, 200);
    assert!(r.index() >= 1);
    let s = &r.json()[0];
    assert_eq!(s["ID"], json!(id));
    assert_eq!(s["Name"], json!(""));
    assert_eq!(s["Node"], json!(server.options().node_name));
    assert_eq!(
        s["LockDelay"],
        json!(15_000_000_000u64),
        "default lock-delay 15s in ns"
    );
    assert_eq!(s["Behavior"], json!("release"));
    assert_eq!(s["TTL"], json!(""));
    assert_eq!(s["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(s["ServiceChecks"], Value::Null);
    assert!(
        s.get("Checks").is_none(),
        "Checks omitted when only serfHealth"
    );
    assert_eq!(s["CreateIndex"], s["ModifyIndex"]);
    assert!(s["CreateIndex"].as_u64().unwrap() >= 1);
    assert_eq!(id.len(), 36);

    // Checks / NodeChecks / ServiceChecks are accepted and echoed, not evaluated.
    let id = c
        .session(json!({
            "Name": "n",
            "Checks": ["a", "serfHealth"],
            "NodeChecks": ["b"],
            "ServiceChecks": [{"ID": "svc", "Namespace": ""}],
            "Behavior": "delete",
            "LockDelay": "7s",
            "TTL": "30s",
        }))
        .await;
    let s = &c.get(&format!("/v1/session/info/{id}")).await.json()[0];
    assert_eq!(s["Checks"], json!(["a", "serfHealth"]));
    assert_eq!(s["NodeChecks"], json!(["b"]));
    assert_eq!(s["ServiceChecks"], json!([{"ID": "svc", "Namespace": ""}]));
    assert_eq!(s["Behavior"], json!("delete"));
    assert_eq!(s["LockDelay"], json!(7_000_000_000u64));
    assert_eq!(s["TTL"], json!("30s"));

    // Unknown sessions read as an empty list.
    let r = c
        .get("/v1/session/info/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!((r.status, r.json()), (200, json!([])));
}

#[tokio::test]
async fn session_create_rejections() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let r = c
        .put("/v1/session/create", br#"{"Behavior":"explode"}"#)
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "Invalid Behavior setting 'explode'")
    );
    let r = c
        .put("/v1/session/create", br#"{"Node":"elsewhere"}"#)
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "Missing node registration")
    );
    let r = c.put("/v1/session/create", br#"{"Bogus":true}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "Request decode failed: json: unknown field \"Bogus\""
    );
    let r = c.put("/v1/session/create", b"{not json").await;
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("Request decode failed: "));
    let r = c.get("/v1/session/create").await;
    assert_eq!(r.status, 405);
    assert!(server.session_ids().is_empty(), "nothing was created");
}

#[tokio::test]
async fn lock_delay_parsing_and_60s_cap() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    for (sent, ns) in [
        (json!("15000ms"), 15_000_000_000u64),
        (json!("2m"), 120_000_000_000),
        (json!(5), 5_000_000_000),
        (json!(3_000_000_000u64), 3_000_000_000),
    ] {
        let id = c.session(json!({ "LockDelay": sent })).await;
        let s = &c.get(&format!("/v1/session/info/{id}")).await.json()[0];
        assert_eq!(s["LockDelay"], json!(ns), "LockDelay {sent}");
    }
    // A 2-minute lock-delay is reported as asked but enforced for at most 60s.
    let long = c.session(json!({ "LockDelay": "2m" })).await;
    assert!(
        c.put_bool(&format!("/v1/kv/capped?acquire={long}"), b"")
            .await
    );
    assert!(server.invalidate_session(&long));
    let left = server
        .lock_delay_remaining("capped")
        .expect("under lock-delay");
    assert!(left <= Duration::from_secs(60), "{left:?}");
    assert!(left > Duration::from_secs(50), "{left:?}");
    // The default is 15s.
    let default = c.session(json!({})).await;
    assert!(
        c.put_bool(&format!("/v1/kv/dflt?acquire={default}"), b"")
            .await
    );
    assert!(server.invalidate_session(&default));
    let left = server
        .lock_delay_remaining("dflt")
        .expect("under lock-delay");
    assert!(
        left <= Duration::from_secs(15) && left > Duration::from_secs(10),
        "{left:?}"
    );
}

#[tokio::test]
async fn renew_answers_200_with_the_session_or_404() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let id = c.session(json!({ "TTL": "15s", "Name": "r" })).await;
    let r = c.put(&format!("/v1/session/renew/{id}"), b"").await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body.as_array().map(Vec::len), Some(1));
    assert_eq!(body[0]["ID"], json!(id));
    assert_eq!(body[0]["TTL"], json!("15s"));
    let r = c.put("/v1/session/renew/nope", b"").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "Session id 'nope' not found")
    );
    c.put(&format!("/v1/session/destroy/{id}"), b"").await;
    let r = c.put(&format!("/v1/session/renew/{id}"), b"").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn destroy_list_and_node_endpoints() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let a = c.session(json!({ "Name": "a" })).await;
    let b = c.session(json!({ "Name": "b" })).await;
    let r = c.get("/v1/session/list").await;
    assert!(r.index() >= 2);
    let mut ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ID"].as_str().unwrap().to_string())
        .collect();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(ids, expected, "ordered by ID");
    let node = server.options().node_name.clone();
    let r = c.get(&format!("/v1/session/node/{node}")).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
    let r = c.get("/v1/session/node/other-node").await;
    assert_eq!(r.json(), json!([]));

    let r = c.put(&format!("/v1/session/destroy/{a}"), b"").await;
    assert_eq!((r.status, r.json()), (200, json!(true)));
    let r = c.put("/v1/session/destroy/never-existed", b"").await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!(true)),
        "destroy is idempotent"
    );
    ids = server.session_ids();
    assert_eq!(ids, vec![b]);
    let r = c.put("/v1/session/destroy/", b"").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Missing session"));
}

#[tokio::test]
async fn ttl_session_is_invalidated_at_twice_the_ttl() {
    let server = fast_server().await;
    let c = Client::new(&server);
    let start = Instant::now();
    let id = c.session(json!({ "TTL": "1s" })).await;
    assert!(c.put_bool(&format!("/v1/kv/held?acquire={id}"), b"x").await);
    let before = c.entry("held").await.unwrap();
    // Long-poll the key until the invalidation releases it.
    let idx = before["ModifyIndex"].as_u64().unwrap();
    let r = c.get(&format!("/v1/kv/held?index={idx}&wait=20s")).await;
    let elapsed = start.elapsed();
    assert_eq!(r.status, 200);
    let after = &r.json()[0];
    assert!(after.get("Session").is_none(), "released: {after}");
    assert_eq!(after["LockIndex"], before["LockIndex"]);
    assert!(
        elapsed >= Duration::from_millis(1900),
        "not before TTL x 2: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(6),
        "soon after TTL x 2: {elapsed:?}"
    );
    let r = c.get(&format!("/v1/session/info/{id}")).await;
    assert_eq!(r.json(), json!([]));
    let r = c.put(&format!("/v1/session/renew/{id}"), b"").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn renewing_keeps_a_ttl_session_alive() {
    let server = fast_server().await;
    let c = Client::new(&server);
    let id = c.session(json!({ "TTL": "1s" })).await;
    // Renew every 300ms (about half the TTL, as api.Lock does) for 4.5s: more than twice
    // TTL x 2, so without the renewals the session would be gone.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(4500) {
        let r = c.put(&format!("/v1/session/renew/{id}"), b"").await;
        assert_eq!(r.status, 200, "renewed in time at {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(server.session_ids(), vec![id]);
}

#[tokio::test]
async fn invalidate_session_hook() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let id = c.session(json!({})).await;
    assert!(server.invalidate_session(&id));
    assert!(!server.invalidate_session(&id));
    assert!(server.session_ids().is_empty());
}

// ---------------------------------------------------------------------------- KV

#[tokio::test]
async fn missing_key_is_404_with_an_index() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let r = c.get("/v1/kv/nothing").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.index(), 1, "never 0, even on an empty store");
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(r.header("X-Consul-LastContact"), Some("0"));
    let r = c.get("/v1/kv/nothing?recurse").await;
    assert_eq!(r.status, 404);
    let r = c.get("/v1/kv/nothing?keys").await;
    assert_eq!(r.status, 404);
    let r = c.get("/v1/kv/?keys").await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!([])),
        "root key list is [] not 404"
    );
    let r = c.get("/v1/kv/").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Missing key name"));
}

#[tokio::test]
async fn put_then_get_returns_consul_entry_fields() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    assert!(
        c.put_bool(&format!("/v1/kv/a/b?flags={LOCK_FLAG}"), b"hello")
            .await
    );
    let r = c.get("/v1/kv/a/b").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let e = &r.json()[0];
    assert_eq!(e["Key"], json!("a/b"));
    assert_eq!(e["Flags"], json!(LOCK_FLAG), "flags stored as u64");
    assert_eq!(e["Value"], json!(b64("hello")));
    assert_eq!(e["LockIndex"], json!(0));
    assert!(e.get("Session").is_none(), "Session omitted when not held");
    assert_eq!(e["CreateIndex"], e["ModifyIndex"]);
    assert_eq!(e["ModifyIndex"].as_u64().unwrap(), r.index());
    // Rewrite: ModifyIndex moves, CreateIndex stays; no ?flags means 0.
    c.put("/v1/kv/a/b", b"again").await;
    let e2 = c.entry("a/b").await.unwrap();
    assert_eq!(e2["CreateIndex"], e["CreateIndex"]);
    assert!(e2["ModifyIndex"].as_u64() > e["ModifyIndex"].as_u64());
    assert_eq!(e2["Flags"], json!(0));
    // Empty values read as null.
    c.put("/v1/kv/empty", b"").await;
    assert_eq!(c.entry("empty").await.unwrap()["Value"], Value::Null);
    // Bad flags: Go's strconv error, as a 500.
    let r = c.put("/v1/kv/x?flags=abc", b"").await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.text(),
        "strconv.ParseUint: parsing \"abc\": invalid syntax"
    );
}

#[tokio::test]
async fn raw_keys_and_recurse() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    for (k, v) in [
        ("web/foo", "1"),
        ("web/bar", "2"),
        ("web/sub/x", "3"),
        ("web/sub/y", "4"),
        ("other", "5"),
    ] {
        c.put(&format!("/v1/kv/{k}"), v.as_bytes()).await;
    }
    let r = c.get("/v1/kv/web/foo?raw").await;
    assert_eq!((r.status, r.text().as_str()), (200, "1"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert!(r.index() >= 1);

    let r = c.get("/v1/kv/web/?recurse").await;
    let keys: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, vec!["web/bar", "web/foo", "web/sub/x", "web/sub/y"]);
    let max_modify = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ModifyIndex"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        r.index(),
        max_modify,
        "recurse index: highest ModifyIndex under the prefix"
    );

    let r = c.get("/v1/kv/web/?keys").await;
    assert_eq!(
        r.json(),
        json!(["web/bar", "web/foo", "web/sub/x", "web/sub/y"])
    );
    let r = c.get("/v1/kv/web/?keys&separator=/").await;
    assert_eq!(r.json(), json!(["web/bar", "web/foo", "web/sub/"]));
    let r = c.get("/v1/kv/?keys&separator=/").await;
    assert_eq!(r.json(), json!(["other", "web/"]));
}

#[tokio::test]
async fn cas_put_and_delete() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    assert!(c.put_bool("/v1/kv/c?cas=0", b"1").await, "cas=0 creates");
    assert!(
        !c.put_bool("/v1/kv/c?cas=0", b"2").await,
        "cas=0 on an existing key"
    );
    let m = c.entry("c").await.unwrap()["ModifyIndex"].as_u64().unwrap();
    assert!(!c.put_bool(&format!("/v1/kv/c?cas={}", m + 1), b"2").await);
    assert!(!c.put_bool("/v1/kv/missing?cas=5", b"2").await);
    assert!(c.put_bool(&format!("/v1/kv/c?cas={m}"), b"2").await);
    assert_eq!(c.entry("c").await.unwrap()["Value"], json!(b64("2")));

    let m = c.entry("c").await.unwrap()["ModifyIndex"].as_u64().unwrap();
    let r = c.delete(&format!("/v1/kv/c?cas={}", m + 1)).await;
    assert_eq!(r.json(), json!(false));
    let r = c.delete("/v1/kv/c?cas=0").await;
    assert_eq!(
        r.json(),
        json!(false),
        "cas=0 never deletes an existing key"
    );
    let r = c.delete(&format!("/v1/kv/c?cas={m}")).await;
    assert_eq!(r.json(), json!(true));
    assert!(c.entry("c").await.is_none());
    let r = c.delete("/v1/kv/c").await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!(true)),
        "plain delete of missing key"
    );
}

#[tokio::test]
async fn recursive_delete_removes_only_the_prefix() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    for k in ["p/a", "p/b/c", "pz", "q"] {
        c.put(&format!("/v1/kv/{k}"), b"").await;
    }
    let r = c.delete("/v1/kv/p/?recurse").await;
    assert_eq!(r.json(), json!(true));
    let r = c.get("/v1/kv/?keys").await;
    assert_eq!(r.json(), json!(["pz", "q"]));
}

#[tokio::test]
async fn conflicting_flags_are_400() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let id = c.session(json!({})).await;
    let r = c.put(&format!("/v1/kv/k?cas=0&acquire={id}"), b"").await;
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("Conflicting flags: "), "{}", r.text());
    let r = c
        .put(&format!("/v1/kv/k?acquire={id}&release={id}"), b"")
        .await;
    assert_eq!(r.status, 400);
    let r = c.delete("/v1/kv/k?recurse&cas=3").await;
    assert_eq!(r.status, 400);
    assert!(c.entry("k").await.is_none(), "nothing was written");
}

#[tokio::test]
async fn acquire_with_unknown_session_is_500() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let r = c.put("/v1/kv/k?acquire=not-a-session", b"").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "invalid session \"not-a-session\"");
    let r = c.put("/v1/kv/k?acquire=", b"").await;
    assert_eq!((r.status, r.text().as_str()), (500, "missing session"));
    assert!(c.entry("k").await.is_none());
    // Releasing with an unknown session is just false.
    c.put("/v1/kv/k", b"").await;
    assert!(!c.put_bool("/v1/kv/k?release=not-a-session", b"").await);
}

#[tokio::test]
async fn lock_index_rules() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let a = c.session(json!({})).await;
    let b = c.session(json!({})).await;
    let flags = format!("flags={LOCK_FLAG}");
    assert!(
        c.put_bool(&format!("/v1/kv/l?acquire={a}&{flags}"), b"a1")
            .await
    );
    let e = c.entry("l").await.unwrap();
    assert_eq!(
        (e["LockIndex"].clone(), e["Session"].clone()),
        (json!(1), json!(a))
    );
    // The holder acquiring again keeps LockIndex and updates the value.
    assert!(
        c.put_bool(&format!("/v1/kv/l?acquire={a}&{flags}"), b"a2")
            .await
    );
    let e = c.entry("l").await.unwrap();
    assert_eq!(e["LockIndex"], json!(1));
    assert_eq!(e["Value"], json!(b64("a2")));
    // Another session cannot acquire or release it.
    assert!(
        !c.put_bool(&format!("/v1/kv/l?acquire={b}&{flags}"), b"")
            .await
    );
    assert!(
        !c.put_bool(&format!("/v1/kv/l?release={b}&{flags}"), b"")
            .await
    );
    assert_eq!(c.entry("l").await.unwrap()["Session"], json!(a));
    // Release by the holder: Session cleared, LockIndex kept.
    assert!(
        c.put_bool(&format!("/v1/kv/l?release={a}&{flags}"), b"a2")
            .await
    );
    let e = c.entry("l").await.unwrap();
    assert!(e.get("Session").is_none());
    assert_eq!(e["LockIndex"], json!(1));
    // A new acquire bumps LockIndex (and no lock-delay follows a release).
    assert!(
        c.put_bool(&format!("/v1/kv/l?acquire={b}&{flags}"), b"")
            .await
    );
    let e = c.entry("l").await.unwrap();
    assert_eq!(
        (e["LockIndex"].clone(), e["Session"].clone()),
        (json!(2), json!(b))
    );
    // A key that never existed starts at LockIndex 1.
    assert!(c.put_bool(&format!("/v1/kv/fresh?acquire={a}"), b"").await);
    assert_eq!(c.entry("fresh").await.unwrap()["LockIndex"], json!(1));
}

#[tokio::test]
async fn plain_put_keeps_the_holder_but_zeroes_lock_index() {
    // Consul's kvsSetTxn does not carry LockIndex over: a backend must not build fencing
    // tokens from LockIndex alone.
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let a = c.session(json!({})).await;
    assert!(c.put_bool(&format!("/v1/kv/q?acquire={a}"), b"").await);
    assert!(c.put_bool("/v1/kv/q", b"overwritten").await);
    let e = c.entry("q").await.unwrap();
    assert_eq!(e["Session"], json!(a));
    assert_eq!(e["LockIndex"], json!(0));
}

#[tokio::test]
async fn lock_delay_after_invalidation_but_not_after_release() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let a = c.session(json!({ "LockDelay": "15s" })).await;
    let b = c.session(json!({ "LockDelay": "15s" })).await;
    // Release: the other session can take it at once.
    assert!(c.put_bool(&format!("/v1/kv/d?acquire={a}"), b"").await);
    assert!(c.put_bool(&format!("/v1/kv/d?release={a}"), b"").await);
    assert_eq!(server.lock_delay_remaining("d"), None);
    assert!(c.put_bool(&format!("/v1/kv/d?acquire={b}"), b"").await);
    // Destroying the holder imposes its lock-delay: acquires answer false meanwhile.
    let r = c.put(&format!("/v1/session/destroy/{b}"), b"").await;
    assert_eq!(r.json(), json!(true));
    assert!(server.lock_delay_remaining("d").is_some());
    assert!(!c.put_bool(&format!("/v1/kv/d?acquire={a}"), b"").await);
    // Other keys are unaffected.
    assert!(c.put_bool(&format!("/v1/kv/e?acquire={a}"), b"").await);
}

#[tokio::test]
async fn lock_delay_runs_out() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let a = c.session(json!({ "LockDelay": "1s" })).await;
    let b = c.session(json!({})).await;
    assert!(c.put_bool(&format!("/v1/kv/r?acquire={a}"), b"").await);
    assert!(server.invalidate_session(&a));
    assert!(!c.put_bool(&format!("/v1/kv/r?acquire={b}"), b"").await);
    let left = server.lock_delay_remaining("r").expect("under lock-delay");
    assert!(left <= Duration::from_secs(1));
    // Wait out the real deadline.
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    assert!(c.put_bool(&format!("/v1/kv/r?acquire={b}"), b"").await);
}

#[tokio::test]
async fn invalidation_releases_keys_keeping_lock_index() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let a = c.session(json!({ "Behavior": "release" })).await;
    assert!(c.put_bool(&format!("/v1/kv/h1?acquire={a}"), b"v").await);
    assert!(c.put_bool(&format!("/v1/kv/h2?acquire={a}"), b"v").await);
    c.put("/v1/kv/untouched", b"v").await;
    let before = c.entry("h1").await.unwrap();
    let untouched = c.entry("untouched").await.unwrap();
    c.put(&format!("/v1/session/destroy/{a}"), b"").await;
    for key in ["h1", "h2"] {
        let after = c.entry(key).await.unwrap();
        assert!(after.get("Session").is_none(), "{key} released");
        assert_eq!(after["LockIndex"], json!(1));
        assert_eq!(after["Value"], json!(b64("v")));
        assert!(after["ModifyIndex"].as_u64() > before["ModifyIndex"].as_u64());
    }
    assert_eq!(c.entry("untouched").await.unwrap(), untouched);
}

#[tokio::test]
async fn delete_behavior_deletes_held_keys() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let a = c.session(json!({ "Behavior": "delete" })).await;
    assert!(c.put_bool(&format!("/v1/kv/gone?acquire={a}"), b"v").await);
    c.put("/v1/kv/stays", b"v").await;
    assert!(server.invalidate_session(&a));
    assert!(c.entry("gone").await.is_none());
    assert!(c.entry("stays").await.is_some());
    assert!(server.lock_delay_remaining("gone").is_some());
}

#[tokio::test]
async fn oversized_value_is_413_and_wrong_method_405() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let big = vec![b'x'; 512 * 1024 + 1];
    let r = c.put("/v1/kv/big", &big).await;
    assert_eq!(r.status, 413);
    assert!(c.entry("big").await.is_none());
    let ok = vec![b'x'; 512 * 1024];
    assert!(c.put_bool("/v1/kv/big", &ok).await);
    let r = c.call("POST", "/v1/kv/big", b"").await;
    assert_eq!(r.status, 405);
}

// ---------------------------------------------------------------------------- blocking

#[tokio::test]
async fn wait_and_index_parameters() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    c.put("/v1/kv/w", b"").await;
    for wait in ["15s", "15000ms", "1m", "1h30m"] {
        let r = c.get(&format!("/v1/kv/w?wait={wait}")).await;
        assert_eq!(r.status, 200, "wait={wait} without index answers at once");
    }
    let r = c.get("/v1/kv/w?wait=soon").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid wait time"));
    let r = c.get("/v1/kv/w?wait=15").await;
    assert_eq!(r.status, 400, "Go durations need a unit");
    let r = c.get("/v1/kv/w?index=-1").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid index"));
    let r = c.get("/v1/kv/w?stale&consistent").await;
    assert_eq!(r.status, 400);
    let r = c.get("/v1/kv/w?consistent").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn blocking_get_wakes_on_a_change_to_its_key() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    c.put("/v1/kv/watched", b"v1").await;
    let idx = c.get("/v1/kv/watched").await.index();
    let addr = server.addr();
    let mut poll = tokio::spawn(async move {
        let start = Instant::now();
        let r = request(
            addr,
            "GET",
            &format!("/v1/kv/watched?index={idx}&wait=30s"),
            &[],
            b"",
        )
        .await
        .unwrap();
        (r, start.elapsed())
    });
    until(Duration::from_secs(5), "the long-poll to arrive", || {
        server.counters().blocking == 1
    })
    .await;
    // It blocks while nothing changes, also when other keys change.
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut poll)
        .await
        .is_err());
    c.put("/v1/kv/watched-not", b"x").await;
    c.put("/v1/kv/other", b"x").await;
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut poll)
        .await
        .is_err());
    // An identical rewrite changes nothing and wakes nobody.
    c.put("/v1/kv/watched", b"v1").await;
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut poll)
        .await
        .is_err());
    c.put("/v1/kv/watched", b"v2").await;
    let (r, elapsed) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("woken by the write")
        .unwrap();
    assert!(elapsed < Duration::from_secs(10));
    assert_eq!(r.status, 200);
    assert!(r.index() > idx);
    assert_eq!(r.json()[0]["Value"], json!(b64("v2")));
    assert_eq!(r.json()[0]["ModifyIndex"].as_u64().unwrap(), r.index());
}

#[tokio::test]
async fn blocking_get_times_out_after_wait_with_the_same_index() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    c.put("/v1/kv/quiet", b"").await;
    let idx = c.get("/v1/kv/quiet").await.index();
    let start = Instant::now();
    let r = c.get(&format!("/v1/kv/quiet?index={idx}&wait=400ms")).await;
    let elapsed = start.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.index(), idx);
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    // wait + wait/16 jitter, plus scheduling slack.
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
}

#[tokio::test]
async fn blocking_on_a_missing_key_wakes_when_it_appears() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    c.put("/v1/kv/unrelated", b"").await;
    let r = c.get("/v1/kv/later").await;
    assert_eq!(r.status, 404);
    let idx = r.index();
    let addr = server.addr();
    let poll = tokio::spawn(async move {
        request(
            addr,
            "GET",
            &format!("/v1/kv/later?index={idx}&wait=30s"),
            &[],
            b"",
        )
        .await
        .unwrap()
    });
    until(Duration::from_secs(5), "the long-poll to arrive", || {
        server.counters().blocking == 1
    })
    .await;
    c.put("/v1/kv/later", b"here").await;
    let r = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.index() > idx);
}

#[tokio::test]
async fn blocking_recurse_wakes_on_any_key_under_the_prefix() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let id = c.session(json!({})).await;
    c.put(&format!("/v1/kv/sem/{id}?acquire={id}"), b"").await;
    c.put("/v1/kv/elsewhere", b"").await;
    let idx = c.get("/v1/kv/sem/?recurse").await.index();
    let addr = server.addr();
    let mut poll = tokio::spawn(async move {
        request(
            addr,
            "GET",
            &format!("/v1/kv/sem/?recurse&index={idx}&wait=30s"),
            &[],
            b"",
        )
        .await
        .unwrap()
    });
    until(Duration::from_secs(5), "the long-poll to arrive", || {
        server.counters().blocking == 1
    })
    .await;
    c.put("/v1/kv/elsewhere", b"changed").await;
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut poll)
        .await
        .is_err());
    // Invalidating the contender's session releases its key under the prefix.
    assert!(server.invalidate_session(&id));
    let r = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.index() > idx);
    assert!(r.json()[0].get("Session").is_none());
}

#[tokio::test]
async fn blocking_session_info_wakes_on_destroy() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let id = c.session(json!({})).await;
    let r = c.get(&format!("/v1/session/info/{id}")).await;
    let idx = r.index();
    let addr = server.addr();
    let path = format!("/v1/session/info/{id}?index={idx}&wait=30s");
    let poll = tokio::spawn(async move { request(addr, "GET", &path, &[], b"").await.unwrap() });
    until(Duration::from_secs(5), "the long-poll to arrive", || {
        server.counters().blocking == 1
    })
    .await;
    c.put(&format!("/v1/session/destroy/{id}"), b"").await;
    let r = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(r.json(), json!([]));
    assert!(r.index() > idx);
}

#[tokio::test]
async fn configured_max_wait_caps_long_polls() {
    let server = ConsulServer::start_with(
        ConsulServerOptions::default()
            .with_query_waits(Duration::from_millis(200), Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let c = Client::new(&server);
    c.put("/v1/kv/k", b"").await;
    let idx = c.get("/v1/kv/k").await.index();
    let start = Instant::now();
    let r = c.get(&format!("/v1/kv/k?index={idx}&wait=10m")).await;
    assert_eq!(r.status, 200);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let start = Instant::now();
    c.get(&format!("/v1/kv/k?index={idx}")).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn every_read_carries_x_consul_index() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let id = c.session(json!({})).await;
    c.put("/v1/kv/a", b"1").await;
    for path in [
        "/v1/kv/a".to_string(),
        "/v1/kv/a?raw".to_string(),
        "/v1/kv/?recurse".to_string(),
        "/v1/kv/?keys".to_string(),
        "/v1/kv/missing".to_string(),
        format!("/v1/session/info/{id}"),
        "/v1/session/list".to_string(),
        format!("/v1/session/node/{}", server.options().node_name),
    ] {
        let r = c.get(&path).await;
        assert!(r.index() >= 1, "{path}");
        assert!(r.header("X-Consul-LastContact").is_some(), "{path}");
        assert!(r.header("X-Consul-KnownLeader").is_some(), "{path}");
    }
}

// ---------------------------------------------------------------------------- client traffic

#[tokio::test]
async fn go_api_lock_traffic() {
    // What api.Lock / `consul lock` sends, in order.
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let key = "service/leader";
    let holder = c
        .session(json!({ "Name": "Consul API Lock", "TTL": "15s" }))
        .await;
    let r = c.get(&format!("/v1/kv/{key}?wait=15000ms")).await;
    assert_eq!(r.status, 404);
    assert!(
        c.put_bool(
            &format!("/v1/kv/{key}?acquire={holder}&flags={LOCK_FLAG}"),
            b""
        )
        .await
    );
    // Renewal answers the session array.
    let r = c.put(&format!("/v1/session/renew/{holder}"), b"").await;
    assert_eq!(r.json()[0]["ID"], json!(holder));

    // A contender sees the key held and long-polls it.
    let contender = c
        .session(json!({ "Name": "Consul API Lock", "TTL": "15s" }))
        .await;
    let r = c.get(&format!("/v1/kv/{key}?wait=15000ms")).await;
    let e = &r.json()[0];
    assert_eq!(e["Flags"], json!(LOCK_FLAG));
    assert_eq!(e["Session"], json!(holder));
    let idx = r.index();
    let addr = server.addr();
    let path = format!("/v1/kv/{key}?index={idx}&wait=15000ms");
    let poll = tokio::spawn(async move { request(addr, "GET", &path, &[], b"").await.unwrap() });
    until(Duration::from_secs(5), "the long-poll to arrive", || {
        server.counters().blocking == 1
    })
    .await;
    // The holder's monitor read (consistent) still sees its session.
    let r = c.get(&format!("/v1/kv/{key}?consistent")).await;
    assert_eq!(r.json()[0]["Session"], json!(holder));
    // Unlock: release with the same flags; then destroy the session.
    assert!(
        c.put_bool(
            &format!("/v1/kv/{key}?release={holder}&flags={LOCK_FLAG}"),
            b""
        )
        .await
    );
    c.put(&format!("/v1/session/destroy/{holder}"), b"").await;
    let r = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("contender woken")
        .unwrap();
    assert!(r.json()[0].get("Session").is_none());
    // Release imposed no lock-delay (the key was no longer held at destroy).
    assert!(
        c.put_bool(
            &format!("/v1/kv/{key}?acquire={contender}&flags={LOCK_FLAG}"),
            b""
        )
        .await
    );
    assert_eq!(c.entry(key).await.unwrap()["LockIndex"], json!(2));
}

#[tokio::test]
async fn go_api_semaphore_layout() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let prefix = "service/pool";
    let s1 = c
        .session(json!({ "Name": "Consul API Semaphore", "TTL": "15s" }))
        .await;
    let s2 = c
        .session(json!({ "Name": "Consul API Semaphore", "TTL": "15s" }))
        .await;
    for s in [&s1, &s2] {
        assert!(
            c.put_bool(
                &format!("/v1/kv/{prefix}/{s}?acquire={s}&flags={SEMAPHORE_FLAG}"),
                b""
            )
            .await
        );
    }
    // The .lock record is created with cas=0 and updated with cas=<ModifyIndex>.
    let lock_path = format!("/v1/kv/{prefix}/.lock?flags={SEMAPHORE_FLAG}");
    let holders = json!({ "Limit": 1, "Holders": { s1.clone(): true } }).to_string();
    assert!(
        c.put_bool(&format!("{lock_path}&cas=0"), holders.as_bytes())
            .await
    );
    let r = c.get(&format!("/v1/kv/{prefix}/?recurse")).await;
    let entries = r.json();
    let lock = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Key"] == json!(format!("{prefix}/.lock")))
        .expect(".lock listed")
        .clone();
    assert_eq!(entries.as_array().map(Vec::len), Some(3));
    let m = lock["ModifyIndex"].as_u64().unwrap();
    assert!(!c.put_bool(&format!("{lock_path}&cas=0"), b"{}").await);
    assert!(c.put_bool(&format!("{lock_path}&cas={m}"), b"{}").await);
    assert!(
        !c.put_bool(&format!("{lock_path}&cas={m}"), b"{}").await,
        "stale cas"
    );
    // A contender leaving deletes its key.
    let r = c.delete(&format!("/v1/kv/{prefix}/{s2}")).await;
    assert_eq!(r.json(), json!(true));
    let r = c.get(&format!("/v1/kv/{prefix}/?keys")).await;
    assert_eq!(
        r.json(),
        json!([format!("{prefix}/.lock"), format!("{prefix}/{s1}")])
    );
}

// ---------------------------------------------------------------------------- ACL

#[tokio::test]
async fn acl_token_is_required_when_configured() {
    let server = ConsulServer::start_with(ConsulServerOptions::default().with_acl_token("s3cret"))
        .await
        .unwrap();
    let anon = Client::new(&server);
    let wrong = Client {
        addr: server.addr(),
        token: Some("wrong".into()),
    };
    let root = Client {
        addr: server.addr(),
        token: Some("s3cret".into()),
    };
    assert!(root.put_bool("/v1/kv/k", b"v").await);
    let id = root.session(json!({})).await;

    let r = wrong.get("/v1/kv/k").await;
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    let r = wrong.put("/v1/session/create", b"").await;
    assert_eq!(r.status, 403);

    let r = anon.get("/v1/kv/k").await;
    assert_eq!(r.status, 403);
    assert!(r.text().starts_with("Permission denied"), "{}", r.text());
    let r = anon.put("/v1/kv/k", b"x").await;
    assert_eq!(r.status, 403);
    let r = anon.put(&format!("/v1/kv/k?acquire={id}"), b"").await;
    assert_eq!(r.status, 403);
    let r = anon.put("/v1/session/create", b"").await;
    assert_eq!(r.status, 403);
    // Lists are filtered rather than denied.
    let r = anon.get("/v1/session/list").await;
    assert_eq!((r.status, r.json()), (200, json!([])));
    let r = anon.get("/v1/kv/?recurse").await;
    assert_eq!(r.status, 404);

    // The token works as a header, a query parameter and a bearer token.
    assert_eq!(root.entry("k").await.unwrap()["Value"], json!(b64("v")));
    let r = anon.get("/v1/kv/k?token=s3cret").await;
    assert_eq!(r.status, 200);
    let r = request(
        server.addr(),
        "GET",
        "/v1/kv/k",
        &[("Authorization", "Bearer s3cret")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        root.entry("k").await.unwrap()["Value"],
        json!(b64("v")),
        "nothing written"
    );
}

// ---------------------------------------------------------------------------- fault hooks

#[tokio::test]
async fn pause_holds_requests_until_resume() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    c.put("/v1/kv/p", b"before").await;
    server.pause();
    assert!(server.is_paused());
    let addr = server.addr();
    let mut write = tokio::spawn(async move {
        request(addr, "PUT", "/v1/kv/p", &[], b"during")
            .await
            .unwrap()
    });
    let counted = server.counters().total;
    until(
        Duration::from_secs(5),
        "the paused request to arrive",
        || server.counters().total > counted,
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut write)
            .await
            .is_err(),
        "no answer while paused"
    );
    // Held, not handled: the store still has the old value.
    assert_eq!(server.index(), 1);
    server.resume();
    let r = tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .expect("answered after resume")
        .unwrap();
    assert_eq!(r.json(), json!(true));
    assert_eq!(c.entry("p").await.unwrap()["Value"], json!(b64("during")));
}

#[tokio::test]
async fn cut_connections_drops_open_connections() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    c.put("/v1/kv/k", b"").await;
    let idx = c.get("/v1/kv/k").await.index();
    let addr = server.addr();
    let poll = tokio::spawn(async move {
        request(
            addr,
            "GET",
            &format!("/v1/kv/k?index={idx}&wait=60s"),
            &[],
            b"",
        )
        .await
    });
    until(Duration::from_secs(5), "the long-poll to arrive", || {
        server.counters().blocking == 1
    })
    .await;
    assert!(server.cut_connections() >= 1);
    let outcome = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the cut connection ends at once")
        .unwrap();
    assert!(
        outcome.is_err(),
        "no answer on a cut connection: {outcome:?}"
    );
    // The server still serves new connections.
    assert_eq!(c.get("/v1/kv/k").await.status, 200);
}

#[tokio::test]
async fn counters_count_requests_by_endpoint() {
    let server = ConsulServer::start().await.unwrap();
    let c = Client::new(&server);
    let id = c.session(json!({ "TTL": "10s" })).await;
    c.put(&format!("/v1/kv/k?acquire={id}"), b"").await;
    c.get("/v1/kv/k").await;
    c.get("/v1/kv/k?index=1&wait=10ms").await;
    c.delete("/v1/kv/k").await;
    c.put(&format!("/v1/session/renew/{id}"), b"").await;
    c.get(&format!("/v1/session/info/{id}")).await;
    c.get("/v1/session/list").await;
    c.put(&format!("/v1/session/destroy/{id}"), b"").await;
    c.get("/v1/status/leader").await;
    let n = server.counters();
    assert_eq!(
        (n.session_create, n.kv_put, n.kv_get, n.kv_delete),
        (1, 1, 2, 1)
    );
    assert_eq!(
        (
            n.session_renew,
            n.session_info,
            n.session_list,
            n.session_destroy
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((n.other, n.blocking, n.total), (1, 1, 10));
    server.reset_counters();
    assert_eq!(server.counters().total, 0);
}

#[tokio::test]
async fn agent_metrics_counts_requests_in_prometheus_text() {
    let server = ConsulServer::start().await.unwrap();
    for _ in 0..3 {
        request(server.addr(), "GET", "/v1/kv/metric-probe", &[], b"")
            .await
            .unwrap();
    }
    let reply = request(
        server.addr(),
        "GET",
        "/v1/agent/metrics?format=prometheus",
        &[],
        b"",
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&reply.body).to_string();
    let kv_get: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tumbler_http_requests{endpoint=\"kv_get\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no kv_get counter in {text:?}"));
    assert_eq!(kv_get, 3, "{text}");
}

/// A runtime shut down while clients keep connecting does not hang: a connection accepted
/// during the shutdown has its task dropped at once by `spawn`, and that task's bookkeeping must
/// not wait for a lock its own accept loop holds.
#[test]
fn shutting_down_while_clients_connect_does_not_hang() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..40 {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let server = testkit::consul::ConsulServer::start().await.unwrap();
                let addr = server.addr();
                for _ in 0..4 {
                    tokio::spawn(async move {
                        loop {
                            let _ = tokio::net::TcpStream::connect(addr).await;
                        }
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                std::mem::forget(server);
            });
            drop(runtime);
        }
        let _ = done.send(());
    });
    assert!(
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_ok(),
        "shutting a runtime down while clients connected to its Consul server hung"
    );
}
