//! [`RwView`]: a read-write lock as one listing shows it, and the grant rules.

use tumbler_core::{Error, LockName, Result};

use crate::api::KvPair;
use crate::layout::{Entry, Folder, RWLOCK_FLAGS};
use crate::record::{decode_record, RwRecord};

/// A read-write lock as one listing of `NAME/.rw` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RwView {
    /// The record (empty if there is none yet).
    pub(crate) record: RwRecord,
    /// Its ModifyIndex (0: none yet).
    pub(crate) record_index: u64,
    /// Leases whose contender key is held by a session.
    pub(crate) live: Vec<String>,
}

impl RwView {
    /// Reads the listing of `folder.rw_prefix()`.
    pub(crate) fn read(folder: &Folder, name: &LockName, pairs: &[KvPair]) -> Result<RwView> {
        let mut view = RwView {
            record: RwRecord::default(),
            record_index: 0,
            live: Vec::new(),
        };
        for pair in pairs {
            match folder.classify(&pair.key) {
                Entry::RwRecord => {
                    if pair.flags != RWLOCK_FLAGS {
                        return Err(Error::Conflict {
                            name: name.clone(),
                            problem: format!(
                                "the Consul key {} has flags {:#x}, not tumbler's read-write \
                                 lock flags: it holds data tumbler did not write; delete the key \
                                 if nothing uses it, or use another name",
                                pair.key, pair.flags
                            ),
                        });
                    }
                    view.record = decode_record(name, pair, "a read-write lock's record")?;
                    view.record_index = pair.modify_index;
                }
                Entry::RwContender(lease) if pair.is_held() => view.live.push(lease.to_string()),
                _ => {}
            }
        }
        Ok(view)
    }

    /// Whether `lease`'s contender key is held.
    pub(crate) fn alive(&self, lease: &str) -> bool {
        self.live.iter().any(|l| l == lease)
    }

    /// The live writer.
    pub(crate) fn writer(&self) -> Option<&str> {
        self.record.writer.as_deref().filter(|w| self.alive(w))
    }

    /// The live readers.
    pub(crate) fn readers(&self) -> Vec<&str> {
        self.record
            .readers
            .iter()
            .map(String::as_str)
            .filter(|r| self.alive(r))
            .collect()
    }

    /// The live waiting writers, in arrival order.
    pub(super) fn waiting(&self) -> Vec<&str> {
        self.record
            .waiting
            .iter()
            .map(String::as_str)
            .filter(|w| self.alive(w))
            .collect()
    }

    /// The first waiting writer, if it is not `lease` and the lock is free (no live writer, no
    /// live reader): it should be taking the lock.
    pub(super) fn idle_first_writer(&self, lease: &str) -> Option<&str> {
        if self.writer().is_some() || !self.readers().is_empty() {
            return None;
        }
        self.waiting().first().copied().filter(|w| *w != lease)
    }

    /// Live contenders that hold nothing (waiting readers and writers).
    pub(crate) fn waiters(&self) -> usize {
        let readers = self.readers();
        let writer = self.writer();
        self.live
            .iter()
            .filter(|l| writer != Some(l.as_str()) && !readers.contains(&l.as_str()))
            .count()
    }

    /// Whether `lease` holds the side it asked for (and is alive).
    pub(crate) fn holds(&self, lease: &str, write: bool) -> bool {
        if write {
            self.writer() == Some(lease)
        } else {
            self.readers().contains(&lease)
        }
    }

    /// The record to CAS for `lease`'s next step (grant, or join the waiting writers), or
    /// `None` to wait for a change.
    pub(super) fn decide(&self, lease: &str, write: bool, wait: bool) -> Option<RwRecord> {
        let writer = self.writer().map(str::to_string);
        let readers: Vec<String> = self.readers().into_iter().map(str::to_string).collect();
        let waiting: Vec<String> = self.waiting().into_iter().map(str::to_string).collect();
        let revoke = self.record.revoke.clone();
        if write {
            let first = waiting.first().is_none_or(|w| w == lease);
            if writer.is_none() && readers.is_empty() && first {
                return Some(RwRecord {
                    writer: Some(lease.to_string()),
                    readers,
                    waiting: waiting.into_iter().filter(|w| w != lease).collect(),
                    revoke,
                });
            }
            if wait && !waiting.iter().any(|w| w == lease) {
                let mut waiting = waiting;
                waiting.push(lease.to_string());
                return Some(RwRecord {
                    writer,
                    readers,
                    waiting,
                    revoke,
                });
            }
            return None;
        }
        if writer.is_none() && waiting.is_empty() {
            let mut readers = readers;
            readers.push(lease.to_string());
            return Some(RwRecord {
                writer,
                readers,
                waiting,
                revoke,
            });
        }
        None
    }
}
