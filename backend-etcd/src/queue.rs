//! What the keys directly under one lock say: who is queued in which order, as which kind of
//! primitive, and who holds. Acquisition and `state()` both read a lock through [`Queue`].
//!
//! Rules (the same for every store, see lockcore's contract):
//! - **Nested names are independent**: keys of `NAME/child` are skipped. (They are still read:
//!   no key range holds exactly a lock's own keys while `NAME/<lease hex>` stays Go's key, so
//!   a name with many busy nested locks costs a larger read per check.)
//! - **One name, one kind**: the kind of a name is the kind of its oldest key; a contender of
//!   another kind gets [`Error::Conflict`] naming both (and takes its key away again), so a
//!   mistaken client never disturbs the ones already there.
//! - **Foreign data is a conflict**: a key directly under `NAME/` that neither tumbler nor Go's
//!   Mutex writes, or one of ours with a value we never write, gives [`Error::Conflict`]
//!   naming the key.
//! - **An election is not a mutex**: both put `NAME/<lease hex>` (Go's recipes do), and the value
//!   tells them apart ([`crate::keys::role_of`]): a campaign on a name held as a mutex, or a
//!   mutex on a name with a candidate, is a kind conflict like any other.
//! - **A semaphore's limit is recorded** in every contender's value; a contender that finds an
//!   earlier one with another limit gets [`Error::Conflict`].

use etcd_client::KeyValue;
use tumbler_core::{Error, HoldMode, HolderInfo, LeaderInfo, LockName, Result};

use crate::keys::{
    classify, holder_id, parse_permits, role_of, Classified, KeyRole, Kind, DOWNGRADED,
};
use crate::watch::{Note, Target};

/// One contender of the lock.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) key: Vec<u8>,
    pub(crate) role: KeyRole,
    holder: String,
    pub(crate) create_revision: i64,
    /// The revision of the key's last put (its creation, or its move to the hold lease).
    pub(crate) mod_revision: i64,
    /// The lease the key is attached to (the waiting or the hold lease for ours).
    pub(crate) lease: i64,
    value: Vec<u8>,
}

impl Entry {
    /// Whether this contender shares the lock with readers (a reader or a downgraded writer).
    fn shares(&self) -> bool {
        self.role == KeyRole::Read || (self.role == KeyRole::Write && self.value == DOWNGRADED)
    }

    /// `(count, limit)` of a semaphore contender (checked when read).
    fn permits(&self) -> (u32, u32) {
        parse_permits(&self.value).unwrap_or((0, 0))
    }

    fn key_text(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// What a contender wants, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Exclusive,
    Read,
    Write,
    Permits {
        count: u32,
        limit: u32,
    },
    /// An election candidate (its proposal is the key's value).
    Leader,
}

impl Want {
    /// The role of the key this contender puts.
    pub(crate) fn role(self) -> KeyRole {
        match self {
            Want::Exclusive => KeyRole::Mutex,
            Want::Read => KeyRole::Read,
            Want::Write => KeyRole::Write,
            Want::Permits { .. } => KeyRole::Permits,
            Want::Leader => KeyRole::Leader,
        }
    }

    /// The value of the key this contender puts: `<permits>/<limit>` for a semaphore, the
    /// candidate's `proposal` in an election, else nothing.
    pub(crate) fn value(self, proposal: &[u8]) -> Vec<u8> {
        match self {
            Want::Permits { count, limit } => crate::keys::permits_value(count, limit).into_bytes(),
            Want::Leader => proposal.to_vec(),
            _ => Vec::new(),
        }
    }
}

/// What stands between a contender and the lock: the one thing it waits to hear about.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Blocker {
    /// The deletion of this key (created at `create_revision`): a mutex or writer waits for
    /// the key just before its own, a reader for the last writer before it.
    Deletion { key: Vec<u8>, create_revision: i64 },
    /// A semaphore contender behind another one that waits as well: it cannot get in before
    /// that one does, so it waits for that key to be granted (moved to its hold lease, a put
    /// after `mod_revision`) or to go.
    Grant { key: Vec<u8>, mod_revision: i64 },
    /// The first semaphore contender that waits: every contender before it holds, and any of
    /// their releases (a deletion under this folder) may free enough permits.
    Permits { folder: String },
}

impl std::fmt::Debug for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocker::Deletion { key, .. } => {
                write!(f, "deletion of {}", String::from_utf8_lossy(key))
            }
            Blocker::Grant { key, .. } => write!(f, "grant of {}", String::from_utf8_lossy(key)),
            Blocker::Permits { folder } => write!(f, "releases under {folder}"),
        }
    }
}

impl Blocker {
    /// The watch that tells us about it.
    pub(crate) fn target(&self) -> Target {
        match self {
            Blocker::Deletion { key, .. } => Target::deletion_of(key),
            Blocker::Grant { key, .. } => Target::changes_of(key),
            Blocker::Permits { folder } => Target::deletions_under(folder),
        }
    }

    /// Whether `note` (from [`Blocker::target`]'s watcher) may let us in.
    pub(crate) fn is_moved_by(&self, note: &Note) -> bool {
        match (self, note) {
            (Blocker::Deletion { key, .. }, Note::Deleted { key: gone, .. }) => key == gone,
            (Blocker::Grant { key, .. }, Note::Deleted { key: changed, .. })
            | (Blocker::Grant { key, .. }, Note::Put { key: changed, .. }) => key == changed,
            (Blocker::Permits { folder }, Note::Deleted { key, .. }) => {
                key.starts_with(folder.as_bytes())
            }
            _ => false,
        }
    }

    /// The one key whose state says whether anything changed for us, if there is one (a read
    /// of it is enough to tell that its watcher missed nothing).
    pub(crate) fn key(&self) -> Option<&[u8]> {
        match self {
            Blocker::Deletion { key, .. } | Blocker::Grant { key, .. } => Some(key),
            Blocker::Permits { .. } => None,
        }
    }

    /// Whether `found` (a read of [`Blocker::key`]) shows the blocker as it was when judged.
    pub(crate) fn unchanged(&self, found: Option<&KeyValue>) -> bool {
        match (self, found) {
            (
                Blocker::Deletion {
                    create_revision, ..
                },
                Some(kv),
            ) => kv.create_revision() == *create_revision,
            (Blocker::Grant { mod_revision, .. }, Some(kv)) => kv.mod_revision() == *mod_revision,
            _ => false,
        }
    }
}

/// Where a contender stands.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// It holds the lock; its key is this entry.
    Granted(Entry),
    /// It waits for this.
    Blocked(Blocker),
    /// Its key is gone.
    Gone,
}

/// The contenders directly under one lock, oldest first.
#[derive(Debug)]
pub(crate) struct Queue {
    name: LockName,
    entries: Vec<Entry>,
}

impl Queue {
    /// Reads the keys found under `prefix` (the lock's `NAME/`, any order).
    pub(crate) fn read(name: &LockName, prefix: &str, kvs: Vec<KeyValue>) -> Result<Queue> {
        let mut entries = Vec::new();
        for kv in kvs {
            let text = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(rest) = text.strip_prefix(prefix) else {
                continue;
            };
            let rest = rest.to_owned();
            let (role, id) = match classify(&rest) {
                Classified::Contender(role, id) => (role, id),
                Classified::Revoke | Classified::Nested => continue,
                Classified::Foreign => {
                    return Err(foreign(
                        name,
                        &text,
                        "its name is not one tumbler or Go's concurrency.Mutex writes",
                    ))
                }
            };
            let value = kv.value();
            let role = role_of(role, value);
            let fits = match role {
                KeyRole::Mutex | KeyRole::Read => value.is_empty(),
                KeyRole::Leader => true,
                KeyRole::Write => value.is_empty() || value == DOWNGRADED,
                KeyRole::Permits => {
                    parse_permits(value).is_some_and(|(count, limit)| count >= 1 && count <= limit)
                }
            };
            if !fits {
                return Err(foreign(
                    name,
                    &text,
                    &format!(
                        "its value {:?} is not one tumbler writes",
                        String::from_utf8_lossy(value)
                    ),
                ));
            }
            entries.push(Entry {
                key: kv.key().to_vec(),
                role,
                holder: holder_id(id).to_owned(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
                value: value.to_vec(),
            });
        }
        entries.sort_by_key(|e| e.create_revision);
        Ok(Queue {
            name: name.clone(),
            entries,
        })
    }

    /// The contenders, oldest first.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The queue without the contenders whose keys are in `gone`.
    pub(crate) fn without(mut self, gone: &[(Vec<u8>, i64)]) -> Queue {
        self.entries
            .retain(|entry| !gone.iter().any(|(key, _)| *key == entry.key));
        self
    }

    /// The create revision of the contender with key `key`, if it is queued.
    pub(crate) fn create_revision_of(&self, key: &[u8]) -> Option<i64> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.create_revision)
    }

    /// Refuses a contender of `kind` (with key `ours`, if it has one yet) when the name is used
    /// as another kind: the oldest key decides.
    pub(crate) fn check_kind(&self, kind: Kind, ours: Option<&[u8]>) -> Result<()> {
        let Some(oldest) = self.entries.iter().find(|e| Some(e.key.as_slice()) != ours) else {
            return Ok(());
        };
        let our_revision = ours
            .and_then(|key| self.entries.iter().find(|e| e.key == key))
            .map(|e| e.create_revision);
        let older = our_revision.is_none_or(|ours| oldest.create_revision < ours);
        if older && oldest.role.kind() != kind {
            return Err(Error::Conflict {
                name: self.name.clone(),
                problem: format!(
                    "it is in use as {} (key {}), and was asked for as {}; use one kind of lock per name",
                    oldest.role.kind().with_article(),
                    oldest.key_text(),
                    kind.with_article()
                ),
            });
        }
        Ok(())
    }

    /// Where the contender with key `ours` stands.
    pub(crate) fn verdict(&self, want: Want, ours: &[u8]) -> Result<Verdict> {
        let Some(at) = self.entries.iter().position(|e| e.key == ours) else {
            return Ok(Verdict::Gone);
        };
        let mine = &self.entries[at];
        let before = &self.entries[..at];
        let blocked_by = |entry: &Entry| {
            Ok(Verdict::Blocked(Blocker::Deletion {
                key: entry.key.clone(),
                create_revision: entry.create_revision,
            }))
        };
        match want {
            Want::Exclusive | Want::Write | Want::Leader => {
                if let Some(last) = before.last() {
                    return blocked_by(last);
                }
            }
            Want::Read => {
                if let Some(writer) = before.iter().rev().find(|e| !e.shares()) {
                    return blocked_by(writer);
                }
            }
            Want::Permits { count, limit } => {
                let mut taken_before: u64 = 0;
                for earlier in before {
                    if earlier.role != KeyRole::Permits {
                        return blocked_by(earlier);
                    }
                    let (held, theirs) = earlier.permits();
                    if theirs != limit {
                        return Err(Error::Conflict {
                            name: self.name.clone(),
                            problem: format!(
                                "the semaphore is in use with a limit of {theirs} permits (key {}), not {limit}; use one limit everywhere",
                                earlier.key_text()
                            ),
                        });
                    }
                    taken_before += u64::from(held);
                }
                if taken_before + u64::from(count) > u64::from(limit) {
                    // Everyone before us holds (their permits add up to at most the limit):
                    // any release may let us in. Else the contender just before us waits too,
                    // and we cannot get in before it is granted or gone.
                    return Ok(Verdict::Blocked(match before.last() {
                        Some(last) if taken_before > u64::from(limit) => Blocker::Grant {
                            key: last.key.clone(),
                            mod_revision: last.mod_revision,
                        },
                        _ => Blocker::Permits {
                            folder: String::from_utf8_lossy(&mine.key)
                                .rsplit_once('/')
                                .map(|(folder, _)| format!("{folder}/"))
                                .unwrap_or_default(),
                        },
                    }));
                }
            }
        }
        Ok(Verdict::Granted(mine.clone()))
    }

    /// The holders, by each primitive's rule, and how many others wait.
    pub(crate) fn holders(&self) -> (Vec<HolderInfo>, usize) {
        let mut holders = Vec::new();
        let mut waiters = 0;
        let mut permits_taken: u64 = 0;
        let mut exclusive_seen = false;
        for (index, entry) in self.entries.iter().enumerate() {
            let held = match entry.role {
                // The first contender of all (Go's Mutex rule; a writer waits for everyone).
                KeyRole::Mutex | KeyRole::Leader => index == 0,
                KeyRole::Write if !entry.shares() => index == 0,
                // Readers (and a downgraded writer): nobody exclusive before them.
                KeyRole::Read | KeyRole::Write => !exclusive_seen,
                KeyRole::Permits => {
                    let (count, limit) = entry.permits();
                    permits_taken += u64::from(count);
                    !exclusive_seen && permits_taken <= u64::from(limit)
                }
            };
            if entry.role != KeyRole::Permits && !entry.shares() {
                exclusive_seen = true;
            }
            if !held {
                waiters += 1;
                continue;
            }
            let mode = match entry.role {
                KeyRole::Mutex => HoldMode::Exclusive,
                KeyRole::Leader => HoldMode::Leader,
                KeyRole::Read => HoldMode::Read,
                KeyRole::Write if entry.shares() => HoldMode::Read,
                KeyRole::Write => HoldMode::Write,
                KeyRole::Permits => HoldMode::Permits(entry.permits().0),
            };
            holders.push(HolderInfo {
                id: entry.holder.clone(),
                mode,
                token: u64::try_from(entry.create_revision).ok(),
            });
        }
        (holders, waiters)
    }
}

impl Queue {
    /// Whether no contender of this lock is queued (keys of nested locks do not count).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The election's leader: the oldest candidate, Go's `Election.Leader` rule. `Conflict` when
    /// the name is in use as another kind of lock.
    pub(crate) fn leader(&self) -> Result<Option<LeaderInfo>> {
        self.check_kind(Kind::Election, None)?;
        Ok(self.entries.first().map(|first| LeaderInfo {
            value: first.value.clone(),
            term: u64::try_from(first.create_revision).unwrap_or(0),
            id: first.key_text(),
        }))
    }
}

fn foreign(name: &LockName, key: &str, why: &str) -> Error {
    Error::Conflict {
        name: name.clone(),
        problem: format!(
            "key {key} lies under the lock, but {why}; remove it, or use another lock name (or key prefix)"
        ),
    }
}
