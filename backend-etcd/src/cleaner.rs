//! Cleanups that must outlive the caller's runtime: deleting the key of a cancelled or timed-out
//! acquisition, releasing a dropped hold, revoking the leases of a dropped backend.
//!
//! A CLI that gives up waiting exits right after `lock_timeout` returns, shutting its runtime
//! down: a cleanup spawned there never runs, and the client's connection (whose tasks live on
//! that runtime) is gone too. So each backend instance also keeps a second connection whose
//! tasks live on lockcore's background runtime, and runs its cleanups there: a timed-out
//! waiter's key is deleted at once even when its process exits right away.

use std::future::Future;

use etcd_client::{Client, ConnectOptions, KvClient, LeaseClient};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::members::MemberProber;

/// A connection for cleanups, served by the crate's own runtime.
pub(crate) struct Cleaner {
    runtime: Handle,
    /// The key-value client of the cleanup connection.
    pub(crate) kv: KvClient,
    /// The lease client of the cleanup connection.
    pub(crate) leases: LeaseClient,
    /// Keeps the cleanup connection off members that do not answer.
    prober: Option<JoinHandle<()>>,
}

impl Cleaner {
    /// Opens the cleanup connection (and logs in). `None`
    /// if the crate's runtime or the client cannot start; cleanups then use the caller's
    /// runtime and connection.
    pub(crate) async fn open(endpoints: Vec<String>, options: ConnectOptions) -> Option<Cleaner> {
        let runtime = tumbler_core::cleanup::background_runtime()?;
        let connect = runtime.spawn(async move {
            let client = Client::connect(&endpoints, Some(options.clone())).await?;
            let prober = MemberProber::spawn(&client, &endpoints, &options);
            Ok::<_, etcd_client::Error>((client, prober))
        });
        match connect.await {
            Ok(Ok((client, prober))) => Some(Cleaner {
                runtime,
                kv: client.kv_client(),
                leases: client.lease_client(),
                prober,
            }),
            Ok(Err(error)) => {
                tracing::debug!(%error, "no etcd cleanup connection; cleanups use the main one");
                None
            }
            Err(_) => None,
        }
    }

    /// Runs `task` on the crate's runtime, now, whatever happens to the caller's.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }
}

impl Drop for Cleaner {
    fn drop(&mut self) {
        if let Some(prober) = &self.prober {
            prober.abort();
        }
    }
}
