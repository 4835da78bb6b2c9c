//! [`Sessions`]: the backend's current session, and a new one whenever the old one is retired
//! (Curator-like: after an expiry, later operations run on a fresh session).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use lockcore::{ConnectionEvent, ConnectionMonitor, Error, Result};
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
        let session = self.open(first).await?;
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

    async fn open(&self, first: bool) -> Result<Arc<Session>> {
        let config = &self.config;
        let mut connector = zk::Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.session_timeout / 3);
        if first {
            // Fail at once when every server refuses, instead of retrying until the deadline.
            connector = connector.with_fail_eagerly();
        }
        if let Some((user, password)) = &config.credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let hosts = config.connect_string();
        let client = match tokio::time::timeout(config.connect_timeout, connector.connect(&hosts))
            .await
        {
            Err(_) => {
                return Err(Error::Timeout {
                    operation: "connecting to zookeeper".into(),
                    addr: self.addr.clone(),
                    after: config.connect_timeout,
                })
            }
            Ok(Err(zk::Error::NoHosts)) => {
                return Err(Error::connection(
                    BACKEND,
                    &self.addr,
                    "no server accepted a connection; check the host list and that ZooKeeper runs there",
                ))
            }
            Ok(Err(error)) => return Err(convert(error, &self.addr, "connecting")),
            Ok(Ok(client)) => client,
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
