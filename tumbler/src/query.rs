//! The query of a store URL as the facade checks it: `key=value` pairs, each key once.

use tumbler_core::{Error, Result};

use crate::scheme::shorten;

/// Splits `a=1&b=2` into pairs, taking values as written (the memory store's parameters need
/// no percent-decoding).
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a part without `=`.
pub(crate) fn pairs(query: &str) -> Result<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(Error::invalid(
                "URL query",
                format!("{:?} has no value; write key=value", shorten(part)),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_need_values() {
        assert_eq!(
            pairs("a=1&&b=").unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), String::new())]
        );
        assert!(pairs("ttl").is_err());
    }
}
