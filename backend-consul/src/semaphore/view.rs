//! [`View`]: a semaphore as one listing of its folder shows it, with api.Semaphore's rule for
//! dead holders.

use lockcore::{Error, LockName, Result};

use crate::api::KvPair;
use crate::layout::{Entry, Folder, SEMAPHORE_FLAGS};
use crate::record::{ContenderValue, SemaphoreRecord};

/// A semaphore as one listing of its folder shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    /// The holders record (a fresh one if there is none yet).
    pub(crate) record: SemaphoreRecord,
    /// The record's ModifyIndex (0: no record yet).
    pub(crate) lock_index: u64,
    /// Live holders and their permits.
    pub(crate) holders: Vec<(String, u32)>,
    /// Permits held by live holders.
    pub(crate) used: u32,
    /// Sessions holding their contender key.
    pub(crate) contenders: Vec<String>,
    /// Live contenders that are not holders (waiting).
    pub(crate) waiting: Vec<String>,
}

impl View {
    /// Reads the listing of `folder`. With `limit`, a record with another limit, or a record
    /// key that is not a semaphore's, is a conflict.
    pub(crate) fn read(
        folder: &Folder,
        name: &LockName,
        pairs: &[KvPair],
        limit: Option<u32>,
    ) -> Result<View> {
        let lock_pair = pairs
            .iter()
            .find(|p| folder.classify(&p.key) == Entry::Lock);
        let (record, lock_index) = match lock_pair {
            None => (
                SemaphoreRecord {
                    limit: limit.map_or(0, i64::from),
                    ..SemaphoreRecord::default()
                },
                0,
            ),
            Some(pair) => {
                if pair.flags != SEMAPHORE_FLAGS {
                    return Err(Error::Conflict {
                        name: name.clone(),
                        problem: format!(
                            "the Consul key {} has flags {:#x}, not api.Semaphore's \
                             {SEMAPHORE_FLAGS:#x}: a mutex of the same name uses it; use another name",
                            pair.key, pair.flags
                        ),
                    });
                }
                let record = if pair.value.is_empty() {
                    SemaphoreRecord::default()
                } else {
                    serde_json::from_slice(&pair.value).map_err(|e| {
                        Error::backend(
                            crate::api::BACKEND,
                            format!("the semaphore record {} does not decode: {e}", pair.key),
                        )
                    })?
                };
                (record, pair.modify_index)
            }
        };
        if let Some(limit) = limit {
            if lock_pair.is_some() && record.limit != i64::from(limit) {
                return Err(Error::Conflict {
                    name: name.clone(),
                    problem: format!(
                        "the semaphore's limit is {} on the store, but this handle uses {limit}; \
                         every client must use the same limit",
                        record.limit
                    ),
                });
            }
        }
        // api.Semaphore's rule: a holder is alive while its session holds any key listed.
        let alive = |session: &str| pairs.iter().any(|p| p.held_by(session));
        let contender = |session: &str| {
            let key = folder.contender_key(session);
            pairs.iter().find(|p| p.key == key)
        };
        let holders: Vec<(String, u32)> = record
            .holders
            .keys()
            .filter(|h| alive(h))
            .map(|h| {
                let permits = contender(h).map_or(1, |p| ContenderValue::permits_of(&p.value));
                (h.clone(), permits)
            })
            .collect();
        let used = holders
            .iter()
            .map(|(_, n)| *n)
            .fold(0u32, u32::saturating_add);
        let contenders: Vec<String> = pairs
            .iter()
            .filter_map(|p| match folder.classify(&p.key) {
                Entry::Contender(s) if p.held_by(s) && p.flags == SEMAPHORE_FLAGS => {
                    Some(s.to_string())
                }
                _ => None,
            })
            .collect();
        let waiting = contenders
            .iter()
            .filter(|s| !holders.iter().any(|(h, _)| h.eq_ignore_ascii_case(s)))
            .cloned()
            .collect();
        Ok(View {
            record,
            lock_index,
            holders,
            used,
            contenders,
            waiting,
        })
    }

    /// Whether `session` is an admitted holder that still holds its contender key.
    pub(crate) fn holds(&self, session: &str) -> bool {
        self.holders.iter().any(|(h, _)| h == session)
            && self.contenders.iter().any(|c| c == session)
    }

    /// The record with the dead holders pruned and `session` added.
    pub(super) fn with_holder(&self, session: &str) -> SemaphoreRecord {
        let mut record = self.record.clone();
        record
            .holders
            .retain(|h, _| self.holders.iter().any(|(live, _)| live == h));
        record.holders.insert(session.to_string(), true);
        record
    }
}
