//! Real etcd servers (Debian's etcd 3.4): standalone, clusters, and with authentication on.
//!
//! Servers run with `--unsafe-no-fsync --heartbeat-interval 50 --election-timeout 500`, so
//! elections take well under a second. The kit talks to them through etcd's HTTP/JSON gateway
//! (`/health`, `/v3/kv/put`, `/v3/maintenance/status`, `/v3/auth/*`).
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use testkit::etcd::{Etcd, EtcdCluster, EtcdOptions};
//! let e = Etcd::start().await?;
//! println!("{}", e.endpoint()); // http://127.0.0.1:<port>
//! let secured = Etcd::start_with(EtcdOptions {
//!     auth: Some(("alice".into(), "pw".into())),
//!     ..Default::default()
//! }).await?;                  // root user + alice with readwrite on every key
//! let c = EtcdCluster::start(3).await?;
//! let old = c.kill_leader().await?;
//! c.put("k", "v").await?;     // still writable with 2 of 3
//! c.restart(old).await?;
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::join::join_all;
use crate::process::{ServerProcess, Spec};
use crate::ready::{retry_on_port_clash, start_timeout, wait_ready};
use crate::workdir::WorkDir;

/// How long an etcd start may take.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`EtcdCluster::leader`] looks for a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one gateway request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The password of etcd's `root` user when [`EtcdOptions::auth`] is set.
pub const ROOT_PASSWORD: &str = "testkit-root";
/// The role granted to the normal user: readwrite on every key.
pub const READWRITE_ROLE: &str = "testkit-readwrite";

/// How to configure an etcd server or cluster.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// Turn authentication on with a normal user `(name, password)` that has a role granting
    /// readwrite on all keys. A `root` user with password [`ROOT_PASSWORD`] is created too
    /// (etcd requires it). Clients must then log in with user and password.
    pub auth: Option<(String, String)>,
    /// The election timeout (default 500 ms, with heartbeats every 50 ms). A longer one makes
    /// a cluster go without a leader that long after its leader stops: for cases that need an
    /// election to outlast some client-side bound.
    pub election_timeout: Option<Duration>,
}

impl EtcdOptions {
    fn election_ms(&self) -> u64 {
        self.election_timeout.map_or(500, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(100)
        })
    }
}

/// One running etcd member: standalone, or part of an [`EtcdCluster`].
///
/// Dropping it kills the server (SIGKILL) and waits for it to exit. Methods take `&self`.
#[derive(Debug)]
pub struct Etcd {
    client_port: u16,
    peer_port: u16,
    auth: Option<(String, String)>,
    proc: ServerProcess,
    // Standalone servers own their folder; cluster members share the cluster's.
    _dir: Option<WorkDir>,
}

/// One key as [`Etcd::range`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key.
    pub key: String,
    /// Its value (lossy UTF-8).
    pub value: String,
    /// The lease it is attached to; 0 for none.
    pub lease: i64,
    /// The revision that created it.
    pub create_revision: i64,
}

/// Ports and names of one cluster member.
struct MemberPlan {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// The peer port the other members dial: `peer_port`, or the port of a fault proxy in
    /// front of it (a partitionable cluster).
    advertised_peer_port: u16,
}

impl Etcd {
    /// Starts a standalone etcd without authentication and waits until `/health` is true.
    pub async fn start() -> Result<Etcd> {
        Etcd::start_with(EtcdOptions::default()).await
    }

    /// Starts a standalone etcd configured by `opts`; with auth, it returns once the normal
    /// user can log in.
    pub async fn start_with(opts: EtcdOptions) -> Result<Etcd> {
        retry_on_port_clash(|| async {
            let dir = WorkDir::new("etcd")?;
            let ports = crate::ports::free_ports(2)?;
            let plan = [MemberPlan {
                name: "default".into(),
                client_port: ports[0],
                peer_port: ports[1],
                advertised_peer_port: ports[1],
            }];
            let e =
                Etcd::spawn_member(dir.path(), &plan, 0, "standalone", None, opts.election_ms())?;
            let e = Etcd {
                _dir: Some(dir),
                ..e
            };
            e.wait_healthy().await?;
            if let Some(creds) = &opts.auth {
                enable_auth(&e, creds).await?;
            }
            Ok(Etcd {
                auth: opts.auth.clone(),
                ..e
            })
        })
        .await
    }

    fn spawn_member(
        dir: &std::path::Path,
        plan: &[MemberPlan],
        i: usize,
        label: &str,
        cluster_token: Option<&str>,
        election_ms: u64,
    ) -> Result<Etcd> {
        let program = crate::bins::etcd()?;
        let me = &plan[i];
        let initial_cluster = plan
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.advertised_peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let client_url = format!("http://127.0.0.1:{}", me.client_port);
        let peer_url = format!("http://127.0.0.1:{}", me.peer_port);
        let advertised_peer_url = format!("http://127.0.0.1:{}", me.advertised_peer_port);
        let token = cluster_token
            .map(str::to_string)
            .unwrap_or_else(|| format!("testkit-{}-{}", std::process::id(), me.client_port));
        let args: Vec<String> = vec![
            "--name".into(),
            me.name.clone(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            advertised_peer_url,
            "--initial-cluster".into(),
            initial_cluster,
            "--initial-cluster-token".into(),
            token,
            "--initial-cluster-state".into(),
            "new".into(),
            "--unsafe-no-fsync".into(),
            "--heartbeat-interval".into(),
            "50".into(),
            "--election-timeout".into(),
            election_ms.to_string(),
        ];
        let spec = Spec {
            name: format!(
                "etcd {label} {} on 127.0.0.1:{} (folder {})",
                me.name,
                me.client_port,
                dir.display()
            ),
            program,
            args: args.into_iter().map(Into::into).collect(),
            cwd: dir.to_path_buf(),
            log: dir.join("etcd.log"),
            env: Vec::new(),
        };
        Ok(Etcd {
            client_port: me.client_port,
            peer_port: me.peer_port,
            auth: None,
            proc: ServerProcess::spawn(spec)?,
            _dir: None,
        })
    }

    async fn wait_healthy(&self) -> Result<()> {
        wait_ready(&self.proc, start_timeout(START_TIMEOUT), || async {
            match self.healthy().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("/health is not true".to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The peer (raft) port.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The normal user's `(name, password)` when authentication is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The server's process id, `None` after [`Etcd::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Whether `GET /health` says `"health":"true"` (the member is part of a cluster with a
    /// leader).
    pub async fn healthy(&self) -> Result<bool> {
        let r = crate::http::request(self.addr(), "GET", "/health", &[], None, HTTP_TIMEOUT)
            .await
            .map_err(|e| Error::protocol(format!("health of {}", self.proc.name()), e))?;
        Ok(r.status == 200 && r.body.contains("\"health\":\"true\""))
    }

    /// POSTs `body` to a gateway path (e.g. `/v3/kv/range`), logging in first when
    /// authentication is on, and returns the JSON answer. An answer with an `error` field is
    /// returned as an `Err`.
    pub async fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let token = match &self.auth {
            Some((u, p)) => Some(self.authenticate(u, p).await?),
            None => None,
        };
        self.post(path, body, token.as_deref()).await
    }

    async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Value> {
        let what = || format!("POST {path} to {}", self.proc.name());
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        let r = crate::http::request(
            self.addr(),
            "POST",
            path,
            &headers,
            Some(&body.to_string()),
            HTTP_TIMEOUT,
        )
        .await
        .map_err(|e| Error::protocol(what(), e))?;
        let v: Value = serde_json::from_str(&r.body)
            .map_err(|e| Error::protocol(what(), format!("{e}: {}", r.body)))?;
        if r.status != 200 || v.get("error").is_some() {
            return Err(Error::protocol(
                what(),
                format!("HTTP {}: {}", r.status, r.body),
            ));
        }
        Ok(v)
    }

    /// Logs in as `user` and returns the token for the `Authorization` header.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<String> {
        let v = self
            .post(
                "/v3/auth/authenticate",
                &json!({"name": user, "password": password}),
                None,
            )
            .await?;
        v.get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                Error::protocol(
                    format!("login as {user} to {}", self.proc.name()),
                    v.to_string(),
                )
            })
    }

    /// Puts `key = value` (logging in as the normal user when auth is on); returns the
    /// revision of the write.
    pub async fn put(&self, key: &str, value: &str) -> Result<i64> {
        let v = self
            .call("/v3/kv/put", &json!({"key": b64(key), "value": b64(value)}))
            .await?;
        Ok(header_i64(&v, "revision").unwrap_or(0))
    }

    /// Puts `key = value` attached to lease `lease`, as the holder of that lease would (to
    /// stand in for a write of a client under test); returns the revision of the write.
    pub async fn put_with_lease(&self, key: &str, value: &str, lease: i64) -> Result<i64> {
        let v = self
            .call(
                "/v3/kv/put",
                &json!({"key": b64(key), "value": b64(value), "lease": lease.to_string()}),
            )
            .await?;
        Ok(header_i64(&v, "revision").unwrap_or(0))
    }

    /// Every key starting with `prefix`, in key order, with its value, lease (0 for none) and
    /// create revision.
    pub async fn range(&self, prefix: &str) -> Result<Vec<StoredKey>> {
        let mut end = prefix.as_bytes().to_vec();
        match end.last_mut() {
            Some(last) if *last < 0xff => *last += 1,
            _ => end = vec![0],
        }
        let b64e = base64::engine::general_purpose::STANDARD;
        let v = self
            .call(
                "/v3/kv/range",
                &json!({"key": b64(prefix), "range_end": b64e.encode(&end)}),
            )
            .await?;
        let decode = |field: Option<&Value>| -> Result<String> {
            let raw = field.and_then(Value::as_str).unwrap_or("");
            let bytes = b64e
                .decode(raw)
                .map_err(|e| Error::protocol(format!("range {prefix}"), e.to_string()))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        let number = |field: Option<&Value>| -> i64 {
            field
                .and_then(Value::as_str)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0)
        };
        let mut keys = Vec::new();
        for kv in v.get("kvs").and_then(Value::as_array).into_iter().flatten() {
            keys.push(StoredKey {
                key: decode(kv.get("key"))?,
                value: decode(kv.get("value"))?,
                lease: number(kv.get("lease")),
                create_revision: number(kv.get("create_revision")),
            });
        }
        Ok(keys)
    }

    /// Revokes lease `id` (its keys are deleted at once), as an operator would.
    pub async fn revoke_lease(&self, id: i64) -> Result<()> {
        self.call("/v3/lease/revoke", &json!({"ID": id.to_string()}))
            .await
            .map(|_| ())
    }

    /// Deletes `key`; returns how many keys were deleted.
    pub async fn delete(&self, key: &str) -> Result<i64> {
        let v = self
            .call("/v3/kv/deleterange", &json!({"key": b64(key)}))
            .await?;
        Ok(v.get("deleted")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0))
    }

    /// Reads `key`; `None` if it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        let v = self.call("/v3/kv/range", &json!({"key": b64(key)})).await?;
        let Some(kv) = v.get("kvs").and_then(|k| k.get(0)) else {
            return Ok(None);
        };
        let raw = kv.get("value").and_then(Value::as_str).unwrap_or("");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| Error::protocol(format!("range {key}"), e.to_string()))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// This member's `/v3/maintenance/status`.
    pub async fn status(&self) -> Result<Value> {
        self.post("/v3/maintenance/status", &json!({}), None).await
    }

    /// Whether this member says it is the raft leader.
    pub async fn is_leader(&self) -> Result<bool> {
        let s = self.status().await?;
        let me = s.pointer("/header/member_id").and_then(Value::as_str);
        let leader = s.get("leader").and_then(Value::as_str);
        Ok(me.is_some() && me == leader)
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Does nothing if it is not running.
    pub async fn kill(&self) {
        self.proc.kill_async().await;
    }

    /// Stops the server with SIGSTOP: connections stay open, nothing is answered, no heartbeats.
    pub fn pause(&self) -> Result<()> {
        self.proc.pause()
    }

    /// Continues a paused server (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.proc.resume()
    }

    /// Kills the server if it runs and starts it again with the same ports and data folder;
    /// waits until `/health` is true (for a cluster member: until it has rejoined a cluster
    /// with a leader).
    pub async fn restart(&self) -> Result<()> {
        self.proc.kill_async().await;
        self.proc.start()?;
        self.wait_healthy().await
    }
}

/// Creates root, the readwrite role and the normal user, then turns authentication on.
async fn enable_auth(e: &Etcd, (user, password): &(String, String)) -> Result<()> {
    let all_keys = b64("\0");
    let steps = [
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": ROOT_PASSWORD}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        ("/v3/auth/role/add", json!({"name": READWRITE_ROLE})),
        (
            "/v3/auth/role/grant",
            json!({"name": READWRITE_ROLE, "perm": {
                "permType": "READWRITE", "key": all_keys, "range_end": all_keys}}),
        ),
        (
            "/v3/auth/user/add",
            json!({"name": user, "password": password}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": user, "role": READWRITE_ROLE}),
        ),
        ("/v3/auth/enable", json!({})),
    ];
    for (path, body) in steps {
        e.post(path, &body, None).await?;
    }
    // Proves the setup: the user can log in.
    e.authenticate(user, password).await.map(|_| ())
}

/// A cluster of etcd members on loopback, in one temporary folder.
///
/// Dropping it kills every member. Methods take `&self`.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Etcd>,
    /// A partitionable cluster's peer links: a sender-aware fault proxy in front of each
    /// member's peer port, with the member ids the peers name themselves by.
    links: Option<PeerLinks>,
    _dir: WorkDir,
}

/// The peer traffic of a partitionable cluster (see [`EtcdCluster::start_partitionable`]).
#[derive(Debug)]
struct PeerLinks {
    /// `inbound[i]` forwards what the others send to member `i`.
    inbound: Vec<crate::proxy::FaultProxy>,
    /// Member `i`'s id in hex, as its requests name it in `X-Server-From`.
    ids: Vec<String>,
}

impl EtcdCluster {
    /// Starts a cluster of `n` members (3 is usual) and waits until every member is healthy.
    pub async fn start(n: usize) -> Result<EtcdCluster> {
        EtcdCluster::start_with(n, EtcdOptions::default()).await
    }

    /// Starts a cluster of `n` members configured by `opts` (auth is set up once, through
    /// member 0, and applies to all).
    pub async fn start_with(n: usize, opts: EtcdOptions) -> Result<EtcdCluster> {
        if n == 0 {
            return Err(Error::InvalidArgument(
                "an etcd cluster needs at least 1 member".into(),
            ));
        }
        retry_on_port_clash(|| EtcdCluster::start_once(n, &opts, false)).await
    }

    /// Starts a cluster of `n` ≥ 3 members whose peer traffic runs through fault proxies, so
    /// that one member can be cut off from the others ([`EtcdCluster::isolate`]) while its
    /// clients still reach it: a minority partition. Each member's peers dial a proxy in front
    /// of it; the proxy tells the senders apart by the `X-Server-From` header of etcd's peer
    /// requests (rafthttp streams and pipelines name their sender), so cutting member `i` off
    /// holds its traffic to every other member and theirs to it. Peer requests that name no
    /// sender (a follower forwarding a lease renewal, version probes) pass unless they are
    /// bound for the cut-off member: until an election timeout has passed, the cut-off member
    /// may still forward lease renewals to the leader.
    pub async fn start_partitionable(n: usize) -> Result<EtcdCluster> {
        crate::proxy::check_partitionable("etcd cluster", n)?;
        let opts = EtcdOptions::default();
        retry_on_port_clash(|| EtcdCluster::start_once(n, &opts, true)).await
    }

    async fn start_once(n: usize, opts: &EtcdOptions, partitionable: bool) -> Result<EtcdCluster> {
        let dir = WorkDir::new("etcd-cluster")?;
        let ports = crate::ports::free_ports(2 * n)?;
        let mut inbound = Vec::new();
        if partitionable {
            for i in 0..n {
                let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[2 * i + 1]));
                inbound.push(
                    crate::proxy::FaultProxy::start_sender_aware(peer, "X-Server-From").await?,
                );
            }
        }
        let plan: Vec<MemberPlan> = (0..n)
            .map(|i| MemberPlan {
                name: format!("n{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                advertised_peer_port: inbound
                    .get(i)
                    .map_or(ports[2 * i + 1], crate::proxy::FaultProxy::port),
            })
            .collect();
        let token = format!("testkit-{}-{}", std::process::id(), ports[0]);
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let member_dir = dir.sub(&plan[i].name)?;
            members.push(Etcd::spawn_member(
                &member_dir,
                &plan,
                i,
                "cluster member",
                Some(&token),
                opts.election_ms(),
            )?);
        }
        for r in join_all(members.iter().map(|m| m.wait_healthy())).await {
            r?;
        }
        if let Some(creds) = &opts.auth {
            enable_auth(&members[0], creds).await?;
            for m in &mut members {
                m.auth = Some(creds.clone());
            }
        }
        let links = if partitionable {
            let ids = member_ids(&members[0], &plan).await?;
            Some(PeerLinks { inbound, ids })
        } else {
            None
        };
        Ok(EtcdCluster {
            members,
            links,
            _dir: dir,
        })
    }

    /// Cuts member `i` off from the other members (both ways; its clients still reach it).
    /// Needs a cluster from [`EtcdCluster::start_partitionable`].
    pub fn isolate(&self, i: usize) -> Result<()> {
        self.set_links(i, crate::proxy::ProxyMode::Blackhole)
    }

    /// Ends [`EtcdCluster::isolate`] for member `i`: held bytes flow again.
    pub fn rejoin(&self, i: usize) -> Result<()> {
        self.set_links(i, crate::proxy::ProxyMode::Pass)
    }

    fn set_links(&self, i: usize, mode: crate::proxy::ProxyMode) -> Result<()> {
        let Some(links) = &self.links else {
            return Err(Error::InvalidArgument(
                "this etcd cluster has no peer links to cut; start it with \
                 EtcdCluster::start_partitionable"
                    .into(),
            ));
        };
        let Some(id) = links.ids.get(i) else {
            return Err(Error::InvalidArgument(format!(
                "cluster member {i} does not exist (it has {})",
                self.members.len()
            )));
        };
        for (j, proxy) in links.inbound.iter().enumerate() {
            if j == i {
                proxy.set_mode(mode);
            } else {
                proxy.set_sender_mode(id, mode);
            }
        }
        Ok(())
    }

    /// Every member's client address as a URL host list, `127.0.0.1:P1,127.0.0.1:P2,…` (for
    /// an `etcd://` URL).
    pub fn hosts(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every member's client endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::endpoint).collect()
    }

    /// Member `i` (0-based). Panics if `i >= len()`.
    pub fn member(&self, i: usize) -> &Etcd {
        &self.members[i]
    }

    /// All members.
    pub fn members(&self) -> &[Etcd] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false (a cluster has at least 1 member).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Index of the member that says it is the leader; waits (up to 20 s) while there is none.
    pub async fn leader(&self) -> Result<usize> {
        let start = Instant::now();
        loop {
            let mut said = Vec::new();
            for (i, m) in self.members.iter().enumerate() {
                if m.pid().is_none() {
                    said.push(format!("{i}: killed"));
                    continue;
                }
                match m.is_leader().await {
                    Ok(true) => return Ok(i),
                    Ok(false) => said.push(format!("{i}: not leader")),
                    Err(e) => said.push(format!("{i}: {e}")),
                }
            }
            if start.elapsed() > LEADER_TIMEOUT {
                return Err(Error::NoLeader {
                    what: format!("etcd cluster {}", self.endpoints().join(",")),
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
        self.members[i].kill().await;
        Ok(i)
    }

    /// Restarts member `i` with its data and waits until it is healthy again.
    pub async fn restart(&self, i: usize) -> Result<()> {
        match self.members.get(i) {
            Some(m) => m.restart().await,
            None => Err(Error::InvalidArgument(format!(
                "cluster member {i} does not exist (it has {})",
                self.members.len()
            ))),
        }
    }

    /// Puts `key = value` through the first running member that accepts it; returns the
    /// revision.
    pub async fn put(&self, key: &str, value: &str) -> Result<i64> {
        let mut last = None;
        for m in self.members.iter().filter(|m| m.pid().is_some()) {
            match m.put(key, value).await {
                Ok(rev) => return Ok(rev),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NotRunning {
            what: format!(
                "every member of etcd cluster {}",
                self.endpoints().join(",")
            ),
        }))
    }
}

/// The hex id of each member of `plan`, in plan order, from `member`'s member list.
async fn member_ids(member: &Etcd, plan: &[MemberPlan]) -> Result<Vec<String>> {
    let list = member.call("/v3/cluster/member/list", &json!({})).await?;
    let members = list
        .get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    plan.iter()
        .map(|m| {
            members
                .iter()
                .find(|entry| entry.get("name").and_then(Value::as_str) == Some(m.name.as_str()))
                .and_then(|entry| entry.get("ID"))
                .and_then(|id| match id {
                    Value::String(text) => text.parse::<u64>().ok(),
                    other => other.as_u64(),
                })
                .map(|id| format!("{id:x}"))
                .ok_or_else(|| {
                    Error::protocol(
                        "member list",
                        format!("member {} is not in the member list {list}", m.name),
                    )
                })
        })
        .collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn header_i64(v: &Value, field: &str) -> Option<i64> {
    v.get("header")?.get(field)?.as_str()?.parse().ok()
}
