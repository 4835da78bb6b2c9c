//! The KV endpoint: reads (optionally blocking), `?acquire=`, `?release=`, `?cas=`, deletes.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tumbler_core::{Error, Result};

use super::{Api, Call, BACKEND};

/// One KV entry as Consul returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KvPair {
    /// The full key.
    pub(crate) key: String,
    /// The entry's flags.
    pub(crate) flags: u64,
    /// The value (empty when Consul sent `null`).
    pub(crate) value: Vec<u8>,
    /// The session holding the key, if any.
    pub(crate) session: Option<String>,
    /// How many times a session acquired the key since it was (re)written.
    pub(crate) lock_index: u64,
    /// The index that created the key.
    pub(crate) create_index: u64,
    /// The index of the last write to the key.
    pub(crate) modify_index: u64,
}

impl KvPair {
    /// Whether `session` holds this key (session IDs compare case-insensitively, as Consul's).
    pub(crate) fn held_by(&self, session: &str) -> bool {
        self.session
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(session))
    }

    /// Whether any session holds this key.
    pub(crate) fn is_held(&self) -> bool {
        self.session.as_deref().is_some_and(|s| !s.is_empty())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPair {
    key: String,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
}

/// Makes a read a blocking query: wait until the index passes `index`, at most `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// The index last seen (`X-Consul-Index`).
    pub(crate) index: u64,
    /// The longest wait.
    pub(crate) wait: Duration,
}

/// A read's result with the `X-Consul-Index` it was answered at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queried<T> {
    /// What was read.
    pub(crate) value: T,
    /// `X-Consul-Index` (0 if the agent sent none).
    pub(crate) index: u64,
}

/// The outcome of `PUT ?acquire=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// The session now holds the key.
    Acquired,
    /// Another session holds it, or it is under lock-delay.
    Busy,
    /// The session does not exist (any more).
    InvalidSession,
}

impl Api {
    /// `GET /v1/kv/<key>`: the entry, or `None` when there is none.
    pub(crate) async fn kv_get(
        &self,
        key: &str,
        block: Option<Block>,
    ) -> Result<Queried<Option<KvPair>>> {
        let pairs = self.kv_read(key, false, block).await?;
        Ok(Queried {
            value: pairs.value.into_iter().find(|p| p.key == key),
            index: pairs.index,
        })
    }

    /// `GET /v1/kv/<prefix>?recurse`: every entry under `prefix` (none is an empty list).
    pub(crate) async fn kv_list(
        &self,
        prefix: &str,
        block: Option<Block>,
    ) -> Result<Queried<Vec<KvPair>>> {
        self.kv_read(prefix, true, block).await
    }

    /// `GET /v1/kv/<key>` as a blocking query that gives up (with [`Error::Timeout`]) after
    /// `timeout` in all, answer included: for followers that must hear of an agent that stopped
    /// answering within a bound (`timeout` should leave room for the answer after `block.wait`
    /// and Consul's jitter of up to `wait / 16`).
    pub(crate) async fn kv_get_within(
        &self,
        key: &str,
        block: Block,
        timeout: Duration,
    ) -> Result<Queried<Option<KvPair>>> {
        let pairs = self
            .kv_read_within(key, false, Some(block), timeout)
            .await?;
        Ok(Queried {
            value: pairs.value.into_iter().find(|p| p.key == key),
            index: pairs.index,
        })
    }

    async fn kv_read(
        &self,
        key: &str,
        recurse: bool,
        block: Option<Block>,
    ) -> Result<Queried<Vec<KvPair>>> {
        let timeout = match block {
            Some(b) => self.blocking_timeout(b.wait),
            None => self.request_timeout,
        };
        self.kv_read_within(key, recurse, block, timeout).await
    }

    async fn kv_read_within(
        &self,
        key: &str,
        recurse: bool,
        block: Option<Block>,
        timeout: Duration,
    ) -> Result<Queried<Vec<KvPair>>> {
        let what = if recurse {
            format!("list of {key}")
        } else {
            format!("read of {key}")
        };
        let mut query: Vec<(&str, String)> = Vec::new();
        if recurse {
            query.push(("recurse", String::new()));
        }
        if let Some(b) = block {
            query.push(("index", b.index.to_string()));
            query.push(("wait", go_duration(b.wait)));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let req = self.request(Method::GET, &format!("/v1/kv/{key}"), &query, timeout);
        let call = if block.is_some() {
            Call::Blocking
        } else {
            Call::Ordinary
        };
        let body = self.call(req, &what, call).await?;
        let index = body.index.unwrap_or(0);
        match body.status {
            StatusCode::NOT_FOUND => Ok(Queried {
                value: Vec::new(),
                index,
            }),
            StatusCode::OK => {
                let raw: Vec<RawPair> = serde_json::from_slice(&body.bytes).map_err(|e| {
                    Error::backend(BACKEND, format!("{what}: unexpected answer: {e}"))
                })?;
                let value = raw
                    .into_iter()
                    .map(decode_pair)
                    .collect::<Result<Vec<_>>>()?;
                Ok(Queried { value, index })
            }
            status => Err(self.status_error(&what, status, &body.bytes)),
        }
    }

    /// `PUT /v1/kv/<key>?acquire=<session>&flags=<flags>` with `value` as the body.
    pub(crate) async fn kv_acquire(
        &self,
        key: &str,
        session: &str,
        flags: u64,
        value: Vec<u8>,
    ) -> Result<Acquire> {
        let what = format!("acquire of {key}");
        let req = self
            .request(
                Method::PUT,
                &format!("/v1/kv/{key}"),
                &[("acquire", session), ("flags", &flags.to_string())],
                self.request_timeout,
            )
            .body(value);
        match self.put_bool(req, &what).await {
            Ok(true) => Ok(Acquire::Acquired),
            Ok(false) => Ok(Acquire::Busy),
            Err(Error::Backend { source, .. })
                if source
                    .to_string()
                    .to_ascii_lowercase()
                    .contains("invalid session") =>
            {
                Ok(Acquire::InvalidSession)
            }
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/kv/<key>?release=<session>&flags=<flags>` (empty value): `false` when the
    /// session did not hold the key.
    pub(crate) async fn kv_release(&self, key: &str, session: &str, flags: u64) -> Result<bool> {
        let what = format!("release of {key}");
        let req = self.request(
            Method::PUT,
            &format!("/v1/kv/{key}"),
            &[("release", session), ("flags", &flags.to_string())],
            self.request_timeout,
        );
        self.put_bool(req, &what).await
    }

    /// `PUT /v1/kv/<key>?cas=<index>&flags=<flags>`: writes only if the key's ModifyIndex is
    /// still `cas` (0: only if the key does not exist).
    pub(crate) async fn kv_cas(
        &self,
        key: &str,
        flags: u64,
        value: Vec<u8>,
        cas: u64,
    ) -> Result<bool> {
        let what = format!("update of {key}");
        let req = self
            .request(
                Method::PUT,
                &format!("/v1/kv/{key}"),
                &[("cas", &cas.to_string()), ("flags", &flags.to_string())],
                self.request_timeout,
            )
            .body(value);
        self.put_bool(req, &what).await
    }

    /// `DELETE /v1/kv/<key>?cas=<index>`: deletes only if the ModifyIndex is still `cas`.
    pub(crate) async fn kv_delete_cas(&self, key: &str, cas: u64) -> Result<bool> {
        let what = format!("delete of {key}");
        let req = self.request(
            Method::DELETE,
            &format!("/v1/kv/{key}"),
            &[("cas", &cas.to_string())],
            self.request_timeout,
        );
        self.put_bool(req, &what).await
    }

    /// `DELETE /v1/kv/<key>`.
    pub(crate) async fn kv_delete(&self, key: &str) -> Result<()> {
        let what = format!("delete of {key}");
        let req = self.request(
            Method::DELETE,
            &format!("/v1/kv/{key}"),
            &[],
            self.request_timeout,
        );
        self.put_bool(req, &what).await.map(|_| ())
    }

    /// Sends a write that answers `true` or `false`.
    async fn put_bool(&self, req: reqwest::RequestBuilder, what: &str) -> Result<bool> {
        let body = self.call(req, what, Call::Ordinary).await?;
        if body.status != StatusCode::OK {
            return Err(self.status_error(what, body.status, &body.bytes));
        }
        match body.bytes.trim_ascii() {
            b"true" => Ok(true),
            b"false" => Ok(false),
            other => Err(Error::backend(
                BACKEND,
                format!(
                    "{what}: expected true or false, got {:?}",
                    String::from_utf8_lossy(other)
                ),
            )),
        }
    }
}

fn decode_pair(raw: RawPair) -> Result<KvPair> {
    let value = match raw.value {
        None => Vec::new(),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| {
                Error::backend(
                    BACKEND,
                    format!("the value of {} is not valid base64: {e}", raw.key),
                )
            })?,
    };
    Ok(KvPair {
        key: raw.key,
        flags: raw.flags,
        value,
        session: raw.session.filter(|s| !s.is_empty()),
        lock_index: raw.lock_index,
        create_index: raw.create_index,
        modify_index: raw.modify_index,
    })
}

/// A duration as Go's `time.ParseDuration` reads it, in whole milliseconds (at least 1ms, so
/// that it never means "the default wait").
pub(crate) fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_go() {
        assert_eq!(go_duration(Duration::from_secs(2)), "2000ms");
        assert_eq!(go_duration(Duration::ZERO), "1ms");
    }

    #[test]
    fn pairs_decode() {
        let raw: Vec<RawPair> = serde_json::from_str(
            r#"[{"LockIndex":1,"Key":"k","Flags":7,"Value":"aGk=","Session":"S","CreateIndex":3,"ModifyIndex":4},
                {"LockIndex":0,"Key":"e","Flags":0,"Value":null,"CreateIndex":5,"ModifyIndex":5}]"#,
        )
        .unwrap();
        let pairs: Vec<KvPair> = raw.into_iter().map(|r| decode_pair(r).unwrap()).collect();
        assert_eq!(pairs[0].value, b"hi");
        assert!(pairs[0].held_by("s"));
        assert!(!pairs[1].is_held());
        assert_eq!(pairs[1].value, b"");
        assert_eq!((pairs[0].create_index, pairs[0].modify_index), (3, 4));
        assert_eq!(pairs[0].lock_index, 1);
    }
}
