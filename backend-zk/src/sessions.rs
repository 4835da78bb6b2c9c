//! [`Sessions`]: the backend's current session, and a new one whenever the old one is retired
//! (Curator-like: after an expiry, later operations run on a fresh session).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tumbler_core::retry::{retry, Backoff};
use tumbler_core::{ConnectionEvent, ConnectionMonitor, Error, Result};
use zookeeper_client as zk;

use crate::config::ZkConfig;
use crate::error::{convert, BACKEND};
use crate::session::Session;

/// The longest pause between two attempts to open a replacement session in the background.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// The sessions of one backend: the current one, opened again after it is retired.
pub(crate) struct Sessions {
    config: ZkConfig,
    addr: String,
    current: StdMutex<Option<Arc<Session>>>,
    opening: tokio::sync::Mutex<()>,
    monitor: Arc<ConnectionMonitor>,
    closed: AtomicBool,
    /// Set by `shutdown`: ends a connect attempt under way at once.
    closing: tokio::sync::watch::Sender<bool>,
    me: Weak<Sessions>,
}

impl Sessions {
    /// Opens the first session; fails quickly with a typed error if no server answers.
    pub(crate) async fn connect(config: ZkConfig) -> Result<Arc<Sessions>> {
        let sessions = Arc::new_cyclic(|me| Sessions {
            addr: config.address(),
            config,
            current: StdMutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            monitor: Arc::new(ConnectionMonitor::new()),
            closed: AtomicBool::new(false),
            closing: tokio::sync::watch::channel(false).0,
            me: me.clone(),
        });
        sessions.current().await?;
        Ok(sessions)
    }

    /// The connection events of this backend.
    pub(crate) fn monitor(&self) -> &ConnectionMonitor {
        &self.monitor
    }

    /// The session to use now, opening a new one if the current one was retired.
    pub(crate) async fn current(&self) -> Result<Arc<Session>> {
        if let Some(session) = self.live()? {
            return Ok(session);
        }
        let _opening = self.opening.lock().await;
        if let Some(session) = self.live()? {
            return Ok(session);
        }
        let first = self.lock_current().is_none();
        let session = self.open().await?;
        if self.closed.load(Ordering::SeqCst) {
            session.close();
            return Err(Error::Closed { backend: BACKEND });
        }
        *self.lock_current() = Some(session.clone());
        if !first {
            self.monitor.emit(ConnectionEvent::Reconnected);
        }
        Ok(session)
    }

    /// The current session if it was not retired, without waiting.
    pub(crate) fn peek(&self) -> Option<Arc<Session>> {
        self.lock_current().clone()
    }

    /// Closes the current session (its ephemeral nodes go with it) and refuses new work.
    ///
    /// Returns at once when the session was already lost (nobody can confirm its close) and
    /// ends a connect attempt under way; otherwise waits up to the request timeout for the
    /// servers to confirm the close.
    pub(crate) async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.send_replace(true);
        let session = self.lock_current().take();
        if let Some(session) = session {
            let connected = session.usable();
            session.close();
            if connected && !session.closed_within(self.config.request_limit()).await {
                tracing::warn!(
                    session = %session.id(),
                    "the zookeeper session did not confirm its close in time; the servers will expire it"
                );
            }
        }
    }

    fn live(&self) -> Result<Option<Arc<Session>>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed { backend: BACKEND });
        }
        Ok(self.lock_current().as_ref().filter(|s| s.usable()).cloned())
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Session>>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session, trying every host in turn until one serves or the connect timeout
    /// passes (servers in an election refuse for a moment, so one round is not enough).
    async fn open(&self) -> Result<Arc<Session>> {
        let mut closing = self.closing.subscribe();
        tokio::select! {
            opened = self.open_now() => opened,
            _ = closing.wait_for(|closing| *closing) => Err(Error::Closed { backend: BACKEND }),
        }
    }

    async fn open_now(&self) -> Result<Arc<Session>> {
        let config = &self.config;
        let connector = config.connector()?;
        let hosts = config.client_hosts();
        let started = Instant::now();
        let deadline = started + config.connect_timeout;
        let addr = self.addr.as_str();
        // Servers in an election refuse for a moment, so one round over the hosts is not enough.
        let attempt = || {
            let connector = connector.clone();
            let hosts = hosts.as_str();
            async move {
                let sent = Instant::now();
                let left = deadline.saturating_duration_since(sent);
                match tokio::time::timeout(left, connector.connect(hosts)).await {
                    Ok(Ok(client)) => Ok((client, sent)),
                    Ok(Err(
                        error @ (zk::Error::NoHosts
                        | zk::Error::Timeout
                        | zk::Error::ConnectionLoss
                        | zk::Error::Custom(_)),
                    )) => Err(Error::connection(
                        BACKEND,
                        addr,
                        format!(
                            "no server accepted a session within {} ({error}); check the host list and that ZooKeeper runs there",
                            tumbler_core::params::format_duration(config.connect_timeout)
                        ),
                    )),
                    Ok(Err(error)) => Err(convert(error, addr, "connecting")),
                    Err(_) => Err(Error::Timeout {
                        operation: "connecting to zookeeper".into(),
                        addr: addr.to_owned(),
                        after: started.elapsed(),
                    }),
                }
            }
        };
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let (client, sent) = retry(backoff, Some(deadline), attempt).await?;
        tracing::info!(session = %client.session_id(), timeout = ?client.session_timeout(), "zookeeper session opened");
        let me = self.me.clone();
        Ok(Session::start(
            client,
            sent,
            config.request_limit(),
            self.monitor.clone(),
            move |reason| {
                if reason != tumbler_core::LostReason::Abandoned {
                    reopen_in_background(me);
                }
            },
        ))
    }
}

/// Opens a replacement session in the background so that the connection events report
/// `Reconnected` without waiting for the next operation.
fn reopen_in_background(sessions: Weak<Sessions>) {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_RECONNECT_PAUSE);
        loop {
            let Some(live) = sessions.upgrade() else {
                return;
            };
            match live.current().await {
                Ok(_) | Err(Error::Closed { .. }) => return,
                Err(error) => tracing::warn!(%error, "cannot open a new zookeeper session yet"),
            }
            drop(live);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    });
}
