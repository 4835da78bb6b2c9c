//! A one-line progress display on stderr while a scenario runs (only on a terminal).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Shows progress when enabled and stderr is a terminal.
pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress {
            enabled: enabled && std::io::stderr().is_terminal(),
        }
    }

    /// Starts a ticker for one scenario; `planned` is zero when the length is unknown.
    pub fn start(
        &self,
        label: &str,
        planned: Duration,
        ops: Arc<AtomicU64>,
    ) -> Option<JoinHandle<()>> {
        if !self.enabled {
            return None;
        }
        let label = label.to_owned();
        Some(tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let elapsed = started.elapsed();
                let bar = if planned.is_zero() {
                    String::new()
                } else {
                    let done = (elapsed.as_secs_f64() / planned.as_secs_f64()).min(1.0);
                    let filled = (done * 30.0) as usize;
                    format!("[{}{}] ", "#".repeat(filled), ".".repeat(30 - filled))
                };
                {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r\x1b[2K{label:<32} {bar}{:>5.1}s  {} ops",
                        elapsed.as_secs_f64(),
                        ops.load(Ordering::Relaxed)
                    );
                    let _ = err.flush();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }

    /// Stops a ticker and clears its line.
    pub fn finish(&self, ticker: Option<JoinHandle<()>>) {
        if let Some(ticker) = ticker {
            ticker.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
