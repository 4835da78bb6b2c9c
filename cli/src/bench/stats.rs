//! Latency histograms (HDR, microseconds) and the summary numbers the reports print.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in microseconds, from 1 µs to 10 minutes, 3 significant digits.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts; a failure would be a bug here.
        Latency(
            Histogram::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|e| panic!("histogram bounds are constant and valid: {e}")),
        )
    }

    /// Records one duration (clamped into the histogram's range).
    pub fn record(&mut self, d: Duration) {
        let micros = (d.as_micros() as u64).clamp(1, 600_000_000);
        let _ = self.0.record(micros);
    }

    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Option<Percentiles> {
        (!self.0.is_empty()).then(|| Percentiles {
            p50_us: self.0.value_at_quantile(0.50),
            p99_us: self.0.value_at_quantile(0.99),
            p999_us: self.0.value_at_quantile(0.999),
            max_us: self.0.max(),
            mean_us: self.0.mean(),
            count: self.0.len(),
        })
    }
}

/// The percentiles a report shows.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
    pub count: u64,
}

/// Formats microseconds for a table: `850µs`, `12.3ms`, `1.25s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_format() {
        let mut h = Latency::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.summary().unwrap();
        assert!((49_000..=51_000).contains(&p.p50_us), "{p:?}");
        assert!(p.p99_us >= 98_000, "{p:?}");
        assert_eq!(p.count, 100);
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(1_250_000), "1.25s");
        assert!(Latency::new().summary().is_none());
    }
}
