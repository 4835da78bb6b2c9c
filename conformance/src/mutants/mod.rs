//! Deliberately broken backends built on memory. Each breaks one promise the way real lock
//! libraries have broken it; the suite must catch every one (promise 10).

mod backend;
mod held;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockcore::memory::MemoryOptions;
use lockcore::{LockName, SharedBackend};

use crate::harness::{Harness, Holder, HookResult, TestClient};
use crate::memory::MemoryHarness;
pub use backend::{MutantBackend, TokenShift};

/// One deliberate defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// Release removes whoever holds the name, not only its own hold.
    NoOwnerCheck,
    /// Sessions never expire, so a crashed holder keeps its lock forever.
    NeverExpires,
    /// Every hold gets the same fencing token.
    RepeatingTokens,
    /// Semaphores admit one permit more than their limit.
    SemaphoreOffByOne,
    /// Readers are admitted while a writer holds.
    ReaderWhileWriter,
    /// `lost()` never fires.
    LostNeverFires,
    /// `lost()` fires only long after the store gave the lock away.
    LostFiresLate,
    /// A cancelled acquisition keeps running and leaks its hold.
    LeakyCancel,
    /// `acquire(n)` takes permits one by one, holding some while waiting for the rest.
    PartialSemaphore,
    /// Downgrade releases the write lock before taking the read lock.
    DowngradeGap,
    /// Release reports success even when the store could not be reached.
    ReleaseLies,
    /// `request_revoke` reports success but tells nobody.
    SilentRevoke,
    /// Sessions are never renewed, so healthy holds expire.
    RenewalStops,
    /// The connection-event stream never reports anything.
    SilentEvents,
    /// `state()` always reports the lock free with nobody waiting.
    BlindState,
    /// A zero or absurd TTL is accepted (silently replaced by a default).
    LenientTtl,
    /// Fencing counters start again from 1 after the store restarts.
    TokensResetOnRestart,
    /// A release during a connection loss never returns.
    ReleaseHangs,
    /// Releasing a hold a second time reports an error.
    SecondReleaseFails,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 19] = [
        Mutant::NoOwnerCheck,
        Mutant::NeverExpires,
        Mutant::RepeatingTokens,
        Mutant::SemaphoreOffByOne,
        Mutant::ReaderWhileWriter,
        Mutant::LostNeverFires,
        Mutant::LostFiresLate,
        Mutant::LeakyCancel,
        Mutant::PartialSemaphore,
        Mutant::DowngradeGap,
        Mutant::ReleaseLies,
        Mutant::SilentRevoke,
        Mutant::RenewalStops,
        Mutant::SilentEvents,
        Mutant::BlindState,
        Mutant::LenientTtl,
        Mutant::TokensResetOnRestart,
        Mutant::ReleaseHangs,
        Mutant::SecondReleaseFails,
    ];

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Mutant::NoOwnerCheck => "no-owner-check",
            Mutant::NeverExpires => "never-expires",
            Mutant::RepeatingTokens => "repeating-tokens",
            Mutant::SemaphoreOffByOne => "semaphore-off-by-one",
            Mutant::ReaderWhileWriter => "reader-while-writer",
            Mutant::LostNeverFires => "lost-never-fires",
            Mutant::LostFiresLate => "lost-fires-late",
            Mutant::LeakyCancel => "leaky-cancel",
            Mutant::PartialSemaphore => "partial-semaphore",
            Mutant::DowngradeGap => "downgrade-gap",
            Mutant::ReleaseLies => "release-lies",
            Mutant::SilentRevoke => "silent-revoke",
            Mutant::RenewalStops => "renewal-stops",
            Mutant::SilentEvents => "silent-events",
            Mutant::BlindState => "blind-state",
            Mutant::LenientTtl => "lenient-ttl",
            Mutant::TokensResetOnRestart => "tokens-reset-on-restart",
            Mutant::ReleaseHangs => "release-hangs",
            Mutant::SecondReleaseFails => "second-release-fails",
        }
    }

    /// The harness for this mutant.
    pub fn harness(self) -> Arc<dyn Harness> {
        let base = match self {
            Mutant::NeverExpires => MemoryHarness::with_options(
                MemoryOptions::default()
                    .session_ttl(None)
                    .unwrap_or_default(),
            ),
            Mutant::RenewalStops => MemoryHarness::new().pausing_clients(),
            _ => MemoryHarness::new(),
        };
        Arc::new(MutantHarness {
            base,
            mutant: self,
            tokens: Arc::new(TokenShift::default()),
        })
    }
}

/// The memory harness with every client wrapped in a [`MutantBackend`].
pub struct MutantHarness {
    base: MemoryHarness,
    mutant: Mutant,
    tokens: Arc<TokenShift>,
}

#[async_trait]
impl Harness for MutantHarness {
    fn name(&self) -> String {
        format!("mutant:{}", self.mutant.name())
    }

    async fn client(&self) -> Result<TestClient, String> {
        let client = self.base.client().await?;
        Ok(TestClient {
            locks: Arc::new(MutantBackend::new(
                client.locks,
                self.mutant,
                self.base.store().clone(),
                self.tokens.clone(),
            )) as SharedBackend,
            index: client.index,
        })
    }

    fn crash_release_bound(&self) -> Duration {
        self.base.crash_release_bound()
    }

    async fn expire_session(&self, client: &TestClient) -> HookResult {
        self.base.expire_session(client).await
    }

    async fn cut_connection(&self, client: &TestClient) -> HookResult {
        self.base.cut_connection(client).await
    }

    async fn heal_connection(&self, client: &TestClient) -> HookResult {
        self.base.heal_connection(client).await
    }

    async fn spawn_holder(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        self.base.spawn_holder(name).await
    }

    async fn restart_server(&self) -> HookResult {
        if self.mutant == Mutant::TokensResetOnRestart {
            self.tokens.restart();
        }
        self.base.restart_server().await
    }

    async fn connect_with_ttl(&self, ttl: Duration) -> HookResult<lockcore::Result<SharedBackend>> {
        if self.mutant == Mutant::LenientTtl {
            return Ok(self.base.store().connect(MemoryOptions::default()).await);
        }
        self.base.connect_with_ttl(ttl).await
    }

    async fn connect_unreachable(&self) -> HookResult<lockcore::Result<SharedBackend>> {
        self.base.connect_unreachable().await
    }
}
