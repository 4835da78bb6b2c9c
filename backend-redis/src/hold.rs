//! A granted hold on one Redis server: renewal, release, downgrade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use lockcore::{hold_signals, Error, HeldLock, Hold, HoldNotifier, LockName, LostReason, Result};
use tokio::task::{AbortHandle, JoinHandle};

use crate::config::millis;
use crate::keys::{Family, Keys};
use crate::node::{HolderReg, Node};
use crate::reply;
use crate::scripts;
use crate::watchdog::{self, Renewal, Renewer, Timing};

/// The holds a backend instance has, for `held_locks()` and `shutdown()`.
#[derive(Default)]
pub(crate) struct Registry {
    holds: StdMutex<HashMap<u64, Entry>>,
    next: std::sync::atomic::AtomicU64,
}

struct Entry {
    name: LockName,
    release: Arc<dyn Releaser>,
    watchdog: Option<AbortHandle>,
    notifier: Arc<HoldNotifier>,
}

impl Registry {
    fn holds(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add(
        &self,
        name: LockName,
        release: Arc<dyn Releaser>,
        watchdog: Option<AbortHandle>,
        notifier: Arc<HoldNotifier>,
    ) -> u64 {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.holds().insert(
            key,
            Entry {
                name,
                release,
                watchdog,
                notifier,
            },
        );
        key
    }

    pub(crate) fn remove(&self, key: u64) {
        self.holds().remove(&key);
    }

    /// The names of every live hold.
    pub(crate) fn names(&self) -> Vec<LockName> {
        let mut names: Vec<LockName> = self.holds().values().map(|e| e.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Stops every watchdog and releases every hold; their `lost()` fires with `Abandoned`.
    pub(crate) async fn release_all(&self) -> Result<()> {
        let entries: Vec<Entry> = self.holds().drain().map(|(_, e)| e).collect();
        let mut first_error = None;
        for entry in entries {
            if let Some(w) = &entry.watchdog {
                w.abort();
            }
            entry.notifier.lost(LostReason::Abandoned);
            match entry.release.release_on_store().await {
                Ok(_) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Removes a hold from the store.
#[async_trait]
pub(crate) trait Releaser: Send + Sync + 'static {
    /// `Ok(true)` released, `Ok(false)` it was no longer ours.
    async fn release_on_store(&self) -> Result<bool>;
}

/// The identity of a hold on the store (changes on downgrade).
#[derive(Debug, Clone)]
struct Ident {
    mode: &'static str,
    value: String,
}

/// One hold on one server.
pub(crate) struct Lease {
    node: Arc<Node>,
    keys: Arc<Keys>,
    family: Family,
    ident: StdMutex<Ident>,
    notifier: Arc<HoldNotifier>,
    name: LockName,
    token: u64,
}

impl Lease {
    fn ident(&self) -> Ident {
        self.ident.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_ident(&self, ident: Ident) {
        *self.ident.lock().unwrap_or_else(|p| p.into_inner()) = ident;
    }
}

#[async_trait]
impl Renewer for Lease {
    async fn renew(&self) -> Renewal {
        let ident = self.ident();
        let ttl = millis(self.node.settings.ttl).to_string();
        let keys = &self.keys;
        let reply = match self.family {
            Family::Lock => {
                self.node
                    .eval(
                        "renewing a lock",
                        &scripts::EXTEND_LOCK,
                        &[&keys.lock, &keys.readers, &keys.revoked],
                        &[ident.mode, &ident.value, &ttl],
                    )
                    .await
            }
            Family::Semaphore => {
                self.node
                    .eval(
                        "renewing a semaphore lease",
                        &scripts::EXTEND_SEM,
                        &[&keys.sem, &keys.sem_limit, &keys.revoked],
                        &[&ident.value, &ttl],
                    )
                    .await
            }
        };
        match reply.and_then(|r| reply::extended("renewal", &r)) {
            Ok(Some(revoke)) => Renewal::Renewed { revoke },
            Ok(None) if self.ident().value != ident.value => Renewal::Retry,
            Ok(None) => Renewal::Gone,
            Err(error) => Renewal::Failed(error),
        }
    }
}

#[async_trait]
impl Releaser for Lease {
    async fn release_on_store(&self) -> Result<bool> {
        let ident = self.ident();
        let keys = &self.keys;
        let reply = match self.family {
            Family::Lock => {
                self.node
                    .eval(
                        "releasing a lock",
                        &scripts::RELEASE_LOCK,
                        &[
                            &keys.lock,
                            &keys.readers,
                            &keys.queue,
                            &keys.queue_exp,
                            &keys.revoked,
                        ],
                        &[ident.mode, &ident.value, &keys.channel, "0"],
                    )
                    .await?
            }
            Family::Semaphore => {
                self.node
                    .eval(
                        "releasing a semaphore lease",
                        &scripts::RELEASE_SEM,
                        &[
                            &keys.sem,
                            &keys.sem_queue,
                            &keys.sem_queue_exp,
                            &keys.revoked,
                        ],
                        &[&ident.value, &keys.channel, "0"],
                    )
                    .await?
            }
        };
        reply::flag("release", &reply)
    }
}

/// What a granted acquisition needs to become a [`Hold`].
pub(crate) struct Grant {
    pub(crate) node: Arc<Node>,
    pub(crate) keys: Arc<Keys>,
    pub(crate) family: Family,
    pub(crate) mode: &'static str,
    pub(crate) name: LockName,
    pub(crate) token: u64,
    pub(crate) value: String,
    /// When the granting request was sent.
    pub(crate) sent: Instant,
}

impl Grant {
    /// Starts the watchdog and listeners of a granted hold.
    pub(crate) fn into_hold(self, registry: &Arc<Registry>) -> Hold {
        let (notifier, signals) = hold_signals();
        let notifier = Arc::new(notifier);
        let settings = self.node.settings.clone();
        let lease = Arc::new(Lease {
            node: self.node.clone(),
            keys: self.keys.clone(),
            family: self.family,
            ident: StdMutex::new(Ident {
                mode: self.mode,
                value: self.value.clone(),
            }),
            notifier: notifier.clone(),
            name: self.name.clone(),
            token: self.token,
        });
        let registration = self
            .node
            .add_holder(&self.keys.channel, &self.value, notifier.clone());
        let timing = Timing {
            validity: settings.validity(),
            period: settings.renew_period(),
        };
        let watchdog = watchdog::spawn(
            lease.clone(),
            notifier.clone(),
            timing,
            self.sent,
            self.node.health().reconnects(),
            self.name.clone(),
            self.token,
        );
        let registered = registry.add(
            self.name.clone(),
            lease.clone(),
            Some(watchdog.abort_handle()),
            notifier,
        );
        Hold {
            token: self.token,
            held: Box::new(RedisHeld {
                lease,
                watchdog: Some(watchdog),
                registration: Some(registration),
                registry: registry.clone(),
                registered,
                released: false,
            }),
            signals,
        }
    }
}

/// The backend's handle on a hold, inside a lockcore guard.
struct RedisHeld {
    lease: Arc<Lease>,
    watchdog: Option<JoinHandle<()>>,
    registration: Option<HolderReg>,
    registry: Arc<Registry>,
    registered: u64,
    released: bool,
}

impl RedisHeld {
    fn stop_watchdog(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
    }

    fn finish(&mut self) {
        self.released = true;
        self.registration = None;
        self.registry.remove(self.registered);
    }
}

#[async_trait]
impl HeldLock for RedisHeld {
    async fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.stop_watchdog();
        let released = self.lease.release_on_store().await?;
        self.finish();
        if released {
            Ok(())
        } else {
            Err(Error::NotOwner {
                name: self.lease.name.clone(),
            })
        }
    }

    async fn downgrade(&mut self) -> Result<Hold> {
        let lease = &self.lease;
        let ident = lease.ident();
        if lease.family != Family::Lock || ident.mode != "w" {
            return Err(Error::invalid(
                "downgrade",
                "only the write side of a read-write lock can be downgraded",
            ));
        }
        if self.released {
            return Err(Error::NotOwner {
                name: lease.name.clone(),
            });
        }
        let id = ident.value.split(':').next().unwrap_or_default();
        let read_value = format!("{id}:r:{}", lease.token);
        let ttl = millis(lease.node.settings.ttl).to_string();
        let keys = &lease.keys;
        let reply = lease
            .node
            .eval(
                "downgrading a write lock",
                &scripts::DOWNGRADE,
                &[&keys.lock, &keys.readers, &keys.queue],
                &[&ident.value, &read_value, &ttl, &keys.channel],
            )
            .await?;
        if !reply::flag("downgrade", &reply)? {
            return Err(Error::NotOwner {
                name: lease.name.clone(),
            });
        }
        lease.set_ident(Ident {
            mode: "r",
            value: read_value.clone(),
        });
        let registration =
            lease
                .node
                .add_holder(&keys.channel, &read_value, lease.notifier.clone());
        let read = RedisHeld {
            lease: lease.clone(),
            watchdog: self.watchdog.take(),
            registration: Some(registration),
            registry: self.registry.clone(),
            registered: self.registered,
            released: false,
        };
        self.released = true;
        self.registration = None;
        Ok(Hold {
            token: lease.token,
            held: Box::new(read),
            signals: lease.notifier.subscribe(),
        })
    }
}

impl Drop for RedisHeld {
    fn drop(&mut self) {
        self.stop_watchdog();
        if !self.released {
            self.registry.remove(self.registered);
        }
    }
}
