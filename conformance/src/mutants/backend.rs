//! [`MutantBackend`]: memory with one deliberate defect.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tumbler_core::memory::MemoryStore;
use tumbler_core::{
    hold_signals, AcquireRequest, Capabilities, ConnectionEvents, ConnectionMonitor, Hold,
    LockBackend, LockKind, LockName, LockState, Result, SharedBackend,
};

use super::held::{
    DeafProclaim, ForceRelease, GappyDowngrade, GrudgingRelease, HangingRelease, LyingRelease,
    Muffled, Pieces,
};
use super::Mutant;

/// How late [`Mutant::LostFiresLate`] reports a loss.
const LATE: Duration = Duration::from_secs(8);

/// Fencing tokens as [`Mutant::TokensResetOnRestart`] reports them: shifted down so that they
/// start again from 1 after each restart of the store.
#[derive(Debug, Default)]
pub struct TokenShift {
    highest: std::sync::atomic::AtomicU64,
    offset: std::sync::atomic::AtomicU64,
}

impl TokenShift {
    fn report(&self, token: u64) -> u64 {
        use std::sync::atomic::Ordering::SeqCst;
        self.highest.fetch_max(token, SeqCst);
        token.saturating_sub(self.offset.load(SeqCst))
    }

    /// The store restarted: tokens start again from 1.
    pub fn restart(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.offset.store(self.highest.load(SeqCst), SeqCst);
    }
}

/// Where [`Mutant::ElectionBesideLock`] keeps an election: apart from the lock of that name.
fn election_shadow(name: &LockName) -> Result<LockName> {
    LockName::new(format!("{name}-election"))
}

/// A memory client with one defect.
pub struct MutantBackend {
    inner: SharedBackend,
    mutant: Mutant,
    store: MemoryStore,
    /// A monitor that never emits, for [`Mutant::SilentEvents`].
    silent: ConnectionMonitor,
    tokens: Arc<TokenShift>,
}

impl MutantBackend {
    /// Wraps `inner` (a client of `store`).
    pub fn new(
        inner: SharedBackend,
        mutant: Mutant,
        store: MemoryStore,
        tokens: Arc<TokenShift>,
    ) -> Self {
        MutantBackend {
            inner,
            mutant,
            store,
            silent: ConnectionMonitor::new(),
            tokens,
        }
    }

    async fn acquire_mutated(&self, mut request: AcquireRequest) -> Result<Option<Hold>> {
        let name = request.name.clone();
        match (self.mutant, request.kind) {
            (Mutant::SemaphoreOffByOne, LockKind::Permits { limit, count }) => {
                request.kind = LockKind::Permits {
                    limit: limit + 1,
                    count,
                };
            }
            (Mutant::ReaderWhileWriter, LockKind::Read) => {
                request.name = LockName::new(format!("{}-shadow", request.name))?;
            }
            (Mutant::PartialSemaphore, LockKind::Permits { limit, count }) if count > 1 => {
                return self.piecemeal(request, limit, count).await;
            }
            (Mutant::KindsCoexist, LockKind::Read | LockKind::Write) => {
                request.name = LockName::new(format!("{}-rwlock", request.name))?;
            }
            (Mutant::KindsCoexist, LockKind::Permits { .. }) => {
                request.name = LockName::new(format!("{}-semaphore", request.name))?;
            }
            (Mutant::ElectionBesideLock, LockKind::Leader) => {
                request.name = election_shadow(&request.name)?;
            }
            (Mutant::LimitMismatchOverGrants, LockKind::Permits { limit, .. }) => {
                request.name = LockName::new(format!("{}-limit-{limit}", request.name))?;
            }
            (Mutant::BusyWhenUnreachable, _) => {
                let wait = request.wait;
                return match self.inner.acquire(request).await {
                    Err(e) if e.is_transient() && !wait => Ok(None),
                    // A waiter treats the outage as "still busy" and keeps waiting.
                    Err(e) if e.is_transient() => std::future::pending().await,
                    other => other,
                };
            }
            (Mutant::LeakyCancel, _) => {
                let inner = self.inner.clone();
                return tokio::spawn(async move { inner.acquire(request).await })
                    .await
                    .map_err(|e| tumbler_core::Error::backend("mutant", e.to_string()))?;
            }
            _ => {}
        }
        let Some(mut hold) = self.inner.acquire(request).await? else {
            return Ok(None);
        };
        match self.mutant {
            Mutant::RepeatingTokens => hold.token = 7,
            Mutant::TokensResetOnRestart | Mutant::TokenLowerAfterDamage => {
                hold.token = self.tokens.report(hold.token)
            }
            Mutant::ValidityAfterRenewal => {
                // The holder's signals learn of a loss only through a forwarding task: no
                // deadline travels with the grant.
                let (notifier, signals) = hold_signals();
                let notifier = Arc::new(notifier);
                let real = hold.signals.clone();
                let forward = notifier.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        reason = real.lost() => { forward.lost(reason); }
                        () = forward.closed() => {}
                    }
                });
                hold.signals = signals;
                hold.held = Box::new(Muffled {
                    inner: hold.held,
                    _notifier: notifier,
                });
            }
            Mutant::ReleaseHangs => hold.held = Box::new(HangingRelease { inner: hold.held }),
            Mutant::SecondReleaseFails => {
                hold.held = Box::new(GrudgingRelease {
                    inner: hold.held,
                    name,
                    releases: 0,
                })
            }
            Mutant::NoOwnerCheck => {
                hold.held = Box::new(ForceRelease {
                    inner: hold.held,
                    store: self.store.clone(),
                    name,
                })
            }
            Mutant::ReleaseLies => hold.held = Box::new(LyingRelease { inner: hold.held }),
            Mutant::ProclaimIgnored => hold.held = Box::new(DeafProclaim { inner: hold.held }),
            Mutant::DowngradeGap => {
                hold.held = Box::new(GappyDowngrade {
                    inner: hold.held,
                    backend: self.inner.clone(),
                    name,
                })
            }
            Mutant::LostNeverFires | Mutant::LostFiresLate => {
                let (notifier, signals) = hold_signals();
                let notifier = Arc::new(notifier);
                if self.mutant == Mutant::LostFiresLate {
                    let real = hold.signals.clone();
                    let late = notifier.clone();
                    tokio::spawn(async move {
                        let reason = real.lost().await;
                        tokio::time::sleep(LATE).await;
                        late.lost(reason);
                    });
                }
                hold.signals = signals;
                hold.held = Box::new(Muffled {
                    inner: hold.held,
                    _notifier: notifier,
                });
            }
            _ => {}
        }
        Ok(Some(hold))
    }

    /// Takes `count` permits one at a time, keeping the ones it has while it waits.
    async fn piecemeal(
        &self,
        request: AcquireRequest,
        limit: u32,
        count: u32,
    ) -> Result<Option<Hold>> {
        let mut parts = Vec::new();
        let mut first: Option<(u64, tumbler_core::HoldSignals)> = None;
        for _ in 0..count {
            let one = AcquireRequest {
                name: request.name.clone(),
                kind: LockKind::Permits { limit, count: 1 },
                wait: request.wait,
                value: Vec::new(),
            };
            match self.inner.acquire(one).await? {
                Some(hold) => {
                    first.get_or_insert((hold.token, hold.signals.clone()));
                    parts.push(hold.held);
                }
                None => {
                    let mut pieces = Pieces { parts };
                    let _ = tumbler_core::HeldLock::release(&mut pieces).await;
                    return Ok(None);
                }
            }
        }
        let Some((token, signals)) = first else {
            return Ok(None);
        };
        Ok(Some(Hold {
            token,
            signals,
            held: Box::new(Pieces { parts }),
        }))
    }
}

#[async_trait]
impl LockBackend for MutantBackend {
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        caps.backend = "mutant";
        caps
    }

    fn address(&self) -> String {
        self.inner.address()
    }

    async fn acquire(&self, request: AcquireRequest) -> Result<Option<Hold>> {
        self.acquire_mutated(request).await
    }

    async fn state(&self, name: &LockName) -> Result<LockState> {
        if self.mutant == Mutant::BlindState {
            return Ok(LockState::free(name.clone()));
        }
        LockBackend::state(&*self.inner, name).await
    }

    async fn request_revoke(&self, name: &LockName) -> Result<usize> {
        if self.mutant == Mutant::SilentRevoke {
            return Ok(1);
        }
        LockBackend::request_revoke(&*self.inner, name).await
    }

    fn connection_events(&self) -> ConnectionEvents {
        if self.mutant == Mutant::SilentEvents {
            return self.silent.subscribe();
        }
        self.inner.connection_events()
    }

    async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown().await
    }

    async fn leader(&self, name: &LockName) -> Result<Option<tumbler_core::LeaderInfo>> {
        if self.mutant == Mutant::ElectionBesideLock {
            return self.inner.leader(&election_shadow(name)?).await;
        }
        self.inner.leader(name).await
    }

    async fn leader_changed(
        &self,
        name: &LockName,
        seen: Option<&tumbler_core::LeaderInfo>,
    ) -> Result<Option<tumbler_core::LeaderInfo>> {
        match self.mutant {
            Mutant::ElectionBesideLock => {
                self.inner
                    .leader_changed(&election_shadow(name)?, seen)
                    .await
            }
            // Wakes only for another term: a proclaimed value goes unnoticed.
            Mutant::ObserverIgnoresValues => loop {
                let now = self.inner.leader_changed(name, seen).await?;
                if now.as_ref().map(|l| l.term) != seen.map(|l| l.term) {
                    return Ok(now);
                }
                let changed = now.clone();
                let _ = self.inner.leader_changed(name, changed.as_ref()).await?;
            },
            _ => self.inner.leader_changed(name, seen).await,
        }
    }
}
