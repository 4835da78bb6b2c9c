//! rslock, measured on the same Redis as a bench-only comparison.
//!
//! rslock has no waiting primitive of its own beyond retrying `SET NX` after a fixed delay, so
//! its `acquire` loops the way its documentation suggests (`acquire`, which retries with its
//! default retry delay).

use std::time::Duration;

use async_trait::async_trait;

use super::subject::{BenchClient, Held, Op, Subject};

/// rslock on one Redis URL.
pub struct Rslock {
    url: String,
}

impl Rslock {
    pub fn new(url: &str) -> Option<Self> {
        url.starts_with("redis://").then(|| Rslock {
            url: url.split('?').next().unwrap_or(url).to_owned(),
        })
    }
}

const TTL: Duration = Duration::from_secs(10);

#[async_trait]
impl Subject for Rslock {
    fn label(&self) -> String {
        "redis/rslock".into()
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn unsupported(&self, op: Op) -> Option<String> {
        (op != Op::Mutex).then(|| "rslock has only mutexes".into())
    }

    async fn client(&self) -> Result<Box<dyn BenchClient>, String> {
        Ok(Box::new(RslockClient {
            manager: rslock::LockManager::new(vec![self.url.clone()]),
        }))
    }
}

struct RslockClient {
    manager: rslock::LockManager,
}

struct RslockHeld {
    guard: rslock::LockGuard,
}

#[async_trait]
impl Held for RslockHeld {
    async fn release(self: Box<Self>) -> Result<(), String> {
        self.guard.release().await;
        Ok(())
    }
}

#[async_trait]
impl BenchClient for RslockClient {
    async fn acquire(&self, name: &str, _op: Op) -> Result<Box<dyn Held>, String> {
        let guard = self
            .manager
            .acquire(name.as_bytes(), TTL)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(RslockHeld { guard }))
    }
}
