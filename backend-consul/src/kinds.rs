//! One kind per name: while a name is used (held or waited on) by a mutex, a semaphore or a
//! read-write lock, the other two kinds are refused with [`Error::Conflict`] naming both; and a
//! key of the name holding data that neither tumbler nor Consul's own lock clients wrote is a
//! [`Error::Conflict`] naming the key.
//!
//! Each acquisition first puts its own key (the mutex key, a semaphore contender, a read-write
//! contender), then lists the name's folder and looks for the other kinds. Of two acquisitions
//! of different kinds, the one that lists last sees the other's key, so they never both hold
//! (both may be refused). A mutex checks again right after its `?acquire=`, since its key is
//! the one it acquires. Keys of longer names (`NAME/sub/…`) are not looked at: nested names
//! are independent locks. An election (`NAME/leader`, `NAME/.candidates/…`) is one more kind.

use std::fmt;

use tumbler_core::{Error, LockName, Result};

use crate::api::KvPair;
use crate::layout::{Entry, Folder, LOCK_FLAGS, RWLOCK_FLAGS, SEMAPHORE_FLAGS};
use crate::record::{decode_record, RwRecord, SemaphoreRecord};

/// The primitives that can use a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A mutex (api.Lock's key `NAME/.lock` and tumbler's queue `NAME/.queue/…`).
    Mutex,
    /// A semaphore (api.Semaphore's contenders `NAME/<session>` and record `NAME/.lock`).
    Semaphore,
    /// A read-write lock (`NAME/.rwlock`, `NAME/.rw/…`).
    RwLock,
    /// An election (the guide's key `NAME/leader` and tumbler's `NAME/.candidates/…`).
    Election,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Mutex => "mutex",
            Kind::Semaphore => "semaphore",
            Kind::RwLock => "read-write lock",
            Kind::Election => "election",
        })
    }
}

/// Fails with [`Error::Conflict`] if the listing of `folder` shows foreign data at one of the
/// name's keys, or the name in use by a kind other than `mine`.
pub(crate) fn check(mine: Kind, name: &LockName, folder: &Folder, pairs: &[KvPair]) -> Result<()> {
    check_foreign(name, folder, pairs)?;
    let lock_client_key = (mine == Kind::Election)
        .then(|| lock_client_on_leader_key(folder, pairs))
        .flatten();
    if let Some((other, key)) = lock_client_key
        .into_iter()
        .chain(users(folder, pairs))
        .find(|(kind, _)| *kind != mine)
    {
        return Err(Error::Conflict {
            name: name.clone(),
            problem: format!(
                "it is in use as a {other} (Consul key {key}), so it cannot be used as a {mine} \
                 at the same time; use another name for the {mine}"
            ),
        });
    }
    Ok(())
}

/// Fails with [`Error::Conflict`] naming the key if a key of the name holds data that is not
/// a lock's: unknown flags at `NAME/.lock` or `NAME/.rwlock`, or a record that does not decode.
pub(crate) fn check_foreign(name: &LockName, folder: &Folder, pairs: &[KvPair]) -> Result<()> {
    for pair in pairs {
        match folder.classify(&pair.key) {
            Entry::Lock => match pair.flags {
                LOCK_FLAGS => {}
                SEMAPHORE_FLAGS => {
                    decode_record::<SemaphoreRecord>(name, pair, "a semaphore's holders record")?;
                }
                flags => return Err(foreign(name, pair, flags, "api.Lock's or api.Semaphore's")),
            },
            Entry::RwRecord => {
                if pair.flags != RWLOCK_FLAGS {
                    return Err(foreign(
                        name,
                        pair,
                        pair.flags,
                        "tumbler's read-write lock's",
                    ));
                }
                decode_record::<RwRecord>(name, pair, "a read-write lock's record")?;
            }
            Entry::Leader => check_leader_key(name, pair)?,
            _ => {}
        }
    }
    Ok(())
}

/// A Go api.Lock or api.Semaphore client's flags on the election key: that key is in use as a
/// mutex or semaphore (as api.Lock refuses a key without its flags, we refuse one with them).
fn lock_client_on_leader_key<'a>(folder: &Folder, pairs: &'a [KvPair]) -> Option<(Kind, &'a str)> {
    let pair = pairs
        .iter()
        .find(|p| folder.classify(&p.key) == Entry::Leader)?;
    match pair.flags {
        LOCK_FLAGS => Some((Kind::Mutex, pair.key.as_str())),
        SEMAPHORE_FLAGS => Some((Kind::Semaphore, pair.key.as_str())),
        _ => None,
    }
}

/// Fails with [`Error::Conflict`] naming the key if the election key holds what neither a
/// candidate (tumbler's or the guide's, `?acquire=`) nor a Go lock client wrote: unknown
/// flags, or flags 0 with LockIndex 0 (written without `?acquire=`, which restarts the
/// LockIndex that terms are made of).
pub(crate) fn check_leader_key(name: &LockName, pair: &KvPair) -> Result<()> {
    match pair.flags {
        LOCK_FLAGS | SEMAPHORE_FLAGS => Ok(()),
        0 if pair.lock_index == 0 => Err(Error::Conflict {
            name: name.clone(),
            problem: format!(
                "the Consul key {} was written without ?acquire= (LockIndex 0), so it is no \
                 election's key and terms read from it could repeat; delete the key if nothing \
                 uses it, or use another name",
                pair.key
            ),
        }),
        0 => Ok(()),
        flags => Err(foreign(name, pair, flags, "0 (an election's)")),
    }
}

fn foreign(name: &LockName, pair: &KvPair, flags: u64, expected: &str) -> Error {
    Error::Conflict {
        name: name.clone(),
        problem: format!(
            "the Consul key {} holds data tumbler did not write (flags {flags:#x}, not {expected}); \
             delete the key if nothing uses it, or use another name",
            pair.key
        ),
    }
}

/// The live uses of the name shown by a listing of its folder, with the key that shows each.
fn users<'a>(folder: &Folder, pairs: &'a [KvPair]) -> impl Iterator<Item = (Kind, &'a str)> {
    let folder = folder.clone();
    pairs.iter().filter_map(move |pair| {
        let kind = match folder.classify(&pair.key) {
            Entry::Lock if pair.flags == LOCK_FLAGS && pair.is_held() => Kind::Mutex,
            Entry::Lock if pair.flags == SEMAPHORE_FLAGS && has_live_holder(pair, pairs) => {
                Kind::Semaphore
            }
            Entry::Queued(_) if pair.is_held() => Kind::Mutex,
            Entry::Contender(session) if pair.flags == SEMAPHORE_FLAGS && pair.held_by(session) => {
                Kind::Semaphore
            }
            Entry::RwContender(_) if pair.is_held() => Kind::RwLock,
            Entry::Leader if pair.flags == 0 && pair.is_held() => Kind::Election,
            Entry::Candidate(_) if pair.is_held() => Kind::Election,
            _ => return None,
        };
        Some((kind, pair.key.as_str()))
    })
}

/// Whether a semaphore record lists a holder that is alive (api.Semaphore's rule: its session
/// holds a key of the listing).
fn has_live_holder(record: &KvPair, pairs: &[KvPair]) -> bool {
    let Ok(record) = serde_json::from_slice::<SemaphoreRecord>(&record.value) else {
        return false;
    };
    record
        .holders
        .keys()
        .any(|holder| pairs.iter().any(|p| p.held_by(holder)))
}
