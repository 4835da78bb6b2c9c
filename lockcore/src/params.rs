//! Settings given as URL query parameters (`?ttl=10s&prefix=app`), checked once for every
//! backend: every parameter must be known, and each value must parse.

use std::time::Duration;

use crate::error::{Error, Result};

/// The query parameters of a connection URL, consumed one by one by a backend's parser.
///
/// ```
/// use lockcore::params::Params;
/// use std::time::Duration;
/// let mut params = Params::new("redis", [("ttl".to_string(), "30s".to_string())]);
/// assert_eq!(params.duration("ttl")?, Some(Duration::from_secs(30)));
/// params.finish(&["ttl", "prefix"])?;
///
/// let mut typo = Params::new("redis", [("tll".to_string(), "30s".to_string())]);
/// let err = typo.finish(&["ttl", "prefix"]).unwrap_err();
/// assert!(err.to_string().contains("tll"));
/// # Ok::<(), lockcore::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Params {
    scheme: String,
    pairs: Vec<(String, String, bool)>,
}

impl Params {
    /// Wraps the `(key, value)` pairs of a URL of `scheme`.
    pub fn new(
        scheme: impl Into<String>,
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        Params {
            scheme: scheme.into(),
            pairs: pairs.into_iter().map(|(k, v)| (k, v, false)).collect(),
        }
    }

    /// The raw value of `key` (the last one if repeated), marking it used.
    pub fn text(&mut self, key: &str) -> Option<String> {
        let mut found = None;
        for (k, v, used) in self.pairs.iter_mut() {
            if k == key {
                *used = true;
                found = Some(v.clone());
            }
        }
        found
    }

    /// A duration such as `500ms`, `10s`, `2m` or `1h`.
    pub fn duration(&mut self, key: &str) -> Result<Option<Duration>> {
        self.text(key)
            .map(|value| parse_duration(&value).map_err(|problem| self.bad(key, &value, &problem)))
            .transpose()
    }

    /// A whole number.
    pub fn u64(&mut self, key: &str) -> Result<Option<u64>> {
        self.text(key)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| self.bad(key, &value, "expected a whole number"))
            })
            .transpose()
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        self.text(key)
            .map(|value| match value.as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(self.bad(key, &value, "expected true or false")),
            })
            .transpose()
    }

    /// Fails if any parameter was not used, listing the `known` ones.
    pub fn finish(self, known: &[&str]) -> Result<()> {
        match self.pairs.iter().find(|(_, _, used)| !used) {
            None => Ok(()),
            Some((key, _, _)) => Err(Error::invalid(
                format!("{} URL parameter `{key}`", self.scheme),
                format!("unknown parameter; known ones are: {}", known.join(", ")),
            )),
        }
    }

    fn bad(&self, key: &str, value: &str, problem: &str) -> Error {
        Error::invalid(
            format!("{} URL parameter `{key}={value}`", self.scheme),
            problem.to_owned(),
        )
    }
}

/// Parses `500ms`, `10s`, `1.5s`, `2m`, `1h` into a duration.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit; write e.g. 500ms, 10s, 2m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let mut p = Params::new("etcd", [("ttl".into(), "soon".into())]);
        let err = p.duration("ttl").unwrap_err().to_string();
        assert!(err.contains("ttl=soon"), "{err}");
    }
}
