//! The key layout of one lock name, and the format of the values stored under it.
//!
//! The layout is documented in the crate docs (## Keys).

use tumbler_core::{HoldMode, HolderInfo, LockKind, LockName};

/// Which keys an acquisition of a kind touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// Mutexes and read-write locks (a mutex is a writer).
    Lock,
    /// Semaphores.
    Semaphore,
}

impl Family {
    pub(crate) fn of(kind: LockKind) -> Family {
        match kind {
            LockKind::Permits { .. } => Family::Semaphore,
            _ => Family::Lock,
        }
    }
}

/// The mode letter stored in values and waiter members.
pub(crate) fn mode_code(kind: LockKind) -> String {
    match kind {
        LockKind::Exclusive => "x".into(),
        LockKind::Write => "w".into(),
        LockKind::Read => "r".into(),
        LockKind::Permits { count, .. } => format!("p{count}"),
        LockKind::Leader => "l".into(),
    }
}

/// Every key and channel of one lock name.
///
/// The mutex key is `PREFIX + NAME` itself (redis-py's and rslock's key); every companion key
/// and channel is that key as a Redis Cluster hash tag plus a suffix (`{K}#tumbler:queue`), so
/// all of them hash to the lock key's slot. A prefix that already carries a hash tag
/// (`{app}:`) keeps it: the companions then start with the lock key, tag included.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) lock: String,
    pub(crate) readers: String,
    pub(crate) queue: String,
    pub(crate) queue_exp: String,
    pub(crate) sem: String,
    pub(crate) sem_limit: String,
    pub(crate) sem_queue: String,
    pub(crate) sem_queue_exp: String,
    pub(crate) fence: String,
    pub(crate) revoked: String,
    /// The election's leader record (a hash: `value`, `term`, `owner`), and the channel on
    /// which every change of leadership is announced (`leader`).
    pub(crate) leader: String,
    /// Candidates waiting in the queue: member → the value each would advertise.
    pub(crate) candidates: String,
    /// `free` announcements for Redlock waiters (who do not queue).
    pub(crate) events: String,
    /// The inbox channels of this name are this prefix plus a client id.
    pub(crate) inbox_prefix: String,
    /// This client's inbox for this name: grants, wake-ups, revocations, forced releases.
    pub(crate) inbox: String,
    pub(crate) epoch: String,
}

impl Keys {
    /// The keys of `name` under `prefix`, for the client `client` (see [`client_id`]). On a
    /// cluster (`per_lock_epoch`), the restart epoch is the lock's own (`T#tumbler:epoch`), so
    /// that a script's keys share one slot.
    pub(crate) fn new(prefix: &str, client: &str, name: &LockName, per_lock_epoch: bool) -> Keys {
        let lock = format!("{prefix}{name}");
        let base = companion_base(&lock);
        let aux = |what: &str| format!("{base}#tumbler:{what}");
        let inbox_prefix = aux("to:");
        Keys {
            readers: aux("readers"),
            queue: aux("queue"),
            queue_exp: aux("queue-exp"),
            sem: aux("sem"),
            sem_limit: aux("sem-limit"),
            sem_queue: aux("sem-queue"),
            sem_queue_exp: aux("sem-queue-exp"),
            fence: aux("fence"),
            revoked: aux("revoked"),
            leader: aux("leader"),
            candidates: aux("candidates"),
            events: aux("events"),
            inbox: format!("{inbox_prefix}{client}"),
            inbox_prefix,
            epoch: if per_lock_epoch {
                aux("epoch")
            } else {
                epoch_key(prefix)
            },
            lock,
        }
    }
}

/// Whether Redis Cluster hashes `key` by a `{...}` tag inside it: the text between its first
/// `{` and the first `}` after that, if not empty.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .is_some_and(|open| key[open + 1..].find('}').is_some_and(|close| close > 0))
}

/// What the companion keys of the lock key `lock` start with: `{lock}`, or `lock` itself if it
/// carries a hash tag already. Either way they hash to `lock`'s slot (for a `lock` without a
/// `}` outside a tag, which [`check_prefix`] ensures: lock names have no braces).
fn companion_base(lock: &str) -> String {
    if has_hash_tag(lock) {
        lock.to_owned()
    } else {
        format!("{{{lock}}}")
    }
}

/// Refuses a key prefix with which a lock key and its companions could land in different
/// Redis Cluster slots: one with a `}` that does not close a non-empty `{...}` tag (lock names
/// cannot contain braces, so only the prefix can). The reason says what to change.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains('}') && !has_hash_tag(prefix) {
        return Err(format!(
            "{prefix:?} has a '}}' that does not close a non-empty '{{...}}' hash tag, so a lock key \
             and its companion keys could hash to different Redis Cluster slots; remove the '}}' \
             or make the prefix a hash tag such as \"{{app}}:\" (which puts every lock of the prefix in one slot)"
        ));
    }
    Ok(())
}

/// The key recording when the server's data set began.
pub(crate) fn epoch_key(prefix: &str) -> String {
    format!("{prefix}#tumbler:epoch")
}

/// A new client id: 16 hex digits, one per backend instance. It starts every acquisition id
/// of the client, and names the client's inbox channels.
pub(crate) fn client_id() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(16);
    id
}

/// A new acquisition id of `client`: its 16 hex digits and 16 random ones.
pub(crate) fn new_id(client: &str) -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.replace_range(..16, client);
    id
}

/// Describes a stored holder value for `state()`. Values not written by tumbler (redis-py,
/// rslock) are reported as exclusive holders without a token.
pub(crate) fn holder_info(value: &str) -> HolderInfo {
    let foreign = || HolderInfo {
        id: value.to_owned(),
        mode: HoldMode::Exclusive,
        token: None,
    };
    let mut parts = value.rsplitn(3, ':');
    let (Some(token), Some(mode), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return foreign();
    };
    let Ok(token) = token.parse::<u64>() else {
        return foreign();
    };
    let mode = match mode {
        "x" => HoldMode::Exclusive,
        "w" => HoldMode::Write,
        "r" => HoldMode::Read,
        "l" => HoldMode::Leader,
        other => match other.strip_prefix('p').and_then(|n| n.parse().ok()) {
            Some(n) => HoldMode::Permits(n),
            None => return foreign(),
        },
    };
    HolderInfo {
        id: id.to_owned(),
        mode,
        token: Some(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let name = LockName::new("jobs/nightly").unwrap();
        let keys = Keys::new("app:", "0123456789abcdef", &name, false);
        assert_eq!(keys.lock, "app:jobs/nightly");
        assert_eq!(keys.fence, "{app:jobs/nightly}#tumbler:fence");
        assert_eq!(keys.queue, "{app:jobs/nightly}#tumbler:queue");
        assert_eq!(keys.leader, "{app:jobs/nightly}#tumbler:leader");
        assert_eq!(keys.inbox, "{app:jobs/nightly}#tumbler:to:0123456789abcdef");
        assert_eq!(keys.epoch, "app:#tumbler:epoch");
        let on_cluster = Keys::new("app:", "0123456789abcdef", &name, true);
        assert_eq!(on_cluster.epoch, "{app:jobs/nightly}#tumbler:epoch");
        // A prefix with a hash tag keeps it: the companions start with the lock key.
        let tagged = Keys::new("{app}:", "0123456789abcdef", &name, false);
        assert_eq!(tagged.lock, "{app}:jobs/nightly");
        assert_eq!(tagged.fence, "{app}:jobs/nightly#tumbler:fence");
    }

    /// Redis Cluster's slot rule: the hashed part of a key.
    fn hashed(key: &str) -> &str {
        if let Some(open) = key.find('{') {
            if let Some(close) = key[open + 1..].find('}') {
                if close > 0 {
                    return &key[open + 1..open + 1 + close];
                }
            }
        }
        key
    }

    #[test]
    fn companions_hash_like_the_lock_key() {
        let name = LockName::new("jobs/nightly").unwrap();
        for prefix in ["", "app:", "{app}:", "a{", "{", "x{y}z{", "{a}}"] {
            check_prefix(prefix).unwrap();
            let keys = Keys::new(prefix, "0123456789abcdef", &name, true);
            for companion in [
                &keys.epoch,
                &keys.queue,
                &keys.fence,
                &keys.sem,
                &keys.revoked,
                &keys.inbox,
                &keys.leader,
                &keys.candidates,
            ] {
                assert_eq!(
                    hashed(companion),
                    hashed(&keys.lock),
                    "{prefix:?}: {companion}"
                );
            }
        }
        for prefix in ["a}", "{}", "x{}y", "}{"] {
            let refused = check_prefix(prefix).unwrap_err();
            assert!(refused.contains("hash tag"), "{prefix:?}: {refused}");
        }
    }

    #[test]
    fn ids_start_with_the_client() {
        let client = client_id();
        let id = new_id(&client);
        assert_eq!((client.len(), id.len()), (16, 32));
        assert!(id.starts_with(&client) && id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn holder_values() {
        let info = holder_info("abc:p3:17");
        assert_eq!(
            (info.id.as_str(), info.mode, info.token),
            ("abc", HoldMode::Permits(3), Some(17))
        );
        assert_eq!(holder_info("abc:w:5").mode, HoldMode::Write);
        assert_eq!(holder_info("abc:l:6").mode, HoldMode::Leader);
        let foreign = holder_info("5f0b3c2e9d");
        assert_eq!((foreign.mode, foreign.token), (HoldMode::Exclusive, None));
        assert_eq!(holder_info("a:q:1").token, None);
    }
}
