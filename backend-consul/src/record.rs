//! The JSON values stored in KV: api.Semaphore's holders record (with tumbler's additions), the
//! read-write lock record, a semaphore contender's permit count, and the revocation marker
//! written into a held mutex key.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tumbler_core::LockName;

use crate::api::KvPair;

/// api.Semaphore's `semaphoreLock`, stored at `NAME/.lock`: `{"Limit":n,"Holders":{"<session>":true}}`.
///
/// Go clients count one permit per holder entry; tumbler reads each holder's permit count from
/// its contender key ([`ContenderValue`]). `TumblerRevoke` is tumbler's own field (a Go client
/// that rewrites the record drops it, which only loses a pending revocation request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SemaphoreRecord {
    /// The limit every contender must agree on.
    #[serde(rename = "Limit")]
    pub(crate) limit: i64,
    /// Session IDs of the holders.
    #[serde(rename = "Holders", default, deserialize_with = "null_as_default")]
    pub(crate) holders: BTreeMap<String, bool>,
    /// The nonce of the last revocation request.
    #[serde(
        rename = "TumblerRevoke",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) revoke: Option<String>,
}

/// The value of a tumbler semaphore contender key: how many permits the lease takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContenderValue {
    /// Permits of this lease.
    #[serde(rename = "TumblerPermits")]
    pub(crate) permits: u32,
}

impl ContenderValue {
    /// The permits a contender with `value` holds: ours say so, a Go client's count 1.
    pub(crate) fn permits_of(value: &[u8]) -> u32 {
        serde_json::from_slice::<ContenderValue>(value)
            .map(|v| v.permits.max(1))
            .unwrap_or(1)
    }

    /// The encoded value.
    pub(crate) fn encode(self) -> Vec<u8> {
        serde_json::to_vec(&self).unwrap_or_default()
    }
}

/// The read-write lock record at `NAME/.rwlock`. Entries are lease IDs whose liveness is their
/// contender key `NAME/.rw/<lease>` being held by a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RwRecord {
    /// The lease holding the write side.
    #[serde(rename = "Writer", default)]
    pub(crate) writer: Option<String>,
    /// Leases holding the read side.
    #[serde(rename = "Readers", default, deserialize_with = "null_as_default")]
    pub(crate) readers: Vec<String>,
    /// Writers waiting, in arrival order; while any is live, no new reader is admitted.
    #[serde(
        rename = "WaitingWriters",
        default,
        deserialize_with = "null_as_default"
    )]
    pub(crate) waiting: Vec<String>,
    /// The nonce of the last revocation request.
    #[serde(rename = "Revoke", default, skip_serializing_if = "Option::is_none")]
    pub(crate) revoke: Option<String>,
}

/// Written into a held mutex key's value by `request_revoke` (with `?cas=`, so the holder's
/// session stays): the holder's monitor sees it. The next acquisition writes an empty value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RevokeMarker {
    /// The request's nonce.
    #[serde(rename = "TumblerRevoke")]
    pub(crate) nonce: String,
    /// The holder's fencing token (the key's ModifyIndex before the marker was written).
    #[serde(rename = "Token")]
    pub(crate) token: u64,
}

impl RevokeMarker {
    /// The marker in a mutex key's value, if there is one.
    pub(crate) fn parse(value: &[u8]) -> Option<RevokeMarker> {
        if value.is_empty() {
            return None;
        }
        serde_json::from_slice(value).ok()
    }
}

/// Decodes the record at `pair` (an empty value is an empty record). A value that does not
/// decode is [`tumbler_core::Error::Conflict`] naming the key: someone else's data is there.
pub(crate) fn decode_record<T: DeserializeOwned + Default>(
    name: &LockName,
    pair: &KvPair,
    what: &str,
) -> tumbler_core::Result<T> {
    if pair.value.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&pair.value).map_err(|e| tumbler_core::Error::Conflict {
        name: name.clone(),
        problem: format!(
            "the Consul key {} should hold {what}, but its value does not decode ({e}); delete \
             the key if nothing uses it, or use another name",
            pair.key
        ),
    })
}

/// Encodes a record; these types always serialize.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A fresh nonce for a revocation request.
pub(crate) fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_semaphore_records() {
        let r: SemaphoreRecord =
            serde_json::from_str(r#"{"Limit":3,"Holders":{"a":true,"b":true}}"#).unwrap();
        assert_eq!(r.limit, 3);
        assert_eq!(r.holders.len(), 2);
        let empty: SemaphoreRecord = serde_json::from_str(r#"{"Limit":1,"Holders":null}"#).unwrap();
        assert!(empty.holders.is_empty());
        let text = String::from_utf8(encode(&r)).unwrap();
        assert_eq!(text, r#"{"Limit":3,"Holders":{"a":true,"b":true}}"#);
    }

    #[test]
    fn permits_default_to_one() {
        assert_eq!(ContenderValue::permits_of(b""), 1);
        assert_eq!(ContenderValue::permits_of(b"go client data"), 1);
        assert_eq!(
            ContenderValue::permits_of(&ContenderValue { permits: 4 }.encode()),
            4
        );
    }

    #[test]
    fn revoke_marker_round_trip() {
        let m = RevokeMarker {
            nonce: nonce(),
            token: 42,
        };
        assert_eq!(RevokeMarker::parse(&encode(&m)), Some(m));
        assert_eq!(RevokeMarker::parse(b"user value"), None);
        assert_eq!(RevokeMarker::parse(b""), None);
    }
}
