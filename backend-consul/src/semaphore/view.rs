//! [`View`]: a semaphore as one listing of its folder shows it, with api.Semaphore's rule for
//! dead holders.

use tumbler_core::{Error, LockName, Result};

use crate::api::KvPair;
use crate::layout::{Entry, Folder, LOCK_FLAGS, SEMAPHORE_FLAGS};
use crate::record::{decode_record, ContenderValue, SemaphoreRecord};

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
    /// Reads the listing of `folder`. With `limit` (an acquisition), a record in use with
    /// another limit is a conflict; a record nobody uses any more is taken over with `limit`.
    /// A record key that is neither a semaphore's nor an unheld mutex key, or a record that
    /// does not decode, is a conflict naming the key.
    pub(crate) fn read(
        folder: &Folder,
        name: &LockName,
        pairs: &[KvPair],
        limit: Option<u32>,
    ) -> Result<View> {
        let lock_pair = pairs
            .iter()
            .find(|p| folder.classify(&p.key) == Entry::Lock);
        let fresh = || SemaphoreRecord {
            limit: limit.map_or(0, i64::from),
            ..SemaphoreRecord::default()
        };
        let (mut record, lock_index, recorded) = match lock_pair {
            None => (fresh(), 0, false),
            Some(pair) if pair.flags == SEMAPHORE_FLAGS => (
                decode_record(name, pair, "a semaphore's holders record")?,
                pair.modify_index,
                true,
            ),
            // A mutex key nobody holds (`kinds::check` refuses a held one): the semaphore takes
            // it over with a CAS on its index.
            Some(pair) if pair.flags == LOCK_FLAGS && !pair.is_held() => {
                (fresh(), pair.modify_index, false)
            }
            Some(pair) => {
                return Err(Error::Conflict {
                    name: name.clone(),
                    problem: format!(
                        "the Consul key {} has flags {:#x}, not api.Semaphore's \
                         {SEMAPHORE_FLAGS:#x}: a mutex uses it, or it holds data tumbler did not \
                         write; use another name",
                        pair.key, pair.flags
                    ),
                })
            }
        };
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
        if let Some(limit) = limit.map(i64::from) {
            if recorded && record.limit != limit {
                // In use: every client must agree on the limit. Unused (no live holder, no
                // contender but the asking one): the record is rewritten with this limit.
                if !holders.is_empty() || contenders.len() > 1 {
                    return Err(Error::Conflict {
                        name: name.clone(),
                        problem: format!(
                            "the semaphore's limit is {} on the store, but this handle uses \
                             {limit}; every client must use the same limit",
                            record.limit
                        ),
                    });
                }
                record.limit = limit;
            }
        }
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
