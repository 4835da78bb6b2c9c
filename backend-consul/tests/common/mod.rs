//! Shared by the backend's tests: a Consul test server with a lowered TTL minimum, clients of
//! our backend, and a raw HTTP client that takes the steps Go's `api.Lock` and `api.Semaphore`
//! take (read `api/lock.go` and `api/semaphore.go`), to check that the two exclude each other.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::consul::{ConsulServer, ConsulServerOptions};
use tumbler_consul::{ConsulBackend, ConsulConfig};
use tumbler_core::{Checked, SharedBackend};

/// api.Lock's `LockFlagValue`.
pub const GO_LOCK_FLAGS: u64 = 0x2ddccbc058a50c18;
/// api.Semaphore's `SemaphoreFlagValue`.
pub const GO_SEMAPHORE_FLAGS: u64 = 0xe0f69a2baa414de0;

/// A test server whose smallest session TTL is 1 s.
pub async fn server() -> ConsulServer {
    server_with(ConsulServerOptions::default()).await
}

/// A test server with `options`, its smallest session TTL lowered to 1 s.
pub async fn server_with(options: ConsulServerOptions) -> ConsulServer {
    ConsulServer::start_with(options.with_min_session_ttl(Duration::from_secs(1)))
        .await
        .unwrap_or_else(|e| panic!("cannot start the Consul test server: {e}"))
}

/// `consul://ADDR/?PARAMS`.
pub fn url(addr: impl std::fmt::Display, params: &str) -> String {
    format!("consul://{addr}/?{params}")
}

/// A client of our backend: the concrete backend (behind lockcore's `Checked` layer, as
/// `connect` returns it) and the same as a shared one.
pub struct Client {
    /// For backend-specific calls (`session_id`, `mutex_key`), through `Checked`'s `Deref`.
    pub backend: Arc<Checked<ConsulBackend>>,
    /// For lockcore's handles (`mutex`, `semaphore`, `rwlock`, `state`).
    pub locks: SharedBackend,
}

/// A client of our backend with `params` (e.g. `ttl=3s&lock_delay=1s`).
pub async fn client(server: &ConsulServer, params: &str) -> Client {
    client_at(server.addr(), params).await
}

/// A client of our backend at `addr` (e.g. a fault proxy) with `params`.
pub async fn client_at(addr: impl std::fmt::Display, params: &str) -> Client {
    let config = ConsulConfig::from_url(&url(addr, params)).unwrap();
    let backend = Arc::new(Checked::new(ConsulBackend::connect(config).await.unwrap()));
    Client {
        locks: backend.clone() as SharedBackend,
        backend,
    }
}

/// A raw client of the HTTP API, taking api.Lock's and api.Semaphore's steps.
pub struct GoClient {
    http: reqwest::Client,
    base: String,
}

impl GoClient {
    pub fn new(server: &ConsulServer) -> GoClient {
        // With the `tls` feature, reqwest is built without a default rustls provider (the
        // backend passes its own); a plain client needs one installed.
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
        GoClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: server.url(),
        }
    }

    /// `PUT /v1/session/create` as api.Lock's `createSession` (`Behavior` release) or
    /// api.Semaphore's (`Behavior` delete).
    pub async fn session(&self, ttl: &str, behavior: &str) -> String {
        let body = json!({"Name": "Consul API Lock", "TTL": ttl, "Behavior": behavior});
        let resp: Value = self
            .http
            .put(format!("{}/v1/session/create", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["ID"].as_str().unwrap().to_string()
    }

    pub async fn destroy(&self, session: &str) {
        self.http
            .put(format!("{}/v1/session/destroy/{session}", self.base))
            .send()
            .await
            .unwrap();
    }

    /// `GET /v1/kv/<key>`: the entry, decoded value included.
    pub async fn get(&self, key: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/kv/{key}", self.base))
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            return None;
        }
        let entries: Vec<Value> = resp.json().await.unwrap();
        entries.into_iter().next()
    }

    /// `GET /v1/kv/<prefix>?recurse`.
    pub async fn list(&self, prefix: &str) -> Vec<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/kv/{prefix}?recurse", self.base))
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            return Vec::new();
        }
        resp.json().await.unwrap()
    }

    async fn put(&self, key: &str, query: &str, body: Vec<u8>) -> bool {
        let text = self
            .http
            .put(format!("{}/v1/kv/{key}?{query}", self.base))
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.trim() == "true"
    }

    pub async fn acquire(&self, key: &str, session: &str, flags: u64, value: &[u8]) -> bool {
        self.put(
            key,
            &format!("acquire={session}&flags={flags}"),
            value.to_vec(),
        )
        .await
    }

    pub async fn release(&self, key: &str, session: &str, flags: u64) -> bool {
        self.put(key, &format!("release={session}&flags={flags}"), Vec::new())
            .await
    }

    pub async fn cas(&self, key: &str, flags: u64, value: Vec<u8>, cas: u64) -> bool {
        self.put(key, &format!("cas={cas}&flags={flags}"), value)
            .await
    }

    /// One pass of api.Lock's `Lock` loop: read the key; a foreign flag is `ErrLockConflict`;
    /// if a session holds it, `Ok(false)`; else `?acquire=`.
    pub async fn lock_once(&self, key: &str, session: &str) -> Result<bool, String> {
        if let Some(entry) = self.get(key).await {
            if entry["Flags"].as_u64() != Some(GO_LOCK_FLAGS) {
                return Err("Existing key does not match lock use".into());
            }
            if entry["Session"].as_str().is_some_and(|s| !s.is_empty()) {
                return Ok(false);
            }
        }
        Ok(self.acquire(key, session, GO_LOCK_FLAGS, b"go").await)
    }

    /// One pass of api.Semaphore's `Acquire`: contender key, list, limit check, prune dead
    /// holders, count holders (one permit each), CAS the record.
    pub async fn semaphore_once(
        &self,
        prefix: &str,
        limit: u64,
        session: &str,
    ) -> Result<bool, String> {
        let contender = format!("{prefix}{session}");
        if !self
            .acquire(&contender, session, GO_SEMAPHORE_FLAGS, b"")
            .await
        {
            return Err("failed to make contender entry".into());
        }
        let pairs = self.list(prefix).await;
        let lock_key = format!("{prefix}.lock");
        let lock = pairs.iter().find(|p| p["Key"] == lock_key.as_str());
        let (mut record, index) = match lock {
            None => (json!({"Limit": limit, "Holders": {}}), 0),
            Some(pair) => {
                if pair["Flags"].as_u64() != Some(GO_SEMAPHORE_FLAGS) {
                    return Err("Existing key does not match semaphore use".into());
                }
                (decode(pair), pair["ModifyIndex"].as_u64().unwrap())
            }
        };
        if record["Limit"].as_u64() != Some(limit) {
            return Err(format!(
                "semaphore limit conflict (lock: {})",
                record["Limit"]
            ));
        }
        let alive: Vec<&str> = pairs.iter().filter_map(|p| p["Session"].as_str()).collect();
        let holders = record["Holders"].as_object_mut().unwrap();
        holders.retain(|h, _| alive.contains(&h.as_str()));
        if holders.len() as u64 >= limit {
            return Ok(false);
        }
        holders.insert(session.to_string(), json!(true));
        let body = serde_json::to_vec(&record).unwrap();
        Ok(self.cas(&lock_key, GO_SEMAPHORE_FLAGS, body, index).await)
    }
}

/// The decoded JSON value of a KV entry.
pub fn decode(entry: &Value) -> Value {
    use base64::Engine as _;
    let raw = entry["Value"].as_str().unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
