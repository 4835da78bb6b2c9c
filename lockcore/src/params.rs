//! Settings given as URL query parameters (`?ttl=10s&prefix=app`), checked once for every
//! backend: every parameter must be known, and each value must parse.

use std::time::Duration;

use crate::error::{Error, Result};

/// The query parameters of a connection URL, consumed one by one by a backend's parser.
///
/// ```
/// use tumbler_core::params::Params;
/// use std::time::Duration;
/// let mut params = Params::new("redis", [("ttl".to_string(), "30s".to_string())]);
/// assert_eq!(params.duration("ttl")?, Some(Duration::from_secs(30)));
/// params.finish(&["ttl", "prefix"])?;
///
/// let mut typo = Params::new("redis", [("tll".to_string(), "30s".to_string())]);
/// let err = typo.finish(&["ttl", "prefix"]).unwrap_err();
/// assert!(err.to_string().contains("tll"));
/// # Ok::<(), tumbler_core::Error>(())
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

    /// Fails if any parameter was given more than once (which one was meant is a guess, so
    /// none is taken) or was not used, listing the `known` ones.
    pub fn finish(self, known: &[&str]) -> Result<()> {
        for (i, (key, _, _)) in self.pairs.iter().enumerate() {
            if self.pairs[..i].iter().any(|(earlier, _, _)| earlier == key) {
                return Err(Error::invalid(
                    format!(
                        "{} URL parameter `{}`",
                        self.scheme,
                        crate::url::shorten(key)
                    ),
                    "given more than once; keep only the value you mean",
                ));
            }
        }
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

/// Writes a duration the way [`parse_duration`] reads it, for every message tumbler prints:
/// `0s` (never `0ns`), `500ms`, `1.5s`, `10s`, `2m`, `1h`. Measured times are rounded to the
/// millisecond from one second up (`10.002s`); below a millisecond they show in `µs` or `ns`.
///
/// ```
/// use tumbler_core::params::{format_duration, parse_duration};
/// use std::time::Duration;
/// assert_eq!(format_duration(Duration::ZERO), "0s");
/// assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
/// assert_eq!(format_duration(Duration::from_secs(120)), "2m");
/// assert_eq!(parse_duration(&format_duration(Duration::from_millis(250))), Ok(Duration::from_millis(250)));
/// ```
pub fn format_duration(duration: Duration) -> String {
    const MS: u128 = 1_000_000;
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < MS {
        return trimmed(nanos, 1_000, "µs");
    }
    if nanos < 1_000 * MS {
        return trimmed(nanos, MS, "ms");
    }
    // From one second up: rounded to the millisecond, whole minutes and hours by their unit.
    let millis = (nanos + MS / 2) / MS;
    match millis {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m => trimmed(m, 1_000, "s"),
    }
}

/// `value / unit` with up to three decimals and no trailing zeros, then `suffix`.
fn trimmed(value: u128, unit: u128, suffix: &str) -> String {
    let whole = value / unit;
    // Three decimals of the remainder, rounded down (a message never claims more than waited).
    let thousandths = (value % unit) * 1_000 / unit;
    if thousandths == 0 {
        return format!("{whole}{suffix}");
    }
    let decimals = format!("{thousandths:03}");
    format!("{whole}.{}{suffix}", decimals.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_durations_read_as_people_write_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(250), "250µs"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_nanos(10_002_345_678), "10.002s"),
            (Duration::from_nanos(59_999_999_999), "1m"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text, "{duration:?}");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for millis in [
            1, 20, 500, 999, 1_000, 1_250, 10_000, 61_500, 120_000, 7_200_000,
        ] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
    }

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
    fn repeated_parameters_are_refused() {
        let mut p = Params::new(
            "redis",
            [("ttl".into(), "5s".into()), ("ttl".into(), "6s".into())],
        );
        assert!(p.duration("ttl").is_ok());
        let err = p.finish(&["ttl"]).unwrap_err().to_string();
        assert!(
            err.contains("`ttl`") && err.contains("more than once"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let mut p = Params::new("etcd", [("ttl".into(), "soon".into())]);
        let err = p.duration("ttl").unwrap_err().to_string();
        assert!(err.contains("ttl=soon"), "{err}");
    }
}
