//! The store behind the Consul test server: sessions, KV entries, the Raft-like index,
//! lock-delays and TTL expiry. Pure logic: every time-dependent call takes `now`, so the
//! rules can be unit-tested without HTTP and without sleeping.
//!
//! The rules follow Consul's state store (`agent/consul/state/kvs.go`, `session.go`) and
//! its RPC endpoints (`agent/consul/kvs_endpoint.go`, `session_endpoint.go`,
//! `session_ttl.go`):
//!
//! - Every write that reaches "Raft" takes the next global index, even when it changes
//!   nothing (a failed CAS, a refused acquire). A write whose result equals the stored entry
//!   (same LockIndex, Flags, Value, Session) leaves the entry and its ModifyIndex untouched.
//! - A plain or CAS `PUT` keeps the entry's Session but sets LockIndex to 0 (Consul's
//!   `kvsSetTxn` does not carry LockIndex over).
//! - `acquire`: unknown session is an error; held by another session is `false`; held by the
//!   same session keeps LockIndex; otherwise LockIndex + 1 (1 for a new key). A key under
//!   lock-delay refuses the acquire *before* Raft (no index is used).
//! - `release`: only by the holder; clears Session, keeps LockIndex, writes the given value
//!   and flags.
//! - Session destroy, TTL expiry and forced invalidation all go through one path: the
//!   session's held keys are released (Session cleared, LockIndex kept) or deleted
//!   (Behavior `delete`), and each gets a lock-delay of `min(LockDelay, 60s)` when positive.
//! - A TTL session expires `TTL × 2` after its creation or last renewal.
//! - Read indexes: a present key reports its ModifyIndex; a missing key the KV table index;
//!   a prefix the highest ModifyIndex or tombstone under it (the table index when that is 0
//!   or the prefix is empty); sessions report the session table index.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::blocking::{ChangeLog, Touched, Watch};
use super::duration::{format_go_duration, parse_go_duration};
use super::random::Rng;

/// Longest session TTL Consul accepts (`structs.SessionTTLMax`).
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Consul invalidates a TTL session this many TTLs after its last renewal.
pub const SESSION_TTL_MULTIPLIER: u32 = 2;
/// Lock-delay a session gets when it does not ask for one.
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// Longest lock-delay Consul enforces (`structs.MaxLockDelay`), whatever the session asked.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// The node health check every session gets by default.
pub const SERF_CHECK_ID: &str = "serfHealth";

/// Locks the store, recovering from a poisoned lock (a panicking request must not take the
/// whole server down with it).
pub(crate) fn lock_store(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What happens to a session's held keys when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Release the locks: Session cleared, LockIndex kept.
    Release,
    /// Delete the held keys.
    Delete,
}

impl Behavior {
    /// The name Consul uses in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// A service check reference in a session (`ServiceChecks`), accepted and echoed only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCheck {
    /// The check ID.
    pub id: String,
    /// The namespace (Enterprise; kept as sent).
    pub namespace: String,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session ID (a lower-case UUID).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// The node the session belongs to.
    pub node: String,
    /// Requested lock-delay in nanoseconds (reported as requested; enforcement caps it at 60s).
    pub lock_delay_ns: i64,
    /// What invalidation does to held keys.
    pub behavior: Behavior,
    /// The TTL as the client sent it (`""` for none).
    pub ttl: String,
    /// The parsed TTL, `None` when the session has no TTL.
    pub ttl_duration: Option<Duration>,
    /// Node check IDs (accepted and echoed; not evaluated).
    pub node_checks: Vec<String>,
    /// Service checks (accepted and echoed; not evaluated). `None` prints as `null`.
    pub service_checks: Option<Vec<ServiceCheck>>,
    /// The deprecated `Checks` field (omitted from JSON when empty).
    pub checks: Vec<String>,
    /// Index of the write that created the session.
    pub create_index: u64,
    /// Same as `create_index` (sessions are never modified).
    pub modify_index: u64,
    /// When the TTL (× 2) runs out, if the session has a TTL.
    pub expires_at: Option<Instant>,
}

/// A session-create request after Consul's HTTP-layer defaults have been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// `Name`.
    pub name: String,
    /// `Node` (defaults to the agent's node).
    pub node: String,
    /// `LockDelay` in nanoseconds (defaults to 15s).
    pub lock_delay_ns: i64,
    /// `Behavior` as sent (`""` means release).
    pub behavior: String,
    /// `TTL` as sent (`""` means none).
    pub ttl: String,
    /// `NodeChecks`.
    pub node_checks: Vec<String>,
    /// `ServiceChecks`.
    pub service_checks: Option<Vec<ServiceCheck>>,
    /// `Checks`.
    pub checks: Vec<String>,
}

/// A KV entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full key.
    pub key: String,
    /// Raw value (printed base64; empty prints as `null`).
    pub value: Vec<u8>,
    /// Opaque client flags.
    pub flags: u64,
    /// The session holding the lock on this key, if any.
    pub session: Option<String>,
    /// How many times the key has been acquired (see the module rules for when it resets).
    pub lock_index: u64,
    /// Index of the write that created the key.
    pub create_index: u64,
    /// Index of the last write that changed the key.
    pub modify_index: u64,
}

impl Entry {
    /// Consul's `DirEntry.Equal`: everything but the indexes.
    fn same_content(&self, other: &Entry) -> bool {
        self.lock_index == other.lock_index
            && self.key == other.key
            && self.flags == other.flags
            && self.value == other.value
            && self.session == other.session
    }
}

/// A write Consul refuses with an error (HTTP 500 with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Settings the store needs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The one registered node (the agent's node name).
    pub node_name: String,
    /// Smallest accepted non-zero session TTL (Consul: 10s).
    pub min_session_ttl: Duration,
}

/// Sessions, KV and indexes.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    index: u64,
    kvs: BTreeMap<String, Entry>,
    tombstones: BTreeMap<String, u64>,
    kvs_index: u64,
    sessions: BTreeMap<String, Session>,
    sessions_index: u64,
    lock_delays: HashMap<String, Instant>,
    log: ChangeLog,
    rng: Rng,
}

fn prefix_range<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Store {
    /// An empty store.
    pub(crate) fn new(config: StoreConfig, rng: Rng) -> Store {
        Store {
            config,
            index: 0,
            kvs: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            kvs_index: 0,
            sessions: BTreeMap::new(),
            sessions_index: 0,
            lock_delays: HashMap::new(),
            log: ChangeLog::default(),
            rng,
        }
    }

    /// The last index handed to a write (the "Raft index").
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether a write after index `since` touched what `watch` watches.
    pub(crate) fn changed_since(&self, watch: &Watch, since: u64) -> bool {
        self.log.changed_since(watch, since)
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    // ------------------------------------------------------------------ sessions

    /// Creates a session (`Session.Apply` with op `create`). Errors carry Consul's texts.
    pub fn session_create(
        &mut self,
        spec: SessionSpec,
        now: Instant,
    ) -> Result<String, StoreError> {
        let behavior = match spec.behavior.as_str() {
            "" | "release" => Behavior::Release,
            "delete" => Behavior::Delete,
            other => {
                return Err(StoreError(format!("Invalid Behavior setting '{other}'")));
            }
        };
        let mut ttl_duration = None;
        if !spec.ttl.is_empty() {
            let ttl_ns = parse_go_duration(&spec.ttl)
                .map_err(|e| StoreError(format!("Session TTL '{}' invalid: {e}", spec.ttl)))?;
            let min = nanos(self.config.min_session_ttl);
            let max = nanos(SESSION_TTL_MAX);
            if ttl_ns != 0 && (ttl_ns < min || ttl_ns > max) {
                return Err(StoreError(format!(
                    "Invalid Session TTL '{ttl_ns}', must be between [{}={}]",
                    format_go_duration(min),
                    format_go_duration(max)
                )));
            }
            if ttl_ns > 0 {
                ttl_duration = Some(Duration::from_nanos(ttl_ns as u64));
            }
        }
        if spec.node.is_empty() {
            return Err(StoreError("Must provide Node".to_string()));
        }
        if !spec.node.eq_ignore_ascii_case(&self.config.node_name) {
            return Err(StoreError("Missing node registration".to_string()));
        }
        let idx = self.next_index();
        let id = loop {
            let candidate = self.rng.uuid();
            if !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        let session = Session {
            id: id.clone(),
            name: spec.name,
            node: self.config.node_name.clone(),
            lock_delay_ns: spec.lock_delay_ns,
            behavior,
            ttl: spec.ttl,
            ttl_duration,
            node_checks: spec.node_checks,
            service_checks: spec.service_checks,
            checks: spec.checks,
            create_index: idx,
            modify_index: idx,
            expires_at: ttl_duration.map(|t| now + t * SESSION_TTL_MULTIPLIER),
        };
        self.sessions.insert(id.clone(), session);
        self.sessions_index = idx;
        self.log.record(idx, Touched::Session(id.clone()));
        Ok(id)
    }

    /// Destroys a session (`PUT /v1/session/destroy/<id>`): always a Raft write, a no-op for
    /// an unknown ID. Returns whether the session existed.
    pub fn session_destroy(&mut self, id: &str, now: Instant) -> bool {
        let idx = self.next_index();
        self.delete_session(idx, id, now)
    }

    /// Invalidates a session now, as a failed health check or an expired TTL would. Returns
    /// whether the session existed (nothing is written when it did not).
    pub fn session_invalidate(&mut self, id: &str, now: Instant) -> bool {
        if !self.sessions.contains_key(&id.to_ascii_lowercase()) {
            return false;
        }
        let idx = self.next_index();
        self.delete_session(idx, id, now)
    }

    fn delete_session(&mut self, idx: u64, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.remove(&id.to_ascii_lowercase()) else {
            return false;
        };
        self.sessions_index = idx;
        self.log.record(idx, Touched::Session(session.id.clone()));
        let delay = if session.lock_delay_ns > 0 {
            Duration::from_nanos(session.lock_delay_ns as u64).min(MAX_LOCK_DELAY)
        } else {
            Duration::ZERO
        };
        let held: Vec<String> = self
            .kvs
            .values()
            .filter(|e| {
                e.session
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&session.id))
            })
            .map(|e| e.key.clone())
            .collect();
        if delay > Duration::ZERO {
            self.lock_delays.retain(|_, until| *until > now);
        }
        for key in held {
            match session.behavior {
                Behavior::Release => {
                    if let Some(existing) = self.kvs.get(&key) {
                        let mut released = existing.clone();
                        released.session = None;
                        self.set_entry(idx, released, true);
                    }
                }
                Behavior::Delete => self.delete_entry(idx, &key),
            }
            if delay > Duration::ZERO {
                self.lock_delays.insert(key, now + delay);
            }
        }
        true
    }

    /// Renews a session's TTL (not a Raft write). `None` for an unknown session.
    pub fn session_renew(&mut self, id: &str, now: Instant) -> Option<Session> {
        let session = self.sessions.get_mut(&id.to_ascii_lowercase())?;
        if let Some(ttl) = session.ttl_duration {
            session.expires_at = Some(now + ttl * SESSION_TTL_MULTIPLIER);
        }
        Some(session.clone())
    }

    /// One session and the session table index.
    pub fn session_get(&self, id: &str) -> (u64, Option<Session>) {
        (
            self.sessions_index,
            self.sessions.get(&id.to_ascii_lowercase()).cloned(),
        )
    }

    /// All sessions (ordered by ID) and the session table index.
    pub fn session_list(&self) -> (u64, Vec<Session>) {
        (
            self.sessions_index,
            self.sessions.values().cloned().collect(),
        )
    }

    /// The sessions of one node and the session table index.
    pub fn node_sessions(&self, node: &str) -> (u64, Vec<Session>) {
        (
            self.sessions_index,
            self.sessions
                .values()
                .filter(|s| s.node.eq_ignore_ascii_case(node))
                .cloned()
                .collect(),
        )
    }

    /// Invalidates every TTL session whose TTL × 2 ran out by `now`; returns their IDs.
    pub fn expire_sessions(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in &expired {
            let idx = self.next_index();
            self.delete_session(idx, id, now);
        }
        expired
    }

    /// The earliest TTL expiry among live sessions.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.sessions.values().filter_map(|s| s.expires_at).min()
    }

    /// How long `key` still refuses acquires because of a lock-delay.
    pub fn lock_delay_remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        self.lock_delays
            .get(key)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    // ------------------------------------------------------------------ KV reads

    /// One key and the index a read of it reports.
    pub fn kv_get(&self, key: &str) -> (u64, Option<Entry>) {
        match self.kvs.get(key) {
            Some(e) => (e.modify_index, Some(e.clone())),
            None => (self.kvs_index, None),
        }
    }

    fn list_index(&self, prefix: &str, entries: &[Entry]) -> u64 {
        if prefix.is_empty() {
            return self.kvs_index;
        }
        let live = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        let dead = prefix_range(&self.tombstones, prefix)
            .map(|(_, idx)| *idx)
            .max()
            .unwrap_or(0);
        match live.max(dead) {
            0 => self.kvs_index,
            idx => idx,
        }
    }

    /// Every entry under `prefix` (key order) and the index a recursive read reports.
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<Entry>) {
        let entries: Vec<Entry> = prefix_range(&self.kvs, prefix)
            .map(|(_, e)| e.clone())
            .collect();
        (self.list_index(prefix, &entries), entries)
    }

    /// The keys under `prefix`, cut after the first `separator` past the prefix (deduplicated)
    /// when one is given, and the index.
    pub fn kv_keys(&self, prefix: &str, separator: &str) -> (u64, Vec<String>) {
        let (index, entries) = self.kv_list(prefix);
        let mut keys: Vec<String> = Vec::new();
        for e in entries {
            if separator.is_empty() {
                keys.push(e.key);
                continue;
            }
            let after = &e.key[prefix.len()..];
            match after.find(separator) {
                Some(pos) => {
                    let cut = e.key[..prefix.len() + pos + separator.len()].to_string();
                    if keys.last() != Some(&cut) {
                        keys.push(cut);
                    }
                }
                None => keys.push(e.key),
            }
        }
        (index, keys)
    }

    // ------------------------------------------------------------------ KV writes

    /// Consul's `kvsSetTxn`. Returns whether anything changed.
    fn set_entry(&mut self, idx: u64, mut entry: Entry, update_session: bool) -> bool {
        let existing = self.kvs.get(&entry.key);
        entry.create_index = existing.map_or(idx, |e| e.create_index);
        if !update_session {
            entry.session = existing.and_then(|e| e.session.clone());
        }
        if let Some(e) = existing {
            if e.same_content(&entry) {
                return false;
            }
        }
        entry.modify_index = idx;
        self.tombstones.remove(&entry.key);
        self.kvs_index = idx;
        self.log.record(idx, Touched::Key(entry.key.clone()));
        self.kvs.insert(entry.key.clone(), entry);
        true
    }

    /// Consul's `kvsDeleteTxn`: removes the key and leaves a tombstone.
    fn delete_entry(&mut self, idx: u64, key: &str) {
        if self.kvs.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), idx);
            self.kvs_index = idx;
            self.log.record(idx, Touched::Key(key.to_string()));
        }
    }

    fn new_entry(key: &str, value: Vec<u8>, flags: u64) -> Entry {
        Entry {
            key: key.to_string(),
            value,
            flags,
            session: None,
            lock_index: 0,
            create_index: 0,
            modify_index: 0,
        }
    }

    /// Plain `PUT`: always succeeds; keeps the Session, resets LockIndex to 0.
    pub fn kv_set(&mut self, key: &str, value: Vec<u8>, flags: u64) -> bool {
        let idx = self.next_index();
        self.set_entry(idx, Self::new_entry(key, value, flags), false);
        true
    }

    /// `PUT ?cas=N`: with 0 only creates; otherwise only when N is the ModifyIndex.
    pub fn kv_cas(&mut self, key: &str, value: Vec<u8>, flags: u64, cas: u64) -> bool {
        let idx = self.next_index();
        let ok = match self.kvs.get(key) {
            None => cas == 0,
            Some(e) => cas != 0 && e.modify_index == cas,
        };
        if ok {
            self.set_entry(idx, Self::new_entry(key, value, flags), false);
        }
        ok
    }

    /// `PUT ?acquire=<session>`.
    pub fn kv_lock(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
        now: Instant,
    ) -> Result<bool, StoreError> {
        // Lock-delay is enforced before the write reaches Raft.
        if self.lock_delay_remaining(key, now).is_some() {
            return Ok(false);
        }
        let idx = self.next_index();
        if session.is_empty() {
            return Err(StoreError("missing session".to_string()));
        }
        if !self.sessions.contains_key(&session.to_ascii_lowercase()) {
            return Err(StoreError(format!("invalid session {session:?}")));
        }
        let lock_index = match self.kvs.get(key) {
            Some(e) if e.session.as_deref() == Some(session) => e.lock_index,
            Some(e) if e.session.is_some() => return Ok(false),
            Some(e) => e.lock_index + 1,
            None => 1,
        };
        let mut entry = Self::new_entry(key, value, flags);
        entry.session = Some(session.to_string());
        entry.lock_index = lock_index;
        self.set_entry(idx, entry, true);
        Ok(true)
    }

    /// `PUT ?release=<session>`: only the holder can release.
    pub fn kv_unlock(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<bool, StoreError> {
        let idx = self.next_index();
        if session.is_empty() {
            return Err(StoreError("missing session".to_string()));
        }
        let lock_index = match self.kvs.get(key) {
            Some(e) if e.session.as_deref() == Some(session) => e.lock_index,
            _ => return Ok(false),
        };
        let mut entry = Self::new_entry(key, value, flags);
        entry.lock_index = lock_index;
        self.set_entry(idx, entry, true);
        Ok(true)
    }

    /// Plain `DELETE`: always succeeds.
    pub fn kv_delete(&mut self, key: &str) -> bool {
        let idx = self.next_index();
        self.delete_entry(idx, key);
        true
    }

    /// `DELETE ?cas=N`: deletes when N is the ModifyIndex; `true` also for a missing key.
    pub fn kv_delete_cas(&mut self, key: &str, cas: u64) -> bool {
        let idx = self.next_index();
        match self.kvs.get(key) {
            None => true,
            Some(e) if e.modify_index != cas => false,
            Some(_) => {
                self.delete_entry(idx, key);
                true
            }
        }
    }

    /// `DELETE ?recurse`: deletes every key under `prefix`, leaving one tombstone at the prefix.
    pub fn kv_delete_tree(&mut self, prefix: &str) -> bool {
        let idx = self.next_index();
        let keys: Vec<String> = prefix_range(&self.kvs, prefix)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return true;
        }
        for key in keys {
            self.kvs.remove(&key);
            self.log.record(idx, Touched::Key(key));
        }
        self.tombstones.insert(prefix.to_string(), idx);
        self.kvs_index = idx;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(
            StoreConfig {
                node_name: "node1".into(),
                min_session_ttl: Duration::from_secs(10),
            },
            Rng::seeded(42),
        )
    }

    fn spec() -> SessionSpec {
        SessionSpec {
            name: "s".into(),
            node: "node1".into(),
            lock_delay_ns: nanos(DEFAULT_LOCK_DELAY),
            behavior: String::new(),
            ttl: String::new(),
            node_checks: vec![SERF_CHECK_ID.into()],
            service_checks: None,
            checks: Vec::new(),
        }
    }

    #[test]
    fn ttl_bounds_use_go_texts() {
        let mut st = store();
        let now = Instant::now();
        let err = st
            .session_create(
                SessionSpec {
                    ttl: "5s".into(),
                    ..spec()
                },
                now,
            )
            .unwrap_err();
        assert_eq!(
            err.0,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
        );
        let err = st
            .session_create(
                SessionSpec {
                    ttl: "25h".into(),
                    ..spec()
                },
                now,
            )
            .unwrap_err();
        assert!(err.0.starts_with("Invalid Session TTL '90000000000000'"));
        let err = st
            .session_create(
                SessionSpec {
                    ttl: "abc".into(),
                    ..spec()
                },
                now,
            )
            .unwrap_err();
        assert_eq!(
            err.0,
            "Session TTL 'abc' invalid: time: invalid duration \"abc\""
        );
        assert!(st
            .session_create(
                SessionSpec {
                    ttl: "10s".into(),
                    ..spec()
                },
                now
            )
            .is_ok());
        assert!(st
            .session_create(
                SessionSpec {
                    ttl: "24h".into(),
                    ..spec()
                },
                now
            )
            .is_ok());
        assert!(st
            .session_create(
                SessionSpec {
                    ttl: "0s".into(),
                    ..spec()
                },
                now
            )
            .is_ok());
        assert_eq!(st.index(), 3, "rejected creates use no index");
    }

    #[test]
    fn behavior_and_node_are_checked() {
        let mut st = store();
        let now = Instant::now();
        let err = st
            .session_create(
                SessionSpec {
                    behavior: "explode".into(),
                    ..spec()
                },
                now,
            )
            .unwrap_err();
        assert_eq!(err.0, "Invalid Behavior setting 'explode'");
        let err = st
            .session_create(
                SessionSpec {
                    node: "other".into(),
                    ..spec()
                },
                now,
            )
            .unwrap_err();
        assert_eq!(err.0, "Missing node registration");
    }

    #[test]
    fn acquire_and_release_lock_index_rules() {
        let mut st = store();
        let now = Instant::now();
        let a = st.session_create(spec(), now).unwrap();
        let b = st.session_create(spec(), now).unwrap();
        assert_eq!(st.kv_lock("k", b"v".to_vec(), 0, &a, now), Ok(true));
        assert_eq!(st.kv_get("k").1.unwrap().lock_index, 1);
        // Same holder: LockIndex kept, value updated.
        assert_eq!(st.kv_lock("k", b"w".to_vec(), 0, &a, now), Ok(true));
        let e = st.kv_get("k").1.unwrap();
        assert_eq!((e.lock_index, e.value.as_slice()), (1, &b"w"[..]));
        // Other session: refused.
        assert_eq!(st.kv_lock("k", Vec::new(), 0, &b, now), Ok(false));
        // Release by non-holder refused, by holder clears session and keeps LockIndex.
        assert_eq!(st.kv_unlock("k", Vec::new(), 0, &b), Ok(false));
        assert_eq!(st.kv_unlock("k", b"w".to_vec(), 0, &a), Ok(true));
        let e = st.kv_get("k").1.unwrap();
        assert_eq!((e.lock_index, e.session.clone()), (1, None));
        // New acquire bumps; no lock-delay after a release.
        assert_eq!(st.kv_lock("k", Vec::new(), 0, &b, now), Ok(true));
        assert_eq!(st.kv_get("k").1.unwrap().lock_index, 2);
        // Unknown session is an error.
        assert_eq!(
            st.kv_lock("x", Vec::new(), 0, "nope", now),
            Err(StoreError("invalid session \"nope\"".into()))
        );
    }

    #[test]
    fn identical_rewrite_keeps_modify_index() {
        let mut st = store();
        st.kv_set("k", b"v".to_vec(), 7);
        let first = st.kv_get("k").1.unwrap().modify_index;
        st.kv_set("k", b"v".to_vec(), 7);
        assert_eq!(st.kv_get("k").1.unwrap().modify_index, first);
        assert!(st.index() > first, "the write still used an index");
        st.kv_set("k", b"v2".to_vec(), 7);
        assert!(st.kv_get("k").1.unwrap().modify_index > first);
    }

    #[test]
    fn plain_put_keeps_session_and_zeroes_lock_index() {
        let mut st = store();
        let now = Instant::now();
        let a = st.session_create(spec(), now).unwrap();
        st.kv_lock("k", Vec::new(), 0, &a, now).unwrap();
        st.kv_set("k", b"x".to_vec(), 0);
        let e = st.kv_get("k").1.unwrap();
        assert_eq!(e.session.as_deref(), Some(a.as_str()));
        assert_eq!(e.lock_index, 0);
    }

    #[test]
    fn invalidation_releases_with_capped_lock_delay() {
        let mut st = store();
        let now = Instant::now();
        let a = st
            .session_create(
                SessionSpec {
                    lock_delay_ns: 120_000_000_000,
                    ..spec()
                },
                now,
            )
            .unwrap();
        let b = st.session_create(spec(), now).unwrap();
        st.kv_lock("k", Vec::new(), 0, &a, now).unwrap();
        let before = st.kv_get("k").1.unwrap();
        assert!(st.session_invalidate(&a, now));
        let after = st.kv_get("k").1.unwrap();
        assert_eq!(after.session, None);
        assert_eq!(after.lock_index, before.lock_index);
        assert!(after.modify_index > before.modify_index);
        assert_eq!(st.lock_delay_remaining("k", now), Some(MAX_LOCK_DELAY));
        let idx = st.index();
        assert_eq!(st.kv_lock("k", Vec::new(), 0, &b, now), Ok(false));
        assert_eq!(st.index(), idx, "lock-delay refusal uses no index");
        let later = now + MAX_LOCK_DELAY;
        assert_eq!(st.kv_lock("k", Vec::new(), 0, &b, later), Ok(true));
        assert_eq!(st.kv_get("k").1.unwrap().lock_index, before.lock_index + 1);
    }

    #[test]
    fn default_and_zero_lock_delay() {
        let mut st = store();
        let now = Instant::now();
        let a = st.session_create(spec(), now).unwrap();
        let z = st
            .session_create(
                SessionSpec {
                    lock_delay_ns: 0,
                    ..spec()
                },
                now,
            )
            .unwrap();
        st.kv_lock("a", Vec::new(), 0, &a, now).unwrap();
        st.kv_lock("z", Vec::new(), 0, &z, now).unwrap();
        st.session_destroy(&a, now);
        st.session_destroy(&z, now);
        assert_eq!(st.lock_delay_remaining("a", now), Some(DEFAULT_LOCK_DELAY));
        assert_eq!(st.lock_delay_remaining("z", now), None);
    }

    #[test]
    fn delete_behavior_deletes_held_keys() {
        let mut st = store();
        let now = Instant::now();
        let a = st
            .session_create(
                SessionSpec {
                    behavior: "delete".into(),
                    ..spec()
                },
                now,
            )
            .unwrap();
        st.kv_lock("p/k", Vec::new(), 0, &a, now).unwrap();
        st.kv_set("p/other", Vec::new(), 0);
        st.session_destroy(&a, now);
        assert_eq!(st.kv_get("p/k").1, None);
        assert!(st.kv_get("p/other").1.is_some());
        assert!(st.lock_delay_remaining("p/k", now).is_some());
    }

    #[test]
    fn ttl_expiry_at_twice_the_ttl() {
        let mut st = store();
        let now = Instant::now();
        let a = st
            .session_create(
                SessionSpec {
                    ttl: "10s".into(),
                    ..spec()
                },
                now,
            )
            .unwrap();
        assert_eq!(st.next_expiry(), Some(now + Duration::from_secs(20)));
        assert!(st.expire_sessions(now + Duration::from_secs(19)).is_empty());
        // Renewal at 15s pushes expiry to 35s.
        assert!(st
            .session_renew(&a, now + Duration::from_secs(15))
            .is_some());
        assert!(st.expire_sessions(now + Duration::from_secs(34)).is_empty());
        assert_eq!(
            st.expire_sessions(now + Duration::from_secs(35)),
            vec![a.clone()]
        );
        assert!(st.session_renew(&a, now).is_none());
    }

    #[test]
    fn cas_rules() {
        let mut st = store();
        assert!(st.kv_cas("k", b"1".to_vec(), 0, 0));
        assert!(!st.kv_cas("k", b"2".to_vec(), 0, 0));
        let m = st.kv_get("k").1.unwrap().modify_index;
        assert!(!st.kv_cas("k", b"2".to_vec(), 0, m + 100));
        assert!(st.kv_cas("k", b"2".to_vec(), 0, m));
        assert!(!st.kv_cas("missing", b"2".to_vec(), 0, 5));
        let m = st.kv_get("k").1.unwrap().modify_index;
        assert!(!st.kv_delete_cas("k", 0));
        assert!(!st.kv_delete_cas("k", m + 1));
        assert!(st.kv_delete_cas("k", m));
        assert!(st.kv_delete_cas("k", m), "missing key: true");
    }

    #[test]
    fn read_indexes() {
        let mut st = store();
        st.kv_set("a/1", Vec::new(), 0);
        st.kv_set("b/1", Vec::new(), 0);
        let (idx, _) = st.kv_get("a/1");
        assert_eq!(idx, 1);
        assert_eq!(st.kv_get("missing").0, 2, "missing key: table index");
        assert_eq!(st.kv_list("a/").0, 1);
        assert_eq!(st.kv_list("").0, 2);
        assert_eq!(st.kv_list("zzz").0, 2);
        st.kv_delete("a/1");
        assert_eq!(st.kv_list("a/").0, 3, "tombstone counts");
        st.kv_set("c", Vec::new(), 0);
        assert_eq!(st.kv_list("a/").0, 3);
    }

    #[test]
    fn keys_with_separator() {
        let mut st = store();
        for k in [
            "web/bar",
            "web/foo",
            "web/subdir/x",
            "web/subdir/y",
            "other",
        ] {
            st.kv_set(k, Vec::new(), 0);
        }
        assert_eq!(
            st.kv_keys("web/", "/").1,
            vec!["web/bar", "web/foo", "web/subdir/"]
        );
        assert_eq!(st.kv_keys("web/", "").1.len(), 4);
    }
}
