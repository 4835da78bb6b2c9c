//! Keeps the client's balancer off members that do not answer.
//!
//! etcd-client balances requests over every endpoint with tonic's power-of-two-choices
//! balancer. A member that was reachable once and then dies stays in the balancer: its
//! connection reconnects lazily, looks ready, and carries the least load (it has no streams),
//! so the balancer keeps choosing it and each such request fails at once. With one member of
//! three down, a lease's keep-alives could then fail until the lease ran out, while two
//! members were answering all along (etcd's Go client skips such members by their connection
//! state).
//!
//! A [`MemberProber`] asks every member for its status a few times a second, over a
//! connection of its own to that member alone, and takes a member that fails to answer (or
//! answers without knowing a leader) out of the balancer until it answers again. It never
//! takes out the last members: when none answers, the balancer keeps them all, so the first
//! member back is found by the next request as well as by the next probe.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// How often every member is asked.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long a member may take to answer a status request before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(750);

/// Probes the members behind one balanced client; see the [module docs](self).
pub(crate) struct MemberProber {
    client: Client,
    endpoints: Vec<String>,
    options: ConnectOptions,
}

impl MemberProber {
    /// Starts probing on the current runtime when there is more than one endpoint (with one,
    /// there is nothing to choose). The task runs until it is aborted.
    pub(crate) fn spawn(
        client: &Client,
        endpoints: &[String],
        options: &ConnectOptions,
    ) -> Option<JoinHandle<()>> {
        if endpoints.len() < 2 {
            return None;
        }
        let prober = MemberProber {
            client: client.clone(),
            endpoints: endpoints.to_vec(),
            options: options.clone(),
        };
        Some(tokio::spawn(prober.run()))
    }

    async fn run(self) {
        // One client per member, connected on first use (a member down at the start gets
        // its connection once it is up).
        let mut probes: Vec<Option<Client>> = vec![None; self.endpoints.len()];
        let mut balanced: BTreeSet<usize> = (0..self.endpoints.len()).collect();
        loop {
            let answers = futures_util::future::join_all(
                probes
                    .iter_mut()
                    .zip(&self.endpoints)
                    .map(|(probe, endpoint)| answers(probe, endpoint, &self.options)),
            )
            .await;
            let up: BTreeSet<usize> = answers
                .iter()
                .enumerate()
                .filter_map(|(i, up)| up.then_some(i))
                .collect();
            if !up.is_empty() {
                self.rebalance(&mut balanced, &up).await;
            }
            sleep(PROBE_EVERY).await;
        }
    }

    /// Puts exactly the members in `up` into the balancer (adding first, so it is never
    /// empty).
    async fn rebalance(&self, balanced: &mut BTreeSet<usize>, up: &BTreeSet<usize>) {
        for &i in up.difference(&balanced.clone()) {
            match self.client.add_endpoint(&self.endpoints[i]).await {
                Ok(()) => {
                    tracing::info!(endpoint = %self.endpoints[i], "etcd member answers again; requests go to it");
                    balanced.insert(i);
                }
                Err(error) => {
                    tracing::debug!(endpoint = %self.endpoints[i], %error, "cannot add the etcd member back")
                }
            }
        }
        for &i in balanced.clone().difference(up) {
            match self.client.remove_endpoint(&self.endpoints[i]).await {
                Ok(()) => {
                    tracing::warn!(endpoint = %self.endpoints[i], "etcd member does not answer; requests avoid it until it does");
                    balanced.remove(&i);
                }
                Err(error) => {
                    tracing::debug!(endpoint = %self.endpoints[i], %error, "cannot take the etcd member out")
                }
            }
        }
    }
}

/// Whether the member at `endpoint` answers a status request, knowing a leader, within
/// [`PROBE_TIMEOUT`] (connecting `probe` first if needed).
async fn answers(probe: &mut Option<Client>, endpoint: &str, options: &ConnectOptions) -> bool {
    let asked = timeout(PROBE_TIMEOUT, async {
        if probe.is_none() {
            let options = options.clone().with_connect_timeout(PROBE_TIMEOUT);
            *probe = Some(Client::connect([endpoint], Some(options)).await?);
        }
        match probe.as_mut() {
            Some(client) => client.status().await.map(|status| status.leader() != 0),
            None => Ok(false),
        }
    })
    .await;
    matches!(asked, Ok(Ok(true)))
}
