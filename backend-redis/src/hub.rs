//! Who listens on which lock channel in this process: waiters to be woken, holders to be told
//! about revocation or a forced release. Pure bookkeeping under one mutex; the node
//! ([`crate::node`]) sends the `SUBSCRIBE`s and feeds messages in.
//!
//! Messages on a client's inbox for one name, `{K}#tumbler:to:CLIENT` (only that client hears
//! them, so a hand-off costs one message whatever the number of waiters):
//! - `grant VALUE`: the releasing script handed the lock to the waiter `VALUE` names (its
//!   member is `VALUE` without the token): the hold is the waiter's already;
//! - `wake MEMBER`: the waiter `MEMBER` (head of the queue) should try now;
//! - `revoke VALUE`: this hold is asked to release;
//! - `gone VALUE`: this hold was removed by a forced release.
//!
//! On `{K}#tumbler:events`, which only Redlock waiters (who do not queue) listen to:
//! - `free`: the lock was released and nobody is queued: every waiter tries.
//!
//! On `{K}#tumbler:leader`, which followers of an election listen to:
//! - `leader`: the leadership changed (elected, proclaimed, resigned): every follower reads it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tumbler_core::keeper::HoldTicket;
use tumbler_core::{HoldNotifier, LostReason};

/// What a waiting acquisition hears: a wake-up, or that the lock was handed to it.
pub(crate) struct WaitSignal {
    notify: Arc<Notify>,
    granted: std::sync::Mutex<Option<String>>,
}

impl WaitSignal {
    /// A signal that wakes `notify` (shared by the nodes of a Redlock wait).
    pub(crate) fn new(notify: Arc<Notify>) -> Arc<WaitSignal> {
        Arc::new(WaitSignal {
            notify,
            granted: std::sync::Mutex::new(None),
        })
    }

    /// Resolves at the next wake-up or grant (one that came since the last call counts).
    pub(crate) async fn woken(&self) {
        self.notify.notified().await
    }

    /// The value of a hold handed to this waiter, if a `grant` came (taken once).
    pub(crate) fn take_grant(&self) -> Option<String> {
        self.granted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn wake(&self) {
        self.notify.notify_one();
    }

    fn grant(&self, value: &str) {
        *self.granted.lock().unwrap_or_else(|p| p.into_inner()) = Some(value.to_owned());
        self.notify.notify_one();
    }
}

/// What carries a hold's notifier: the notifier itself, or the hold's keeper ticket.
pub(crate) trait Notified: Send + Sync + 'static {
    /// The hold's notifier.
    fn notifier(&self) -> &HoldNotifier;
}

impl Notified for HoldNotifier {
    fn notifier(&self) -> &HoldNotifier {
        self
    }
}

impl Notified for HoldTicket {
    fn notifier(&self) -> &HoldNotifier {
        HoldTicket::notifier(self)
    }
}

/// One channel's local listeners.
#[derive(Default)]
struct Channel {
    waiters: HashMap<String, Arc<WaitSignal>>,
    holders: HashMap<String, Arc<dyn Notified>>,
    /// The connection generation the channel is subscribed on, if any.
    subscribed: Option<u64>,
    /// When the last listener left (the channel lingers subscribed a while).
    idle_since: Option<Instant>,
    /// A janitor task is watching this channel for retirement.
    janitor: bool,
    /// The last acquisition of this client on this name had to wait.
    contended: bool,
}

impl Channel {
    fn listeners(&self) -> usize {
        self.waiters.len() + self.holders.len()
    }
}

/// What the janitor of an idle channel should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Janitor {
    /// The channel was taken out: unsubscribe it.
    Retired,
    /// Still lingering: look again after this long.
    Wait(Duration),
    /// Listeners came back: stop watching.
    Busy,
}

/// Every channel of one node.
#[derive(Default)]
pub(crate) struct HubState {
    channels: HashMap<String, Channel>,
}

impl HubState {
    pub(crate) fn add_waiter(&mut self, channel: &str, member: &str, signal: Arc<WaitSignal>) {
        let entry = self.channels.entry(channel.to_owned()).or_default();
        entry.idle_since = None;
        entry.waiters.insert(member.to_owned(), signal);
    }

    pub(crate) fn add_holder(&mut self, channel: &str, value: &str, notifier: Arc<dyn Notified>) {
        let entry = self.channels.entry(channel.to_owned()).or_default();
        entry.idle_since = None;
        entry.holders.insert(value.to_owned(), notifier);
    }

    /// Removes a waiter; returns true if a janitor should start watching the channel.
    pub(crate) fn remove_waiter(&mut self, channel: &str, member: &str) -> bool {
        self.remove(channel, |c| {
            c.waiters.remove(member);
        })
    }

    /// Removes a holder; returns true if a janitor should start watching the channel.
    pub(crate) fn remove_holder(&mut self, channel: &str, value: &str) -> bool {
        self.remove(channel, |c| {
            c.holders.remove(value);
        })
    }

    fn remove(&mut self, channel: &str, what: impl FnOnce(&mut Channel)) -> bool {
        let Some(entry) = self.channels.get_mut(channel) else {
            return false;
        };
        what(entry);
        if entry.listeners() > 0 {
            return false;
        }
        entry.idle_since = Some(Instant::now());
        !std::mem::replace(&mut entry.janitor, true)
    }

    /// Whether the last acquisition of this client on `channel`'s name had to wait.
    pub(crate) fn is_contended(&self, channel: &str) -> bool {
        self.channels.get(channel).is_some_and(|c| c.contended)
    }

    /// Records whether an acquisition on `channel`'s name had to wait.
    pub(crate) fn set_contended(&mut self, channel: &str, yes: bool) {
        if let Some(entry) = self.channels.get_mut(channel) {
            entry.contended = yes;
        }
    }

    pub(crate) fn is_subscribed(&self, channel: &str, gen: u64) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| c.subscribed == Some(gen))
    }

    pub(crate) fn mark_subscribed(&mut self, channel: &str, gen: u64) {
        if let Some(entry) = self.channels.get_mut(channel) {
            entry.subscribed = Some(gen);
        }
    }

    /// Marks `channel` as not subscribed; returns whether anyone listens on it.
    pub(crate) fn forget_subscription(&mut self, channel: &str) -> bool {
        match self.channels.get_mut(channel) {
            Some(entry) => {
                entry.subscribed = None;
                true
            }
            None => false,
        }
    }

    /// Every channel, to subscribe again on a new connection.
    pub(crate) fn all_channels(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }

    pub(crate) fn mark_all_subscribed(&mut self, gen: u64) {
        for entry in self.channels.values_mut() {
            entry.subscribed = Some(gen);
        }
    }

    /// The janitor's check: `Retired` takes the channel out (unsubscribe it), `Wait(d)` means
    /// look again after `d`, `Busy` means listeners came back (the janitor ends).
    pub(crate) fn janitor_check(&mut self, channel: &str, linger: Duration) -> Janitor {
        let Some(entry) = self.channels.get_mut(channel) else {
            return Janitor::Busy;
        };
        match entry.idle_since {
            Some(at) if entry.listeners() == 0 => {
                let idle = at.elapsed();
                if idle >= linger {
                    self.channels.remove(channel);
                    Janitor::Retired
                } else {
                    Janitor::Wait(linger - idle)
                }
            }
            _ => {
                entry.janitor = false;
                Janitor::Busy
            }
        }
    }

    /// Wakes every local waiter (after a reconnect, messages may have been missed).
    pub(crate) fn wake_all(&self) {
        for entry in self.channels.values() {
            for signal in entry.waiters.values() {
                signal.wake();
            }
        }
    }

    /// Acts on one message published on `channel`.
    pub(crate) fn dispatch(&self, channel: &str, payload: &str) {
        let Some(entry) = self.channels.get(channel) else {
            return;
        };
        let mut words = payload.split(' ');
        match words.next() {
            Some("grant") => {
                for value in words {
                    let member = value.rsplit_once(':').map_or(value, |(member, _)| member);
                    if let Some(signal) = entry.waiters.get(member) {
                        signal.grant(value);
                    }
                }
            }
            Some("wake") => {
                for member in words {
                    if let Some(signal) = entry.waiters.get(member) {
                        signal.wake();
                    }
                }
            }
            Some("free") | Some("leader") => {
                for signal in entry.waiters.values() {
                    signal.wake();
                }
            }
            Some("revoke") => {
                for value in words {
                    if let Some(holder) = entry.holders.get(value) {
                        tracing::info!(channel, "revocation requested");
                        holder.notifier().revoke_requested();
                    }
                }
            }
            Some("gone") => {
                for value in words {
                    if let Some(holder) = entry.holders.get(value) {
                        if holder.notifier().lost(LostReason::Deleted) {
                            tracing::warn!(channel, "lock lost: removed by a forced release");
                        }
                    }
                }
            }
            _ => tracing::debug!(channel, payload, "ignoring unknown lock event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_the_named_waiter() {
        let mut hub = HubState::default();
        let a = WaitSignal::new(Arc::new(Notify::new()));
        let b = WaitSignal::new(Arc::new(Notify::new()));
        hub.add_waiter("c", "a:x", a.clone());
        hub.add_waiter("c", "b:x", b.clone());
        hub.dispatch("c", "wake b:x");
        tokio::time::timeout(Duration::from_secs(1), b.woken())
            .await
            .unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(20), a.woken())
            .await
            .is_err());
        assert_eq!(b.take_grant(), None, "a wake-up is no grant");
        hub.dispatch("c", "free");
        tokio::time::timeout(Duration::from_secs(1), a.woken())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_grant_reaches_its_waiter_alone() {
        let mut hub = HubState::default();
        let a = WaitSignal::new(Arc::new(Notify::new()));
        let b = WaitSignal::new(Arc::new(Notify::new()));
        hub.add_waiter("c", "a:x", a.clone());
        hub.add_waiter("c", "b:x", b.clone());
        hub.dispatch("c", "grant b:x:42");
        tokio::time::timeout(Duration::from_secs(1), b.woken())
            .await
            .unwrap();
        assert_eq!(b.take_grant().as_deref(), Some("b:x:42"));
        assert_eq!(b.take_grant(), None, "taken once");
        assert_eq!(a.take_grant(), None);
    }

    #[tokio::test]
    async fn revoke_and_gone_reach_holders() {
        let mut hub = HubState::default();
        let (tx, rx) = tumbler_core::hold_signals();
        hub.add_holder("c", "id:x:1", Arc::new(tx));
        hub.dispatch("c", "revoke other id:x:1");
        assert!(rx.is_revoke_requested());
        assert_eq!(rx.lost_reason(), None);
        hub.dispatch("c", "gone id:x:1");
        assert_eq!(rx.lost_reason(), Some(LostReason::Deleted));
        assert!(hub.remove_holder("c", "id:x:1"));
        assert!(matches!(
            hub.janitor_check("c", Duration::from_secs(60)),
            Janitor::Wait(_)
        ));
        hub.add_holder("c", "id:x:2", Arc::new(tumbler_core::hold_signals().0));
        assert!(
            !hub.remove_holder("c", "id:x:2"),
            "a janitor is already watching"
        );
        assert_eq!(hub.janitor_check("c", Duration::ZERO), Janitor::Retired);
    }
}
