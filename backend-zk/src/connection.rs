//! [`Sessions`]: the backend's current session, and a new one whenever the old one is retired
//! (Curator-like: after an expiry, later operations run on a fresh session).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use lockcore::{ConnectionEvent, ConnectionMonitor, Error, Result};
use tokio::time::Instant;
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
    pub(crate) async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _opening = self.opening.lock().await;
        let session = self.lock_current().take();
        if let Some(session) = session {
            session.close();
            if !session.closed_within(self.config.request_limit()).await {
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
        let config = &self.config;
        let mut connector = zk::Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.session_timeout / 3)
            .with_fail_eagerly();
        if let Some((user, password)) = &config.credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let hosts = config.connect_string();
        let deadline = Instant::now() + config.connect_timeout;
        let mut pause = Duration::from_millis(50);
        let client = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(left, connector.clone().connect(&hosts)).await {
                Ok(Ok(client)) => break client,
                Ok(Err(error)) => error,
                Err(_) => zk::Error::Timeout,
            };
            let retry = matches!(
                error,
                zk::Error::NoHosts
                    | zk::Error::Timeout
                    | zk::Error::ConnectionLoss
                    | zk::Error::Custom(_)
            );
            if !retry {
                return Err(convert(error, &self.addr, "connecting"));
            }
            if Instant::now() + pause >= deadline {
                return Err(match error {
                    zk::Error::Timeout => Error::Timeout {
                        operation: "connecting to zookeeper".into(),
                        addr: self.addr.clone(),
                        after: config.connect_timeout,
                    },
                    _ => Error::connection(
                        BACKEND,
                        &self.addr,
                        format!(
                            "no server accepted a session within {:?} ({error}); check the host list and that ZooKeeper runs there",
                            config.connect_timeout
                        ),
                    ),
                });
            }
            tracing::debug!(%error, "no zookeeper server serves yet; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        };
        tracing::info!(session = %client.session_id(), timeout = ?client.session_timeout(), "zookeeper session opened");
        let me = self.me.clone();
        Ok(Session::start(
            client,
            config.request_limit(),
            self.monitor.clone(),
            move |reason| {
                if reason != lockcore::LostReason::Abandoned {
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
        let mut pause = Duration::from_millis(100);
        loop {
            let Some(live) = sessions.upgrade() else {
                return;
            };
            match live.current().await {
                Ok(_) | Err(Error::Closed { .. }) => return,
                Err(error) => tracing::warn!(%error, "cannot open a new zookeeper session yet"),
            }
            drop(live);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
        }
    });
}
