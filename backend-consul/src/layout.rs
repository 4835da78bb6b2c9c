//! Where each primitive lives in Consul's KV store, and the magic flags that mark its keys.
//!
//! For a lock name `NAME` under the key prefix `P` (default `tumbler/`):
//!
//! | key | what | flags |
//! |---|---|---|
//! | `P NAME/.lock` | mutex key (api.Lock), or the semaphore's holders record (api.Semaphore) | [`LOCK_FLAGS`] / [`SEMAPHORE_FLAGS`] |
//! | `P NAME/.queue/<waiter session>` | a tumbler mutex waiter, in arrival (CreateIndex) order | [`QUEUE_FLAGS`] |
//! | `P NAME/<lease session>` | a semaphore contender (api.Semaphore) | [`SEMAPHORE_FLAGS`] |
//! | `P NAME/.rwlock` | the read-write lock's holders record | [`RWLOCK_FLAGS`] |
//! | `P NAME/.rw/<lease>` | a read-write lock contender (liveness of one reader or writer) | [`RWLOCK_FLAGS`] |
//! | `P NAME/leader` | the election's key (Consul's leader-election guide): Session = the leader, value = its data | 0 (the guide sets none) |
//! | `P NAME/.candidates/<candidate session>` | a tumbler candidate waiting to be elected, in arrival order | [`QUEUE_FLAGS`] |
//!
//! The mutex key is the one `consul lock P NAME …` uses (`path.Join(prefix, ".lock")`), so the
//! `consul lock` command and tumbler exclude each other, and a mutex and a semaphore on the same
//! name conflict on the flags exactly as they do in Consul's own clients.
//!
//! The election key follows the guide's recommended `service/<service name>/leader`: with the
//! prefix `service/`, the election `web` is the key `service/web/leader`, which the guide's
//! clients (`PUT ?acquire=` with their data as the body) share with us.

use tumbler_core::{Error, LockName, Result};

/// api.Lock's `LockFlagValue`: marks a key used as a lock.
pub const LOCK_FLAGS: u64 = 0x2ddc_cbc0_58a5_0c18;
/// api.Semaphore's `SemaphoreFlagValue`: marks the keys of a semaphore.
pub const SEMAPHORE_FLAGS: u64 = 0xe0f6_9a2b_aa41_4de0;
/// Marks tumbler's mutex waiter keys (`NAME/.queue/…`); tumbler's own value.
pub const QUEUE_FLAGS: u64 = 0x7475_6d62_6c71_7565;
/// Marks tumbler's read-write lock keys (`NAME/.rwlock`, `NAME/.rw/…`); tumbler's own value.
pub const RWLOCK_FLAGS: u64 = 0x7475_6d62_6c72_776c;

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "tumbler/";

/// The last segment of the mutex key and of the semaphore holders record (api's
/// `DefaultSemaphoreKey`).
const LOCK_SEGMENT: &str = ".lock";
const QUEUE_SEGMENT: &str = ".queue";
const RW_RECORD_SEGMENT: &str = ".rwlock";
const RW_CONTENDER_SEGMENT: &str = ".rw";
/// The last segment of an election's key (the guide's `service/<name>/leader`).
const LEADER_SEGMENT: &str = "leader";
const CANDIDATES_SEGMENT: &str = ".candidates";

/// Checks a configured key prefix: only characters every Consul release accepts in keys, and no
/// leading `/`.
pub fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.starts_with('/') {
        return Err(Error::invalid(
            "consul key prefix",
            format!("{prefix:?} starts with '/'; Consul keys do not (write e.g. \"locks/\")"),
        ));
    }
    if prefix.contains("//") {
        return Err(Error::invalid(
            "consul key prefix",
            format!("{prefix:?} contains '//', which Consul collapses into one '/'"),
        ));
    }
    if let Some(bad) = prefix.chars().find(|c| !key_char(*c)) {
        return Err(Error::invalid(
            "consul key prefix",
            format!("{prefix:?} contains {bad:?}; use only A-Z a-z 0-9 , - _ . /"),
        ));
    }
    Ok(())
}

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ',' | '-' | '_' | '.' | '/')
}

/// Maps lock names to keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// A layout under `prefix` (checked with [`check_prefix`] by the caller).
    pub fn new(prefix: impl Into<String>) -> Self {
        Layout {
            prefix: prefix.into(),
        }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The folder of `name`: `P NAME/`, where `NAME` has each `:` replaced by `,`.
    ///
    /// Consul 1.21.5 and later reject `:` in keys, and `,` is not allowed in lock names, so the
    /// mapping is one-to-one. [`LockName`] refuses segments starting with `.`
    /// ([`tumbler_core::NameRule::DotSegment`]), which keeps this layout's own segments (`.lock`,
    /// `.queue`, `.rwlock`, `.rw`) apart from every name's.
    pub fn folder(&self, name: &LockName) -> Result<Folder> {
        Ok(Folder {
            base: format!("{}{}/", self.prefix, name.as_str().replace(':', ",")),
        })
    }
}

/// The keys of one lock name: everything lives under `base` (`P NAME/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    base: String,
}

/// What a key found under a [`Folder`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// `NAME/.lock`.
    Lock,
    /// `NAME/.queue/<id>`.
    Queued(&'a str),
    /// `NAME/.rwlock`.
    RwRecord,
    /// `NAME/.rw/<lease>`.
    RwContender(&'a str),
    /// `NAME/leader`: an election's key.
    Leader,
    /// `NAME/.candidates/<session>`: a tumbler candidate waiting to be elected.
    Candidate(&'a str),
    /// `NAME/<session>`: a semaphore contender.
    Contender(&'a str),
    /// Anything else (keys of longer names such as `NAME/sub/.lock`).
    Other,
}

impl Folder {
    /// `P NAME/`: the prefix to list for every key of this name (api.Semaphore's prefix).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The mutex key / semaphore holders record, `P NAME/.lock`.
    pub fn lock_key(&self) -> String {
        format!("{}{LOCK_SEGMENT}", self.base)
    }

    /// The folder of the mutex waiters, `P NAME/.queue/`.
    pub fn queue_prefix(&self) -> String {
        format!("{}{QUEUE_SEGMENT}/", self.base)
    }

    /// The election's key, `P NAME/leader`.
    pub fn leader_key(&self) -> String {
        format!("{}{LEADER_SEGMENT}", self.base)
    }

    /// The folder of the waiting candidates, `P NAME/.candidates/`.
    pub fn candidates_prefix(&self) -> String {
        format!("{}{CANDIDATES_SEGMENT}/", self.base)
    }

    /// A semaphore contender's key, `P NAME/<session>`.
    pub fn contender_key(&self, session: &str) -> String {
        format!("{}{session}", self.base)
    }

    /// The prefix covering the read-write record and its contenders, `P NAME/.rw`.
    pub fn rw_prefix(&self) -> String {
        format!("{}{RW_CONTENDER_SEGMENT}", self.base)
    }

    /// The read-write lock's record, `P NAME/.rwlock`.
    pub fn rw_record_key(&self) -> String {
        format!("{}{RW_RECORD_SEGMENT}", self.base)
    }

    /// One read-write contender's key, `P NAME/.rw/<lease>`.
    pub fn rw_contender_key(&self, lease: &str) -> String {
        format!("{}{RW_CONTENDER_SEGMENT}/{lease}", self.base)
    }

    /// Classifies a key returned by a listing of [`Folder::base`].
    pub fn classify<'a>(&self, key: &'a str) -> Entry<'a> {
        let Some(rest) = key.strip_prefix(self.base.as_str()) else {
            return Entry::Other;
        };
        match rest.split_once('/') {
            None if rest == LOCK_SEGMENT => Entry::Lock,
            None if rest == RW_RECORD_SEGMENT => Entry::RwRecord,
            None if rest == LEADER_SEGMENT => Entry::Leader,
            None if rest.is_empty() || rest.starts_with('.') => Entry::Other,
            None => Entry::Contender(rest),
            Some((QUEUE_SEGMENT, id)) if !id.is_empty() && !id.contains('/') => Entry::Queued(id),
            Some((RW_CONTENDER_SEGMENT, id)) if !id.is_empty() && !id.contains('/') => {
                Entry::RwContender(id)
            }
            Some((CANDIDATES_SEGMENT, id)) if !id.is_empty() && !id.contains('/') => {
                Entry::Candidate(id)
            }
            Some(_) => Entry::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str) -> Folder {
        Layout::new("p/")
            .folder(&LockName::new(name).unwrap())
            .unwrap()
    }

    #[test]
    fn keys_follow_consul_lock() {
        let f = folder("jobs/nightly");
        assert_eq!(f.lock_key(), "p/jobs/nightly/.lock");
        assert_eq!(f.base(), "p/jobs/nightly/");
        assert_eq!(f.queue_prefix(), "p/jobs/nightly/.queue/");
        assert_eq!(f.contender_key("s1"), "p/jobs/nightly/s1");
        assert_eq!(f.rw_record_key(), "p/jobs/nightly/.rwlock");
        assert_eq!(f.rw_contender_key("l1"), "p/jobs/nightly/.rw/l1");
        assert_eq!(f.leader_key(), "p/jobs/nightly/leader");
        assert_eq!(f.candidates_prefix(), "p/jobs/nightly/.candidates/");
        assert!(f.rw_record_key().starts_with(&f.rw_prefix()));
        assert!(f.rw_contender_key("x").starts_with(&f.rw_prefix()));
    }

    #[test]
    fn colons_map_to_commas_and_dot_segments_are_not_names() {
        assert_eq!(folder("a:b").lock_key(), "p/a,b/.lock");
        for reserved in ["a/.lock", ".queue", "x/.rw/y"] {
            assert!(
                matches!(
                    LockName::new(reserved),
                    Err(Error::InvalidName {
                        rule: tumbler_core::NameRule::DotSegment,
                        ..
                    })
                ),
                "{reserved}"
            );
        }
        assert_eq!(
            Layout::new("")
                .folder(&LockName::new("x").unwrap())
                .unwrap()
                .lock_key(),
            "x/.lock"
        );
    }

    #[test]
    fn classify_keys() {
        let f = folder("n");
        assert_eq!(f.classify("p/n/.lock"), Entry::Lock);
        assert_eq!(f.classify("p/n/.rwlock"), Entry::RwRecord);
        assert_eq!(f.classify("p/n/.queue/w1"), Entry::Queued("w1"));
        assert_eq!(f.classify("p/n/.rw/l1"), Entry::RwContender("l1"));
        assert_eq!(f.classify("p/n/s1"), Entry::Contender("s1"));
        assert_eq!(f.classify("p/n/leader"), Entry::Leader);
        assert_eq!(f.classify("p/n/.candidates/c1"), Entry::Candidate("c1"));
        assert_eq!(f.classify("p/n/leader/x"), Entry::Other);
        assert_eq!(f.classify("p/n/sub/.lock"), Entry::Other);
        assert_eq!(f.classify("p/n/.queue/a/b"), Entry::Other);
        assert_eq!(f.classify("p/other/.lock"), Entry::Other);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("service/web/").is_ok());
        assert!(check_prefix("/x").is_err());
        assert!(check_prefix("a//b").is_err());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix("a:b").is_err());
    }
}
