//! Validated lock names.

use std::fmt;

use crate::error::{Error, Result};

/// The longest lock name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A validated lock name, the same on every store.
///
/// Rules (each has its own [`NameRule`] so the error says which one failed):
/// - not empty, at most [`MAX_NAME_LEN`] bytes;
/// - only the characters `A-Z a-z 0-9 . _ : / -`;
/// - no leading or trailing `/`;
/// - no empty segment (`a//b`), no segment starting with `.` (`..`, `.`, `.hidden`);
/// - not starting with the reserved segment `zookeeper`.
///
/// Names are hierarchical with `/` so that every store can map them to its own
/// layout (a ZooKeeper path, an etcd or Consul key prefix, a Redis key).
///
/// ```
/// use tumbler_core::LockName;
/// let name = LockName::new("jobs/nightly")?;
/// assert_eq!(name.as_str(), "jobs/nightly");
/// assert!(LockName::new("/jobs").is_err());
/// # Ok::<(), tumbler_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockName(String);

/// The rule a rejected lock name broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// The name was empty.
    Empty,
    /// The name was longer than [`MAX_NAME_LEN`] bytes.
    TooLong,
    /// The name contained a character outside `A-Z a-z 0-9 . _ : / -`.
    BadCharacter(char),
    /// The name started or ended with `/`.
    EdgeSlash,
    /// The name had an empty segment (`//`).
    EmptySegment,
    /// The name had a `..` segment.
    DotDotSegment,
    /// A segment started with `.` (`.`, `a/./b`, `.hidden`): ZooKeeper refuses `.` path
    /// segments and Consul hides keys under such segments.
    DotSegment,
    /// The first segment is one a store reserves for itself (`zookeeper`, ZooKeeper's own tree).
    Reserved,
}

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRule::Empty => f.write_str("a lock name must not be empty"),
            NameRule::TooLong => write!(f, "a lock name must be at most {MAX_NAME_LEN} bytes"),
            NameRule::BadCharacter(c) => write!(
                f,
                "character {c:?} is not allowed; use only A-Z a-z 0-9 . _ : / -"
            ),
            NameRule::EdgeSlash => f.write_str("a lock name must not start or end with '/'"),
            NameRule::EmptySegment => {
                f.write_str("a lock name must not contain an empty segment ('//')")
            }
            NameRule::DotDotSegment => f.write_str("a lock name must not contain a '..' segment"),
            NameRule::DotSegment => f.write_str(
                "a lock name segment must not start with '.' (ZooKeeper refuses '.' segments \
                 and Consul hides such keys); rename the segment",
            ),
            NameRule::Reserved => f.write_str(
                "a lock name must not start with the segment 'zookeeper', which ZooKeeper \
                 reserves for itself; choose another first segment",
            ),
        }
    }
}

impl LockName {
    /// Validates `name` and wraps it.
    ///
    /// Returns [`Error::InvalidName`] naming the broken [`NameRule`] and the input.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        match check(&name) {
            Ok(()) => Ok(LockName(name)),
            Err(rule) => Err(Error::InvalidName { name, rule }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated segments of the name.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn check(name: &str) -> std::result::Result<(), NameRule> {
    if name.is_empty() {
        return Err(NameRule::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameRule::TooLong);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
    {
        return Err(NameRule::BadCharacter(c));
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err(NameRule::EdgeSlash);
    }
    if name == "zookeeper" || name.starts_with("zookeeper/") {
        return Err(NameRule::Reserved);
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return Err(NameRule::EmptySegment);
        }
        if segment == ".." {
            return Err(NameRule::DotDotSegment);
        }
        if segment.starts_with('.') {
            return Err(NameRule::DotSegment);
        }
    }
    Ok(())
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for LockName {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self> {
        LockName::new(value)
    }
}

impl TryFrom<String> for LockName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        LockName::new(value)
    }
}

/// Anything that can name a lock: `&str`, `String` (validated) or a [`LockName`].
pub trait IntoLockName {
    /// Validates (if needed) and converts.
    fn into_lock_name(self) -> Result<LockName>;
}

impl IntoLockName for LockName {
    fn into_lock_name(self) -> Result<LockName> {
        Ok(self)
    }
}

impl IntoLockName for &LockName {
    fn into_lock_name(self) -> Result<LockName> {
        Ok(self.clone())
    }
}

impl IntoLockName for &str {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self)
    }
}

impl IntoLockName for String {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self)
    }
}

impl IntoLockName for &String {
    fn into_lock_name(self) -> Result<LockName> {
        LockName::new(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> NameRule {
        match LockName::new(name) {
            Err(Error::InvalidName { rule, name: got }) => {
                assert_eq!(got, name, "the error must carry the offending input");
                rule
            }
            other => panic!("{name:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn accepts_good_names() {
        for ok in [
            "a",
            "jobs/nightly",
            "x.y_z:1-2",
            "A/B/C",
            "a..b",
            &"n".repeat(200),
        ] {
            assert_eq!(
                LockName::new(ok).map(|n| n.as_str().to_owned()).ok(),
                Some(ok.to_owned())
            );
        }
    }

    #[test]
    fn rejects_each_rule_with_its_reason() {
        assert_eq!(rule(""), NameRule::Empty);
        assert_eq!(rule(&"n".repeat(201)), NameRule::TooLong);
        assert_eq!(rule("a b"), NameRule::BadCharacter(' '));
        assert_eq!(rule("é"), NameRule::BadCharacter('é'));
        assert_eq!(rule("/a"), NameRule::EdgeSlash);
        assert_eq!(rule("a/"), NameRule::EdgeSlash);
        assert_eq!(rule("a//b"), NameRule::EmptySegment);
        assert_eq!(rule("a/../b"), NameRule::DotDotSegment);
        assert_eq!(rule(".."), NameRule::DotDotSegment);
        assert_eq!(rule("."), NameRule::DotSegment);
        assert_eq!(rule("a/./b"), NameRule::DotSegment);
        assert_eq!(rule("a/.hidden"), NameRule::DotSegment);
        assert_eq!(rule("zookeeper"), NameRule::Reserved);
        assert_eq!(rule("zookeeper/quota"), NameRule::Reserved);
    }

    #[test]
    fn long_names_are_not_echoed_whole() {
        let long = "n".repeat(10_000);
        let msg = LockName::new(long.as_str())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 300, "{} bytes: {msg}", msg.len());
        assert!(msg.contains("10000 bytes"), "{msg}");
        assert!(LockName::new("zookeeper2").is_ok());
    }

    #[test]
    fn error_message_names_rule_and_input() {
        let msg = LockName::new("a b").map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("\"a b\""), "{msg}");
        assert!(msg.contains("not allowed"), "{msg}");
    }
}
