//! Go `time.Duration` parsing and formatting, as Consul's HTTP API uses them.
//!
//! Consul parses `?wait=`, a session's `TTL` and a string `LockDelay` with Go's
//! `time.ParseDuration`, and prints durations in some error texts with Go's
//! `Duration.String`. Clients (the Go `api` package, `consul lock`) send forms
//! such as `15s`, `15000ms`, `1m30s` or `1.5h`. This module reproduces the
//! accepted grammar (`[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or a bare `0`), the
//! int64-nanosecond overflow limit, and the error texts, so a bad value gets the
//! same answer from this server as from Consul.

/// Nanoseconds per unit, as Go's `time` package names them.
const UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{00b5}s", 1_000), // MICRO SIGN
    ("\u{03bc}s", 1_000), // GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// One nanosecond past the largest int64 duration (Go's `1 << 63`).
const LIMIT: u64 = 1 << 63;

/// Quotes `s` the way Go's `strconv.Quote` does for printable text.
fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn invalid(orig: &str) -> String {
    format!("time: invalid duration {}", quote(orig))
}

/// Parses a Go duration string into signed nanoseconds.
///
/// The error is the text Go's `time.ParseDuration` gives, e.g.
/// `time: invalid duration "abc"`, `time: missing unit in duration "10"` or
/// `time: unknown unit "x" in duration "10x"`.
pub fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let mut s = orig;
    let mut neg = false;
    if let Some(c) = s.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            s = &s[1..];
        }
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid(orig));
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid(orig));
        }
        // Integer part.
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let pre = digits > 0;
        let mut v: u64 = 0;
        for &d in &b[..digits] {
            if v > (LIMIT - 1) / 10 {
                return Err(invalid(orig));
            }
            v = v * 10 + u64::from(d - b'0');
            if v > LIMIT {
                return Err(invalid(orig));
            }
        }
        s = &s[digits..];
        // Fraction part.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.as_bytes().first() == Some(&b'.') {
            s = &s[1..];
            let fb = s.as_bytes();
            let fdigits = fb.iter().take_while(|c| c.is_ascii_digit()).count();
            post = fdigits > 0;
            let mut overflow = false;
            for &d in &fb[..fdigits] {
                if overflow {
                    continue;
                }
                if frac > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = frac * 10 + u64::from(d - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                frac = y;
                scale *= 10.0;
            }
            s = &s[fdigits..];
        }
        if !pre && !post {
            return Err(invalid(orig));
        }
        // Unit.
        let unit_len = s
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", quote(orig)));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let Some(&(_, unit)) = UNITS.iter().find(|(name, _)| *name == unit_name) else {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                quote(unit_name),
                quote(orig)
            ));
        };
        if v > LIMIT / unit {
            return Err(invalid(orig));
        }
        v *= unit;
        if frac > 0 {
            // Go computes this in float64 and truncates; so do we.
            v += (frac as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid(orig));
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid(orig));
        }
    }
    if neg {
        // total <= 1<<63 here, and -(1<<63) is i64::MIN.
        return Ok((total as i128).wrapping_neg() as i64);
    }
    if total > LIMIT - 1 {
        return Err(invalid(orig));
    }
    Ok(total as i64)
}

/// Formats `value / 10^prec` as a fraction (".123", trailing zeros dropped, nothing
/// when the fraction is zero) and returns it with the integer part.
fn fraction(value: u64, prec: u32) -> (String, u64) {
    let div = 10u64.pow(prec);
    let f = value % div;
    if f == 0 {
        return (String::new(), value / div);
    }
    let digits = format!("{f:0width$}", width = prec as usize);
    (format!(".{}", digits.trim_end_matches('0')), value / div)
}

/// Formats signed nanoseconds the way Go's `Duration.String` does: `0s`,
/// `500ms`, `1.5µs`, `10s`, `1m30s`, `24h0m0s`.
pub fn format_go_duration(nanos: i64) -> String {
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let body = if u == 0 {
        "0s".to_string()
    } else if u < 1_000_000_000 {
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "\u{00b5}s")
        } else {
            (6, "ms")
        };
        let (frac, int) = fraction(u, prec);
        format!("{int}{frac}{unit}")
    } else {
        let (frac, secs) = fraction(u, 9);
        let mut out = format!("{}{frac}s", secs % 60);
        let mins = secs / 60;
        if mins > 0 {
            out = format!("{}m{out}", mins % 60);
            let hours = mins / 60;
            if hours > 0 {
                out = format!("{hours}h{out}");
            }
        }
        out
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_clients_send() {
        assert_eq!(parse_go_duration("15s"), Ok(15_000_000_000));
        assert_eq!(parse_go_duration("15000ms"), Ok(15_000_000_000));
        assert_eq!(parse_go_duration("1m"), Ok(60_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("1.s"), Ok(1_000_000_000));
        assert_eq!(parse_go_duration("10us"), Ok(10_000));
        assert_eq!(parse_go_duration("10\u{00b5}s"), Ok(10_000));
        assert_eq!(parse_go_duration("10\u{03bc}s"), Ok(10_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-0"), Ok(0));
        assert_eq!(parse_go_duration("+5s"), Ok(5_000_000_000));
        assert_eq!(parse_go_duration("-5s"), Ok(-5_000_000_000));
        assert_eq!(parse_go_duration("9223372036854775807ns"), Ok(i64::MAX));
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(i64::MIN));
    }

    #[test]
    fn rejects_with_go_error_texts() {
        assert_eq!(
            parse_go_duration("abc"),
            Err("time: invalid duration \"abc\"".to_string())
        );
        assert_eq!(
            parse_go_duration(""),
            Err("time: invalid duration \"\"".to_string())
        );
        assert_eq!(
            parse_go_duration("10"),
            Err("time: missing unit in duration \"10\"".to_string())
        );
        assert_eq!(
            parse_go_duration("10x"),
            Err("time: unknown unit \"x\" in duration \"10x\"".to_string())
        );
        assert_eq!(
            parse_go_duration("."),
            Err("time: invalid duration \".\"".to_string())
        );
        assert_eq!(
            parse_go_duration("9223372036854775808ns"),
            Err("time: invalid duration \"9223372036854775808ns\"".to_string())
        );
        assert_eq!(
            parse_go_duration("3000000h"),
            Err("time: invalid duration \"3000000h\"".to_string())
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(0), "0s");
        assert_eq!(format_go_duration(1), "1ns");
        assert_eq!(format_go_duration(1_500), "1.5\u{00b5}s");
        assert_eq!(format_go_duration(500_000_000), "500ms");
        assert_eq!(format_go_duration(10_000_000_000), "10s");
        assert_eq!(format_go_duration(90_000_000_000), "1m30s");
        assert_eq!(format_go_duration(86_400_000_000_000), "24h0m0s");
        assert_eq!(format_go_duration(1_500_000_000), "1.5s");
        assert_eq!(format_go_duration(-2_000_000_000), "-2s");
        assert_eq!(format_go_duration(i64::MIN), "-2562047h47m16.854775808s");
    }
}
