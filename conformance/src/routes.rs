//! The clients of a real-store harness, each behind its own fault proxies.
//!
//! A harness starts one [`FaultProxy`] per server address for every client ([`proxies_to`]),
//! connects the client through them, and registers both in a [`ProxiedClients`]. The registry
//! then serves the fault hooks: [`ProxiedClients::cut`] and [`ProxiedClients::heal`] act on
//! every proxy of one client, so its connection fails alone.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use testkit::proxy::{FaultProxy, ProxyMode};
use tumbler_core::LockBackend;

use crate::{HookError, HookResult, TestClient};

/// One client's backend and the fault proxies in front of its routes to the servers.
pub type Route<B> = (Arc<B>, Vec<Arc<FaultProxy>>);

/// Starts one fault proxy in front of each of `upstreams`, in order.
pub async fn proxies_to(upstreams: &[SocketAddr]) -> Result<Vec<Arc<FaultProxy>>, String> {
    let mut proxies = Vec::new();
    for &upstream in upstreams {
        let proxy = FaultProxy::start(upstream)
            .await
            .map_err(|e| format!("fault proxy: {e}"))?;
        proxies.push(Arc::new(proxy));
    }
    Ok(proxies)
}

/// The proxies' addresses as a host list, `"127.0.0.1:a,127.0.0.1:b"`.
pub fn hosts(proxies: &[Arc<FaultProxy>]) -> String {
    let addrs: Vec<String> = proxies.iter().map(|p| p.addr().to_string()).collect();
    addrs.join(",")
}

/// A harness's clients, numbered in the order they were added ([`TestClient::index`]).
///
/// A cut sets every proxy of the client to the harness's cut mode (chosen at
/// [`ProxiedClients::new`]) and resets its open connections; a heal sets them back to
/// [`ProxyMode::Pass`]. Proxies are controlled outside the registry's lock.
pub struct ProxiedClients<B> {
    cut_mode: ProxyMode,
    clients: Mutex<Vec<Route<B>>>,
}

impl<B> ProxiedClients<B> {
    /// An empty registry whose cuts use `cut_mode` ([`ProxyMode::Blackhole`] for a partition
    /// that holds bytes, [`ProxyMode::Refuse`] for a server that turns connections away).
    pub fn new(cut_mode: ProxyMode) -> Self {
        ProxiedClients {
            cut_mode,
            clients: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Route<B>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a client connected through `proxies` and numbers it. The client's locks are
    /// `backend` behind lockcore's checked layer ([`tumbler_core::share`]: validation, `Closed`
    /// after shutdown), as users get it; the typed backend stays here for the store-side hooks.
    pub fn add(&self, backend: Arc<B>, proxies: Vec<Arc<FaultProxy>>) -> TestClient
    where
        B: LockBackend + 'static,
    {
        let mut clients = self.lock();
        clients.push((backend.clone(), proxies));
        TestClient {
            locks: tumbler_core::share(backend),
            index: clients.len() - 1,
        }
    }

    /// `client`'s backend and proxies; fails if the harness never made that client.
    pub fn get(&self, client: &TestClient) -> HookResult<Route<B>> {
        self.lock()
            .get(client.index)
            .cloned()
            .ok_or_else(|| HookError::Failed(format!("no client {}", client.index)))
    }

    /// `client`'s backend; fails if the harness never made that client.
    pub fn backend(&self, client: &TestClient) -> HookResult<Arc<B>> {
        self.get(client).map(|(backend, _)| backend)
    }

    /// Every proxy of every client, in client order.
    pub fn all_proxies(&self) -> Vec<Arc<FaultProxy>> {
        self.lock()
            .iter()
            .flat_map(|(_, proxies)| proxies.iter().cloned())
            .collect()
    }

    /// Cuts `client`'s connections: each of its proxies switches to the cut mode and resets
    /// every open connection.
    pub fn cut(&self, client: &TestClient) -> HookResult {
        for proxy in self.get(client)?.1 {
            proxy.set_mode(self.cut_mode);
            proxy.cut_all();
        }
        Ok(())
    }

    /// Heals a [cut](ProxiedClients::cut): each of `client`'s proxies passes traffic again.
    pub fn heal(&self, client: &TestClient) -> HookResult {
        for proxy in self.get(client)?.1 {
            proxy.set_mode(ProxyMode::Pass);
        }
        Ok(())
    }

    /// Cuts `client` for the length of a hook: like [`ProxiedClients::cut`], but the returned
    /// [`SavedModes`] puts back the modes the proxies had, so that a hook's own outage does
    /// not heal a cut the test made (an explorer's cut that outlasts an expiry, say).
    pub fn cut_for_a_while(&self, client: &TestClient) -> HookResult<SavedModes> {
        let proxies = self.get(client)?.1;
        let saved = SavedModes::of(proxies.iter().cloned());
        self.cut(client)?;
        Ok(saved)
    }
}

/// The modes some proxies had before a hook changed them for a while.
#[must_use = "restore() puts the proxies back as they were"]
pub struct SavedModes(Vec<(Arc<FaultProxy>, ProxyMode)>);

impl SavedModes {
    /// Remembers each proxy's current mode.
    pub fn of(proxies: impl IntoIterator<Item = Arc<FaultProxy>>) -> Self {
        SavedModes(proxies.into_iter().map(|p| (p.clone(), p.mode())).collect())
    }

    /// Sets every proxy back to the mode it had.
    pub fn restore(self) {
        for (proxy, mode) in self.0 {
            proxy.set_mode(mode);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hooks_outage_gives_back_a_cut_it_did_not_make() {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let proxies = proxies_to(&[upstream.local_addr().expect("addr")])
            .await
            .expect("proxy");
        let clients = ProxiedClients::new(ProxyMode::Blackhole);
        let backend = tumbler_core::memory::MemoryStore::new()
            .connect_client(tumbler_core::memory::MemoryOptions::default())
            .await
            .expect("memory backend");
        let client = clients.add(backend, proxies.clone());
        // Not cut: the hook's outage ends in Pass.
        clients.cut_for_a_while(&client).expect("cut").restore();
        assert_eq!(proxies[0].mode(), ProxyMode::Pass);
        // Cut by the test: the hook's outage leaves it cut.
        clients.cut(&client).expect("cut");
        clients.cut_for_a_while(&client).expect("cut").restore();
        assert_eq!(proxies[0].mode(), ProxyMode::Blackhole);
    }
}
