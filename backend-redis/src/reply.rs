//! Reading script replies, whatever RESP version carried them.

use redis::Value;
use tumbler_core::Result;

use crate::error::bad_reply;

/// An integer reply.
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Double(d) if d.fract() == 0.0 => Some(*d as i64),
        _ => None,
    }
}

/// A text reply.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// The items of an array reply.
pub(crate) fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// What an acquire script answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Granted: the fencing token and the stored value.
    Granted { token: u64, value: String },
    /// Busy; try again within this many milliseconds (0: no hint).
    Busy { wait_ms: u64 },
    /// A semaphore used with a different limit.
    LimitConflict { stored: i64 },
    /// The name is held or waited on as another kind of primitive (`mutex`, `read-write
    /// lock`, `semaphore`).
    KindConflict { held: String },
    /// No lock is granted yet after a server restart; this many milliseconds are left.
    Recovering { wait_ms: u64 },
}

/// Parses `{1, token, value}`, `{0, wait}`, `{-1, limit}`, `{-3, kind}` or `{-4, wait}`.
pub(crate) fn attempt(what: &str, reply: &Value) -> Result<Attempt> {
    let parsed = items(reply).and_then(|items| match items {
        [code, token, value] if int(code) == Some(1) => Some(Attempt::Granted {
            token: u64::try_from(int(token)?).ok()?,
            value: text(value)?,
        }),
        [code, wait] if int(code) == Some(0) => Some(Attempt::Busy {
            wait_ms: u64::try_from(int(wait)?).unwrap_or(0),
        }),
        [code, stored] if int(code) == Some(-1) => Some(Attempt::LimitConflict {
            stored: int(stored)?,
        }),
        [code, held] if int(code) == Some(-3) => Some(Attempt::KindConflict { held: text(held)? }),
        [code, wait] if int(code) == Some(-4) => Some(Attempt::Recovering {
            wait_ms: u64::try_from(int(wait)?).unwrap_or(0),
        }),
        _ => None,
    });
    parsed.ok_or_else(|| bad_reply(what, reply))
}

/// What an extend script answered: `None` if the hold is gone, else whether a revocation was
/// requested.
pub(crate) fn extended(what: &str, reply: &Value) -> Result<Option<bool>> {
    match items(reply) {
        Some([code, revoke]) => match (int(code), int(revoke)) {
            (Some(1), Some(r)) => Ok(Some(r == 1)),
            (Some(0), _) => Ok(None),
            _ => Err(bad_reply(what, reply)),
        },
        _ => Err(bad_reply(what, reply)),
    }
}

/// A `1`/`0` reply.
pub(crate) fn flag(what: &str, reply: &Value) -> Result<bool> {
    match int(reply) {
        Some(1) => Ok(true),
        Some(0) => Ok(false),
        _ => Err(bad_reply(what, reply)),
    }
}

/// A count reply.
pub(crate) fn count(what: &str, reply: &Value) -> Result<usize> {
    int(reply)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| bad_reply(what, reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn attempts() {
        let granted = Value::Array(vec![Value::Int(1), Value::Int(42), bulk("id:x:42")]);
        assert_eq!(
            attempt("t", &granted).unwrap(),
            Attempt::Granted {
                token: 42,
                value: "id:x:42".into()
            }
        );
        let busy = Value::Array(vec![Value::Int(0), Value::Int(-1)]);
        assert_eq!(attempt("t", &busy).unwrap(), Attempt::Busy { wait_ms: 0 });
        assert!(attempt("t", &Value::Nil).is_err());
        let conflict = Value::Array(vec![Value::Int(-1), Value::Int(3)]);
        assert_eq!(
            attempt("t", &conflict).unwrap(),
            Attempt::LimitConflict { stored: 3 }
        );
        let kind = Value::Array(vec![Value::Int(-3), bulk("semaphore")]);
        assert_eq!(
            attempt("t", &kind).unwrap(),
            Attempt::KindConflict {
                held: "semaphore".into()
            }
        );
        let recovering = Value::Array(vec![Value::Int(-4), Value::Int(1500)]);
        assert_eq!(
            attempt("t", &recovering).unwrap(),
            Attempt::Recovering { wait_ms: 1500 }
        );
    }

    #[test]
    fn extends() {
        let ok = Value::Array(vec![Value::Int(1), Value::Int(1)]);
        assert_eq!(extended("t", &ok).unwrap(), Some(true));
        let gone = Value::Array(vec![Value::Int(0), Value::Int(0)]);
        assert_eq!(extended("t", &gone).unwrap(), None);
    }
}
