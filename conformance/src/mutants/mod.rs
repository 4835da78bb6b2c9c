//! Deliberately broken backends built on memory. Each breaks one promise the way real lock
//! libraries have broken it; the suite must catch every one (promise 10).

mod backend;
mod held;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tumbler_core::memory::MemoryOptions;
use tumbler_core::{LockName, SharedBackend};

use crate::harness::{Foreign, Harness, Holder, HookError, HookResult, TestClient};
use crate::memory::{MemoryHarness, MemoryWaiter};
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
    /// A hold's validity deadline is not published with the grant: the holder learns of the
    /// loss only from a background task, which a stalled runtime never runs.
    ValidityAfterRenewal,
    /// A killed waiter's queue entry stays until its session TTL runs out.
    WaiterLeakedOnExit,
    /// `try_lock` says busy (`Ok(None)`) when the store cannot be reached.
    BusyWhenUnreachable,
    /// A mutex, a read-write lock and a semaphore of one name are separate locks.
    KindsCoexist,
    /// After the fencing counter is damaged, tokens start again from 1.
    TokenLowerAfterDamage,
    /// Semaphore handles with different limits on one name are separate semaphores.
    LimitMismatchOverGrants,
    /// A leader's proclaim reports success but the advertised value stays the old one.
    ProclaimIgnored,
    /// Followers hear of a new leader but not of a value the same leader proclaimed.
    ObserverIgnoresValues,
    /// An election and a mutex of one name are separate (a leader and a lock holder at once).
    ElectionBesideLock,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 28] = [
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
        Mutant::ValidityAfterRenewal,
        Mutant::WaiterLeakedOnExit,
        Mutant::BusyWhenUnreachable,
        Mutant::KindsCoexist,
        Mutant::TokenLowerAfterDamage,
        Mutant::LimitMismatchOverGrants,
        Mutant::ProclaimIgnored,
        Mutant::ObserverIgnoresValues,
        Mutant::ElectionBesideLock,
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
            Mutant::ValidityAfterRenewal => "validity-after-renewal",
            Mutant::WaiterLeakedOnExit => "waiter-leaked-on-exit",
            Mutant::BusyWhenUnreachable => "busy-when-unreachable",
            Mutant::KindsCoexist => "kinds-coexist",
            Mutant::TokenLowerAfterDamage => "token-lower-after-damage",
            Mutant::LimitMismatchOverGrants => "limit-mismatch-over-grants",
            Mutant::ProclaimIgnored => "proclaim-ignored",
            Mutant::ObserverIgnoresValues => "observer-ignores-values",
            Mutant::ElectionBesideLock => "election-beside-lock",
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

    fn hold_ttl(&self) -> Duration {
        self.base.hold_ttl()
    }

    fn killed_waiter_bound(&self) -> Duration {
        self.base.killed_waiter_bound()
    }

    fn request_timeout(&self) -> Duration {
        self.base.request_timeout()
    }

    async fn spawn_waiter(&self, name: &LockName, ttl: Duration) -> HookResult<Box<dyn Holder>> {
        if self.mutant != Mutant::WaiterLeakedOnExit {
            return self.base.spawn_waiter(name, ttl).await;
        }
        let options = MemoryOptions::default()
            .session_ttl(Some(ttl))
            .map_err(|e| HookError::Failed(e.to_string()))?;
        let (client, backend) = self
            .base
            .connect_with(options)
            .await
            .map_err(HookError::Failed)?;
        Ok(Box::new(LeakyWaiter(MemoryWaiter::start(
            client, backend, name,
        )?)))
    }

    async fn pause_server(&self) -> HookResult {
        self.base.pause_server().await
    }

    async fn resume_server(&self) -> HookResult {
        self.base.resume_server().await
    }

    async fn write_foreign(&self, name: &LockName, what: Foreign) -> HookResult {
        if self.mutant == Mutant::TokenLowerAfterDamage && what != Foreign::WrongType {
            // The damaged counter is taken as zero: tokens start again from 1.
            self.tokens.restart();
            return Ok(());
        }
        self.base.write_foreign(name, what).await
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

    async fn spawn_leader(&self, name: &LockName) -> HookResult<Box<dyn Holder>> {
        self.base.spawn_leader(name).await
    }

    async fn restart_server(&self) -> HookResult {
        if self.mutant == Mutant::TokensResetOnRestart {
            self.tokens.restart();
        }
        self.base.restart_server().await
    }

    async fn connect_with_ttl(
        &self,
        ttl: Duration,
    ) -> HookResult<tumbler_core::Result<SharedBackend>> {
        if self.mutant == Mutant::LenientTtl {
            return Ok(self.base.store().connect(MemoryOptions::default()).await);
        }
        self.base.connect_with_ttl(ttl).await
    }

    async fn connect_unreachable(&self) -> HookResult<tumbler_core::Result<SharedBackend>> {
        self.base.connect_unreachable().await
    }
}

/// A waiter whose death the store never learns of ([`Mutant::WaiterLeakedOnExit`]): "killing"
/// it only stops its renewals, so its queue entry, and the hold it is then granted, stay until
/// its session TTL runs out.
struct LeakyWaiter(MemoryWaiter);

#[async_trait]
impl Holder for LeakyWaiter {
    fn token(&self) -> u64 {
        0
    }

    async fn kill(&mut self) -> HookResult {
        self.0.backend().pause();
        self.0.abandon();
        Ok(())
    }

    async fn pause(&mut self) -> HookResult {
        self.0.pause().await
    }

    async fn resume(&mut self) -> HookResult {
        self.0.resume().await
    }

    async fn wait_lost(&mut self, within: Duration) -> HookResult<bool> {
        self.0.wait_lost(within).await
    }
}
