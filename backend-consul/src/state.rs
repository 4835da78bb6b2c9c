//! `state()` and `request_revoke()`: one listing of the name's folder tells who holds it and
//! who waits; a revocation request is a `?cas=` write the holders' monitors see.

use tumbler_core::{HoldMode, HolderInfo, LockName, LockState, Result};

use crate::api::{Api, KvPair};
use crate::layout::{Entry, Folder, LOCK_FLAGS, SEMAPHORE_FLAGS};
use crate::queue::Line;
use crate::record::{encode, nonce, RevokeMarker};
use crate::rwlock::RwView;
use crate::semaphore::View;

/// How often a revocation retries after losing a CAS race.
const REVOKE_ROUNDS: usize = 5;

/// Who holds and who waits for `name`, whichever primitive uses it.
pub(crate) async fn state(api: &Api, name: &LockName, folder: &Folder) -> Result<LockState> {
    let listed = api.kv_list(folder.base(), None).await?;
    let pairs = &listed.value;
    let mut holders = Vec::new();
    let mut waiters = 0;
    let lock = lock_pair(folder, pairs);
    match lock {
        Some(pair) if pair.flags == LOCK_FLAGS => {
            if let Some(session) = &pair.session {
                holders.push(HolderInfo {
                    id: session.clone(),
                    mode: HoldMode::Exclusive,
                    token: Some(mutex_token(pair)),
                });
            }
            waiters += Line::mutex(folder).live_waiters(pairs).len();
        }
        _ => {}
    }
    let leader = pairs
        .iter()
        .find(|p| folder.classify(&p.key) == Entry::Leader && p.flags == 0);
    if let Some(pair) = leader {
        if let Some(session) = &pair.session {
            holders.push(HolderInfo {
                id: session.clone(),
                mode: HoldMode::Leader,
                token: Some(crate::election::term(pair)),
            });
        }
    }
    waiters += Line::election(folder).live_waiters(pairs).len();
    let has_contenders = pairs
        .iter()
        .any(|p| matches!(folder.classify(&p.key), Entry::Contender(_)));
    if lock.is_some_and(|p| p.flags == SEMAPHORE_FLAGS) || (lock.is_none() && has_contenders) {
        let view = View::read(folder, name, pairs, None)?;
        holders.extend(view.holders.iter().map(|(id, permits)| HolderInfo {
            id: id.clone(),
            mode: HoldMode::Permits(*permits),
            token: None,
        }));
        waiters += view.waiting.len();
    }
    if has_rw(folder, pairs) {
        let view = RwView::read(folder, name, pairs)?;
        if let Some(writer) = view.writer() {
            holders.push(HolderInfo {
                id: writer.to_string(),
                mode: HoldMode::Write,
                token: None,
            });
        }
        holders.extend(view.readers().into_iter().map(|r| HolderInfo {
            id: r.to_string(),
            mode: HoldMode::Read,
            token: None,
        }));
        waiters += view.waiters();
    }
    Ok(LockState {
        name: name.clone(),
        holders,
        waiters: Some(waiters),
    })
}

/// Asks every current holder of `name` to release; returns how many were asked.
pub(crate) async fn request_revoke(api: &Api, name: &LockName, folder: &Folder) -> Result<usize> {
    let request = nonce();
    let mut asked = 0;
    let mut mutex_done = false;
    let mut semaphore_done = false;
    let mut rw_done = false;
    for _ in 0..REVOKE_ROUNDS {
        let listed = api.kv_list(folder.base(), None).await?;
        let pairs = &listed.value;
        let lock = lock_pair(folder, pairs);
        if !mutex_done {
            mutex_done = match lock {
                Some(pair) if pair.flags == LOCK_FLAGS && pair.is_held() => {
                    let marker = RevokeMarker {
                        nonce: request.clone(),
                        token: mutex_token(pair),
                    };
                    let done = api
                        .kv_cas(&pair.key, LOCK_FLAGS, encode(&marker), pair.modify_index)
                        .await?;
                    asked += usize::from(done);
                    done
                }
                _ => true,
            };
        }
        if !semaphore_done {
            semaphore_done = match lock {
                Some(pair) if pair.flags == SEMAPHORE_FLAGS => {
                    let view = View::read(folder, name, pairs, None)?;
                    if view.holders.is_empty() {
                        true
                    } else {
                        let mut record = view.record.clone();
                        record.revoke = Some(request.clone());
                        let done = api
                            .kv_cas(
                                &pair.key,
                                SEMAPHORE_FLAGS,
                                encode(&record),
                                pair.modify_index,
                            )
                            .await?;
                        if done {
                            asked += view.holders.len();
                        }
                        done
                    }
                }
                _ => true,
            };
        }
        if !rw_done {
            rw_done = if has_rw(folder, pairs) {
                let view = RwView::read(folder, name, pairs)?;
                let held = usize::from(view.writer().is_some()) + view.readers().len();
                if held == 0 {
                    true
                } else {
                    let mut record = view.record.clone();
                    record.revoke = Some(request.clone());
                    let done = api
                        .kv_cas(
                            &folder.rw_record_key(),
                            crate::layout::RWLOCK_FLAGS,
                            encode(&record),
                            view.record_index,
                        )
                        .await?;
                    if done {
                        asked += held;
                    }
                    done
                }
            } else {
                true
            };
        }
        if mutex_done && semaphore_done && rw_done {
            break;
        }
    }
    Ok(asked)
}

fn lock_pair<'a>(folder: &Folder, pairs: &'a [KvPair]) -> Option<&'a KvPair> {
    pairs
        .iter()
        .find(|p| folder.classify(&p.key) == Entry::Lock)
}

fn has_rw(folder: &Folder, pairs: &[KvPair]) -> bool {
    pairs.iter().any(|p| {
        matches!(
            folder.classify(&p.key),
            Entry::RwRecord | Entry::RwContender(_)
        )
    })
}

/// A held mutex key's token: the ModifyIndex of its acquisition, which a revocation marker
/// carries once it has changed the ModifyIndex.
fn mutex_token(pair: &KvPair) -> u64 {
    RevokeMarker::parse(&pair.value).map_or(pair.modify_index, |m| m.token)
}
