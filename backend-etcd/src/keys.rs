//! Where each primitive keeps its keys, and how to read them back.
//!
//! Every key of a lock lives directly under `<prefix><NAME>/`:
//!
//! | primitive | key | value |
//! |---|---|---|
//! | mutex | `NAME/<lease hex>` (a second concurrent hold of the same name from the same backend instance: `NAME/<lease hex>_<n>`) | empty |
//! | election candidate | `NAME/<lease hex>` (or `NAME/<lease hex>_<n>`, as the mutex) | the candidate's proposal (never empty) |
//! | read side | `NAME/#read/<lease hex>_<n>` | empty |
//! | write side | `NAME/#write/<lease hex>_<n>` | empty, `read` once downgraded |
//! | semaphore | `NAME/#sem/<lease hex>_<n>` | `<permits>/<limit>` |
//! | revocation marker (exists for one round trip) | `NAME/#revoke/<lease hex>_<n>` | empty |
//!
//! The mutex key is exactly the one of Go's `concurrency.Mutex` (and so `etcdctl lock NAME`), and
//! the candidate key the one of Go's `concurrency.Election` (`etcdctl elect NAME PROPOSAL`): both
//! recipes put `NAME/<lease hex>`, so the value tells them apart. A mutex key is always empty, a
//! candidate's holds its proposal, which lockcore never lets be empty: an empty `NAME/<id>` key is
//! a mutex contender, any other one an election candidate (see [`role_of`]). (A Go candidate
//! that campaigns with an empty proposal therefore counts as a mutex contender.)
//! The other folders start with `#`, which no lock name segment can contain, so the keys of a
//! nested lock `NAME/child` (`NAME/child/...`) never look like keys of `NAME`: nested names are
//! independent locks. A key directly under `NAME/` that fits none of these rows is foreign.
//!
//! Order is always the key's create revision, never its mod revision: a downgrade rewrites a key
//! in place and must not move it in the queue, and so does the move of a granted waiter's key
//! from the waiting lease to the hold lease.

use std::fmt;

use tumbler_core::LockName;

/// The value of a write key that was downgraded to a read hold.
pub(crate) const DOWNGRADED: &[u8] = b"read";

/// The key layout of one backend instance (its key prefix).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
}

/// What a key under a lock's prefix is, as far as this layout can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRole {
    /// A mutex contender (`NAME/<id>`, empty value), ours or a Go client's.
    Mutex,
    /// An election candidate (`NAME/<id>` with its proposal as value), ours or a Go client's.
    Leader,
    /// A reader (`NAME/#read/<id>`).
    Read,
    /// A writer (`NAME/#write/<id>`).
    Write,
    /// A semaphore contender (`NAME/#sem/<id>`).
    Permits,
}

/// Which primitive a name is used as: one name, one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A mutex.
    Mutex,
    /// A read-write lock.
    RwLock,
    /// A semaphore.
    Semaphore,
    /// An election.
    Election,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Mutex => "mutex",
            Kind::RwLock => "read-write lock",
            Kind::Semaphore => "semaphore",
            Kind::Election => "election",
        })
    }
}

impl Kind {
    /// "a mutex", "an election": the kind in a sentence.
    pub(crate) fn with_article(self) -> String {
        match self {
            Kind::Election => format!("an {self}"),
            _ => format!("a {self}"),
        }
    }
}

impl KeyRole {
    /// The primitive the key belongs to.
    pub(crate) fn kind(self) -> Kind {
        match self {
            KeyRole::Mutex => Kind::Mutex,
            KeyRole::Read | KeyRole::Write => Kind::RwLock,
            KeyRole::Permits => Kind::Semaphore,
            KeyRole::Leader => Kind::Election,
        }
    }
}

/// What one key under `NAME/` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Classified<'a> {
    /// A contender of this lock, with its holder id (the last segment).
    Contender(KeyRole, &'a str),
    /// A revocation marker.
    Revoke,
    /// A key of a lock nested below this one.
    Nested,
    /// Something tumbler and Go's Mutex never write there.
    Foreign,
}

impl Layout {
    /// A layout whose keys all start with `prefix` (may be empty).
    pub(crate) fn new(prefix: String) -> Self {
        Layout { prefix }
    }

    /// The key prefix every key of this layout starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>NAME/`: every key of the lock, and also those of locks nested below it (which
    /// [`classify`] tells apart).
    pub(crate) fn lock_prefix(&self, name: &LockName) -> String {
        format!("{}{}/", self.prefix, name.as_str())
    }

    /// `<prefix>NAME/#revoke/`: revocation markers, put and deleted at once by
    /// `request_revoke`; holders take the deletion as the request.
    pub(crate) fn revoke_prefix(&self, name: &LockName) -> String {
        format!("{}#revoke/", self.lock_prefix(name))
    }

    /// A revocation marker key.
    pub(crate) fn revoke_marker(&self, name: &LockName, lease: i64, n: u64) -> String {
        format!("{}{:x}_{n}", self.revoke_prefix(name), lease)
    }

    /// The key of a mutex contender: Go's `NAME/<lease hex>`, or with `_<n>` for an extra
    /// concurrent acquisition of the same name by the same instance.
    pub(crate) fn mutex_key(&self, name: &LockName, lease: i64, extra: Option<u64>) -> String {
        match extra {
            None => format!("{}{:x}", self.lock_prefix(name), lease),
            Some(n) => format!("{}{:x}_{n}", self.lock_prefix(name), lease),
        }
    }

    /// The start of every key this instance (holding `lease`) puts for `role` under the lock:
    /// `NAME/<lease hex>` for the mutex (Go's key and our `_<n>` ones), else
    /// `NAME/#<folder>/<lease hex>_`. A contender watches the deletions under it for its own key.
    pub(crate) fn own_prefix(&self, name: &LockName, role: KeyRole, lease: i64) -> String {
        match role {
            KeyRole::Mutex | KeyRole::Leader => self.mutex_key(name, lease, None),
            _ => {
                let key = self.unique_key(name, role, lease, 0);
                key.strip_suffix('0').unwrap_or(&key).to_owned()
            }
        }
    }

    /// The key of a reader, writer or semaphore contender.
    pub(crate) fn unique_key(&self, name: &LockName, role: KeyRole, lease: i64, n: u64) -> String {
        let folder = match role {
            KeyRole::Mutex | KeyRole::Leader => return self.mutex_key(name, lease, Some(n)),
            KeyRole::Read => "#read/",
            KeyRole::Write => "#write/",
            KeyRole::Permits => "#sem/",
        };
        format!("{}{folder}{:x}_{n}", self.lock_prefix(name), lease)
    }
}

/// Classifies `rest`, the part of a key after `NAME/`.
pub(crate) fn classify(rest: &str) -> Classified<'_> {
    match rest.split_once('/') {
        None if is_holder_id(rest) => Classified::Contender(KeyRole::Mutex, rest),
        None => Classified::Foreign,
        Some(("#read", id)) if is_holder_id(id) => Classified::Contender(KeyRole::Read, id),
        Some(("#write", id)) if is_holder_id(id) => Classified::Contender(KeyRole::Write, id),
        Some(("#sem", id)) if is_holder_id(id) => Classified::Contender(KeyRole::Permits, id),
        Some(("#revoke", _)) => Classified::Revoke,
        Some((folder, _)) if folder.starts_with('#') => Classified::Foreign,
        Some(_) => Classified::Nested,
    }
}

/// The role of a key that [`classify`] found to be a contender with `role`, given its value: a
/// `NAME/<id>` key with a value is an election candidate's (Go's Election and ours write the
/// proposal there), an empty one a mutex contender's (Go's Mutex and ours write nothing).
pub(crate) fn role_of(role: KeyRole, value: &[u8]) -> KeyRole {
    match role {
        KeyRole::Mutex if !value.is_empty() => KeyRole::Leader,
        other => other,
    }
}

/// A lease in lowercase hex (Go's `%x`), optionally followed by `_<n>` (ours).
fn is_holder_id(id: &str) -> bool {
    let (lease, n) = id.split_once('_').unwrap_or((id, "0"));
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    !lease.is_empty()
        && lease.chars().all(hex)
        && !n.is_empty()
        && n.chars().all(|c| c.is_ascii_digit())
}

/// The holder id of a key id: the lease in hex, without our `_<n>` suffix.
pub(crate) fn holder_id(id: &str) -> &str {
    id.split_once('_').map_or(id, |(lease, _)| lease)
}

/// The value of a semaphore key holding `count` of `limit` permits.
pub(crate) fn permits_value(count: u32, limit: u32) -> String {
    format!("{count}/{limit}")
}

/// Reads a semaphore key's value back: `(count, limit)`. `None` for values this layout did not
/// write (such a key is treated as taking every permit, so it can only block, never admit).
pub(crate) fn parse_permits(value: &[u8]) -> Option<(u32, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (count, limit) = text.split_once('/')?;
    Some((count.parse().ok()?, limit.parse().ok()?))
}

/// The first key after every key that starts with `prefix` (the end of a prefix range).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LockName {
        LockName::new(s).unwrap()
    }

    #[test]
    fn mutex_key_is_gos() {
        let layout = Layout::new(String::new());
        assert_eq!(
            layout.mutex_key(&name("jobs/nightly"), 0x694d_7a1b_2c3d_4e5f, None),
            "jobs/nightly/694d7a1b2c3d4e5f"
        );
        let prefixed = Layout::new("app/".into());
        assert_eq!(prefixed.mutex_key(&name("x"), 255, Some(2)), "app/x/ff_2");
        assert_eq!(
            prefixed.unique_key(&name("x"), KeyRole::Write, 255, 7),
            "app/x/#write/ff_7"
        );
        assert_eq!(
            prefixed.own_prefix(&name("x"), KeyRole::Mutex, 255),
            "app/x/ff"
        );
        assert_eq!(
            prefixed.own_prefix(&name("x"), KeyRole::Permits, 255),
            "app/x/#sem/ff_"
        );
    }

    #[test]
    fn classifies_keys() {
        use Classified::*;
        assert_eq!(classify("ff"), Contender(KeyRole::Mutex, "ff"));
        assert_eq!(classify("ff_2"), Contender(KeyRole::Mutex, "ff_2"));
        assert_eq!(classify("#read/ff_1"), Contender(KeyRole::Read, "ff_1"));
        assert_eq!(classify("#write/ff_1"), Contender(KeyRole::Write, "ff_1"));
        assert_eq!(classify("#sem/ff_1"), Contender(KeyRole::Permits, "ff_1"));
        assert_eq!(classify("#revoke/ff_1"), Revoke);
        assert_eq!(classify("child/ff"), Nested);
        assert_eq!(classify("read/ff_1"), Nested);
        assert_eq!(classify("notes.txt"), Foreign);
        assert_eq!(classify("FF"), Foreign);
        assert_eq!(classify("#sem/x/y"), Foreign);
        assert_eq!(classify("#other/ff"), Foreign);
        assert_eq!(holder_id("ff_1"), "ff");
        assert_eq!(holder_id("ff"), "ff");
        assert_eq!(role_of(KeyRole::Mutex, b""), KeyRole::Mutex);
        assert_eq!(role_of(KeyRole::Mutex, b"host-1"), KeyRole::Leader);
        assert_eq!(role_of(KeyRole::Write, b"read"), KeyRole::Write);
    }

    #[test]
    fn permits_round_trip() {
        assert_eq!(parse_permits(permits_value(2, 5).as_bytes()), Some((2, 5)));
        assert_eq!(parse_permits(b""), None);
        assert_eq!(parse_permits(b"x/5"), None);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("a/"), b"a0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
