//! Leader elections on Consul's leader-election guide: each candidate's session `PUT`s the
//! election key `NAME/leader` with `?acquire=<session>` and its value as the body; `true`
//! makes it the leader. The campaign is the mutex's api.Lock protocol on another
//! [`Claim`](crate::mutex::Claim) (flags 0, the value as the body, candidates queued in
//! `NAME/.candidates/`), so sessions, lock-delay, blocking queries, the local gate,
//! cancellation and `lost()` are the mutex's.
//!
//! # The term
//!
//! A mutex's token is the key's ModifyIndex read right after the grant, but a leader's
//! proclaims write the key again (new ModifyIndex) while the term must stay, and anyone must
//! be able to read the term from the key. LockIndex stays across proclaims (Consul keeps it
//! when the holding session acquires again) and grows by one with every new holder, but
//! restarts when the key is deleted (or rewritten without `?acquire=`, which is why the
//! mutex does not use it). So the term is `CreateIndex + LockIndex`: within one life of the
//! key, LockIndex grows; across a delete, the new key's CreateIndex is a later raft index
//! than every acquisition of the old key (each one a write of its own, the n-th at index
//! ≥ CreateIndex + n − 1), so `CreateIndex + LockIndex` of the old key is at most the
//! delete's index, below the new key's. A key rewritten without `?acquire=` (LockIndex 0) is
//! foreign data ([`crate::kinds::check_leader_key`]); a rewrite that lands between our read
//! and our `?acquire=` shows as a LockIndex that did not grow, and the campaign refuses it.

use std::sync::Arc;

use tumbler_core::{Error, LeaderInfo, LockName, Result};

use crate::api::{Acquire, Api, Block, KvPair};
use crate::backend::Inner;
use crate::kinds;
use crate::mutex::Claim;
use crate::session::Session;
use crate::watch::next_index;

/// The term of the leadership `pair` shows: `CreateIndex + LockIndex` (see the module docs).
pub(crate) fn term(pair: &KvPair) -> u64 {
    pair.create_index.saturating_add(pair.lock_index)
}

/// Campaigns in the election `name` advertising `value`.
pub(crate) async fn campaign(
    inner: &Arc<Inner>,
    name: &LockName,
    value: Vec<u8>,
    wait: bool,
) -> Result<Option<tumbler_core::Hold>> {
    let claim = Claim::election(&inner.layout.folder(name)?, value);
    crate::mutex::acquire_claim(inner, name, claim, wait).await
}

/// After our `?acquire=`: the key's `(CreateIndex, LockIndex)` was `before` when we read it
/// free or held by another session; our grant must have a higher LockIndex on the same key
/// (or a new key). Otherwise the key was rewritten meanwhile and terms could repeat.
pub(crate) fn check_advanced(
    name: &LockName,
    pair: &KvPair,
    before: Option<(u64, u64)>,
) -> Result<()> {
    match before {
        Some((create, lock)) if create == pair.create_index && pair.lock_index <= lock => {
            Err(Error::Conflict {
                name: name.clone(),
                problem: format!(
                    "the Consul key {} was rewritten without ?acquire= while we acquired it \
                     (LockIndex {} after {lock}), so its terms could repeat; delete the key or \
                     stop what writes it",
                    pair.key, pair.lock_index
                ),
            })
        }
        _ => Ok(()),
    }
}

/// The leadership the election key shows, or `None` when no session holds it (or there is
/// no key). A key a Go lock client uses, or with foreign data, is a `Conflict`.
fn leader_of(name: &LockName, key: &str, pair: Option<&KvPair>) -> Result<Option<LeaderInfo>> {
    let Some(pair) = pair else { return Ok(None) };
    kinds::check_leader_key(name, pair)?;
    if pair.flags != 0 {
        let other = if pair.flags == crate::layout::LOCK_FLAGS {
            "mutex (api.Lock's flags)"
        } else {
            "semaphore (api.Semaphore's flags)"
        };
        return Err(Error::Conflict {
            name: name.clone(),
            problem: format!(
                "it is in use as a {other} (Consul key {key}), so it cannot be used as an \
                 election at the same time; use another name for the election"
            ),
        });
    }
    Ok(pair.session.as_ref().map(|session| LeaderInfo {
        value: pair.value.clone(),
        term: term(pair),
        id: session.clone(),
    }))
}

/// `leader()`: one read of the election key.
pub(crate) async fn leader(inner: &Inner, name: &LockName) -> Result<Option<LeaderInfo>> {
    let key = inner.layout.folder(name)?.leader_key();
    let read = inner.api.kv_get(&key, None).await?;
    leader_of(name, &key, read.value.as_ref())
}

/// `leader_changed()`: blocking queries on the election key from the last index, each answer
/// read again (Consul may answer a blocking query with nothing changed), until the leadership
/// differs from `seen`. Each query waits at most half the request timeout and is given up
/// after the request timeout in all, so an agent that stops answering gives `Timeout` within
/// the request timeout (and one that refuses, a `Connection` error at once). A term below
/// `seen`'s means the key was rewritten: `Conflict`.
pub(crate) async fn leader_changed(
    inner: &Inner,
    name: &LockName,
    seen: Option<&LeaderInfo>,
) -> Result<Option<LeaderInfo>> {
    let key = inner.layout.folder(name)?.leader_key();
    let api = &inner.api;
    let timeout = api.request_timeout();
    let wait = api.query_wait().min(timeout / 2);
    let mut block = None;
    loop {
        let read = match block {
            None => api.kv_get(&key, None).await?,
            Some(block) => api.kv_get_within(&key, block, timeout).await?,
        };
        let now = leader_of(name, &key, read.value.as_ref())?;
        if now.as_ref() != seen {
            if let (Some(now), Some(seen)) = (&now, seen) {
                if now.term < seen.term {
                    return Err(Error::Conflict {
                        name: name.clone(),
                        problem: format!(
                            "the term of the Consul key {key} went back from {} to {} (the key \
                             was rewritten without ?acquire=); stop what writes it",
                            seen.term, now.term
                        ),
                    });
                }
            }
            return Ok(now);
        }
        let last = block.map_or(1, |b: Block| b.index);
        block = Some(Block {
            index: next_index(last, read.index),
            wait,
        });
    }
}

/// Proclaims `value` for the leadership of `session` with term `term` on `key`: checks that
/// the key is still that leadership (nothing is written otherwise), `PUT ?acquire=` again with
/// the value (Consul keeps the lock and its LockIndex for the session holding it), and reads
/// the key back: a different term means the acquire took a new lock, which is given back.
pub(crate) async fn proclaim(
    api: &Api,
    name: &LockName,
    key: &str,
    session: &Arc<Session>,
    term_held: u64,
    value: &[u8],
) -> Result<()> {
    let ours = |pair: &KvPair| pair.held_by(session.id()) && term(pair) == term_held;
    let not_owner = || Error::NotOwner { name: name.clone() };
    if !session.is_live() {
        return Err(not_owner());
    }
    let read = api.kv_get(key, None).await?;
    if !read.value.as_ref().is_some_and(ours) {
        return Err(not_owner());
    }
    match api.kv_acquire(key, session.id(), 0, value.to_vec()).await? {
        Acquire::Acquired => {}
        Acquire::Busy | Acquire::InvalidSession => return Err(not_owner()),
    }
    let back = api.kv_get(key, None).await?;
    match back.value {
        Some(pair) if ours(&pair) => Ok(()),
        Some(pair) if pair.held_by(session.id()) => {
            // Lost and taken again by our own acquire: that is not our leadership.
            api.kv_release(key, session.id(), 0).await?;
            Err(not_owner())
        }
        _ => Err(not_owner()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(flags: u64, lock_index: u64, create_index: u64, session: Option<&str>) -> KvPair {
        KvPair {
            key: "p/e/leader".into(),
            flags,
            value: b"v".to_vec(),
            session: session.map(str::to_string),
            lock_index,
            create_index,
            modify_index: create_index + 5,
        }
    }

    #[test]
    fn terms_come_from_create_and_lock_index() {
        let name = LockName::new("e").unwrap();
        let held = pair(0, 3, 10, Some("s"));
        assert_eq!(term(&held), 13);
        let seen = leader_of(&name, "p/e/leader", Some(&held))
            .unwrap()
            .unwrap();
        assert_eq!((seen.term, seen.id.as_str()), (13, "s"));
        let free = pair(0, 3, 10, None);
        assert_eq!(leader_of(&name, "p/e/leader", Some(&free)).unwrap(), None);
        assert_eq!(leader_of(&name, "p/e/leader", None).unwrap(), None);
    }

    #[test]
    fn rewritten_and_lock_client_keys_conflict() {
        let name = LockName::new("e").unwrap();
        for flags in [crate::layout::LOCK_FLAGS, crate::layout::SEMAPHORE_FLAGS, 7] {
            let p = pair(flags, 1, 10, Some("s"));
            assert!(matches!(
                leader_of(&name, "p/e/leader", Some(&p)),
                Err(Error::Conflict { .. })
            ));
        }
        let plain = pair(0, 0, 10, Some("s"));
        assert!(leader_of(&name, "p/e/leader", Some(&plain)).is_err());
        // Our acquire must raise LockIndex on the same key, or be a new key.
        let ours = pair(0, 4, 10, Some("s"));
        assert!(check_advanced(&name, &ours, Some((10, 3))).is_ok());
        assert!(check_advanced(&name, &ours, Some((10, 4))).is_err());
        assert!(check_advanced(&name, &ours, Some((8, 9))).is_ok());
        assert!(check_advanced(&name, &ours, None).is_ok());
    }
}
