//! Who listens on which lock channel in this process: waiters to be woken, holders to be told
//! about revocation or a forced release. Pure bookkeeping under one mutex; the node
//! ([`crate::node`]) sends the `SUBSCRIBE`s and feeds messages in.
//!
//! Messages on `K#tumbler:events`:
//! - `wake MEMBER`: the waiter `MEMBER` (head of the queue) should try now;
//! - `free`: the lock was released and nobody is queued (Redlock mode): every waiter tries;
//! - `revoke VALUE…`: these holds are asked to release;
//! - `gone VALUE…`: these holds were removed by a forced release.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockcore::{HoldNotifier, LostReason};
use tokio::sync::Notify;

/// One channel's local listeners.
#[derive(Default)]
struct Channel {
    waiters: HashMap<String, Arc<Notify>>,
    holders: HashMap<String, Arc<HoldNotifier>>,
    /// The connection generation the channel is subscribed on, if any.
    subscribed: Option<u64>,
    /// When the last listener left (the channel lingers subscribed a while).
    idle_since: Option<Instant>,
    /// A janitor task is watching this channel for retirement.
    janitor: bool,
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
    pub(crate) fn add_waiter(&mut self, channel: &str, member: &str, notify: Arc<Notify>) {
        let entry = self.channels.entry(channel.to_owned()).or_default();
        entry.idle_since = None;
        entry.waiters.insert(member.to_owned(), notify);
    }

    pub(crate) fn add_holder(&mut self, channel: &str, value: &str, notifier: Arc<HoldNotifier>) {
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
            for notify in entry.waiters.values() {
                notify.notify_one();
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
            Some("wake") => {
                for member in words {
                    if let Some(notify) = entry.waiters.get(member) {
                        notify.notify_one();
                    }
                }
            }
            Some("free") => {
                for notify in entry.waiters.values() {
                    notify.notify_one();
                }
            }
            Some("revoke") => {
                for value in words {
                    if let Some(holder) = entry.holders.get(value) {
                        tracing::info!(channel, "revocation requested");
                        holder.revoke_requested();
                    }
                }
            }
            Some("gone") => {
                for value in words {
                    if let Some(holder) = entry.holders.get(value) {
                        if holder.lost(LostReason::Deleted) {
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
        let (a, b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        hub.add_waiter("c", "a:x", a.clone());
        hub.add_waiter("c", "b:x", b.clone());
        hub.dispatch("c", "wake b:x");
        tokio::time::timeout(Duration::from_secs(1), b.notified())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), a.notified())
                .await
                .is_err()
        );
        hub.dispatch("c", "free");
        tokio::time::timeout(Duration::from_secs(1), a.notified())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn revoke_and_gone_reach_holders() {
        let mut hub = HubState::default();
        let (tx, rx) = lockcore::hold_signals();
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
        hub.add_holder("c", "id:x:2", Arc::new(lockcore::hold_signals().0));
        assert!(
            !hub.remove_holder("c", "id:x:2"),
            "a janitor is already watching"
        );
        assert_eq!(hub.janitor_check("c", Duration::ZERO), Janitor::Retired);
    }
}
