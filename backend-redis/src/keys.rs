//! The key layout of one lock name, and the format of the values stored under it.
//!
//! The layout is documented in the crate docs (## Keys).

use lockcore::{HoldMode, HolderInfo, LockKind, LockName};

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
    }
}

/// Every key and the channel of one lock name.
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
    pub(crate) channel: String,
    pub(crate) epoch: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, name: &LockName) -> Keys {
        let lock = format!("{prefix}{name}");
        let aux = |what: &str| format!("{lock}#tumbler:{what}");
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
            channel: aux("events"),
            epoch: epoch_key(prefix),
            lock,
        }
    }
}

/// The key recording when the server's data set began.
pub(crate) fn epoch_key(prefix: &str) -> String {
    format!("{prefix}#tumbler:epoch")
}

/// A new acquisition id: 32 hex digits.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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
        let keys = Keys::new("app:", &LockName::new("jobs/nightly").unwrap());
        assert_eq!(keys.lock, "app:jobs/nightly");
        assert_eq!(keys.fence, "app:jobs/nightly#tumbler:fence");
        assert_eq!(keys.channel, "app:jobs/nightly#tumbler:events");
        assert_eq!(keys.epoch, "app:#tumbler:epoch");
    }

    #[test]
    fn holder_values() {
        let info = holder_info("abc:p3:17");
        assert_eq!(
            (info.id.as_str(), info.mode, info.token),
            ("abc", HoldMode::Permits(3), Some(17))
        );
        assert_eq!(holder_info("abc:w:5").mode, HoldMode::Write);
        let foreign = holder_info("5f0b3c2e9d");
        assert_eq!((foreign.mode, foreign.token), (HoldMode::Exclusive, None));
        assert_eq!(holder_info("a:q:1").token, None);
    }
}
