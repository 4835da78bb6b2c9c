//! A small client for the parts of Consul's HTTP API that locks use: sessions and KV, with
//! blocking queries. Every request has a timeout; every transport outcome feeds [`Health`].

mod health;
mod kv;
mod session;
#[cfg(feature = "tls")]
mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tumbler_core::{Error, Result};

use crate::config::ConsulConfig;

pub(crate) use health::Health;
pub(crate) use kv::{Acquire, Block, KvPair, Queried};
pub(crate) use session::{Behavior, SessionSpec};

/// The backend's name in errors and capabilities.
pub(crate) const BACKEND: &str = "consul";

/// Consul adds up to `wait / 16` of jitter to a blocking query's wait.
const JITTER_DIVISOR: u32 = 16;

/// The longest an ordinary request goes unanswered before the connection counts as suspended.
const STALL_AFTER: Duration = Duration::from_secs(1);

/// Whether a request is an ordinary one or a blocking query (which may legitimately wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// Answered at once by a healthy agent.
    Ordinary,
    /// `?index=&wait=`: answered when something changes or the wait ends.
    Blocking,
}

/// The HTTP client of one backend instance.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    datacenter: Option<String>,
    request_timeout: Duration,
    query_wait: Duration,
    health: Arc<Health>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Builds the client (no request is sent yet).
    pub(crate) fn new(config: &ConsulConfig, health: Arc<Health>) -> Result<Api> {
        let builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("tumbler-consul/", env!("CARGO_PKG_VERSION")));
        let builder = tls_setup(builder, config)?;
        let http = builder.build().map_err(|e| {
            Error::invalid(
                "consul client settings",
                format!("the HTTP client could not be built: {e}"),
            )
        })?;
        Ok(Api {
            http,
            base: config.base_url(),
            token: config.token.clone(),
            datacenter: config.datacenter.clone(),
            request_timeout: config.request_timeout,
            query_wait: config.query_wait,
            health,
        })
    }

    /// `http(s)://host:port`, for messages.
    pub(crate) fn address(&self) -> &str {
        &self.base
    }

    /// The connection-state tracker.
    pub(crate) fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The configured longest blocking-query wait.
    pub(crate) fn query_wait(&self) -> Duration {
        self.query_wait
    }

    /// The configured timeout of one ordinary request.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A request to `path` (which starts with `/v1/`) with `query` (and the datacenter, and
    /// the token as a header) applied.
    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        timeout: Duration,
    ) -> RequestBuilder {
        let mut encoded = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            encoded.append_pair(k, v);
        }
        if let Some(dc) = &self.datacenter {
            encoded.append_pair("dc", dc);
        }
        let encoded = encoded.finish();
        let url = if encoded.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{encoded}", self.base)
        };
        let mut req = self.http.request(method, url).timeout(timeout);
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        req
    }

    /// Timeout for a blocking query that waits `wait`: the wait, Consul's jitter, and the
    /// ordinary request timeout on top.
    fn blocking_timeout(&self, wait: Duration) -> Duration {
        wait + wait / JITTER_DIVISOR + self.request_timeout
    }

    /// Sends a request; maps transport failures and reports them to [`Health`]. An ordinary
    /// (non-blocking) request that has not been answered after [`Api::stall_after`] reports
    /// the connection suspended at once, while it goes on waiting for its own timeout: a
    /// stalled agent is visible before the timeout runs out.
    async fn send(&self, req: RequestBuilder, what: &str, call: Call) -> Result<Response> {
        let started = Instant::now();
        let pending = req.send();
        tokio::pin!(pending);
        let outcome = match call {
            Call::Blocking => pending.await,
            Call::Ordinary => tokio::select! {
                outcome = &mut pending => outcome,
                () = tokio::time::sleep(self.stall_after()) => {
                    tracing::debug!(what, "consul request stalled; connection suspended");
                    self.health.unreachable();
                    pending.await
                }
            },
        };
        outcome.map_err(|e| {
            self.health.unreachable();
            self.transport_error(e, what, started.elapsed())
        })
    }

    /// How long an ordinary request may go unanswered before the connection counts as
    /// suspended: half the request timeout, at most 1 s.
    fn stall_after(&self) -> Duration {
        (self.request_timeout / 2).min(STALL_AFTER)
    }

    fn transport_error(&self, e: reqwest::Error, what: &str, elapsed: Duration) -> Error {
        if e.is_timeout() {
            Error::Timeout {
                operation: format!("consul {what}"),
                addr: self.base.clone(),
                after: elapsed,
            }
        } else {
            Error::connection(BACKEND, &self.base, format!("{what}: {}", error_chain(&e)))
                .with_source(e)
        }
    }

    /// Reads a body; a failure while reading is a transport failure. An answer that means
    /// "not now" (see [`unavailable`]) counts as unreachable, any other as reachable.
    async fn body(&self, resp: Response, what: &str, started: Instant) -> Result<Body> {
        let status = resp.status();
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match resp.bytes().await {
            Ok(bytes) => {
                if unavailable(status, &String::from_utf8_lossy(&bytes)) {
                    self.health.unreachable();
                } else {
                    self.health.reachable();
                }
                Ok(Body {
                    status,
                    index,
                    bytes: bytes.to_vec(),
                })
            }
            Err(e) => {
                self.health.unreachable();
                Err(self.transport_error(e, what, started.elapsed()))
            }
        }
    }

    /// Sends a request and reads its answer to the end.
    async fn call(&self, req: RequestBuilder, what: &str, call: Call) -> Result<Body> {
        let started = Instant::now();
        let resp = self.send(req, what, call).await?;
        self.body(resp, what, started).await
    }

    /// The error for an answer that is not what the endpoint promises.
    fn status_error(&self, what: &str, status: StatusCode, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(body).trim().to_string();
        match status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Error::Auth {
                backend: BACKEND,
                addr: self.base.clone(),
                message: format!("{what}: {status}: {text}"),
            },
            _ if unavailable(status, &text) => Error::connection(
                BACKEND,
                &self.base,
                format!("{what}: the agent cannot serve it now: HTTP {status}: {text}"),
            ),
            _ => Error::backend(BACKEND, format!("{what}: HTTP {status}: {text}")),
        }
    }
}

/// Answers that mean "not now" rather than "no": no leader (an election is running), a failed
/// RPC to the servers, rate limiting, or a gateway in front of the agent that lost it. They are
/// reported as connection errors, which callers retry.
fn unavailable(status: StatusCode, text: &str) -> bool {
    match status {
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => true,
        StatusCode::INTERNAL_SERVER_ERROR => {
            let text = text.to_ascii_lowercase();
            text.contains("no cluster leader")
                || text.contains("rpc error")
                || text.contains("leadership lost")
                || text.contains("i/o timeout")
        }
        _ => false,
    }
}

/// A response read to the end: status, `X-Consul-Index` and body.
struct Body {
    status: StatusCode,
    index: Option<u64>,
    bytes: Vec<u8>,
}

/// The error and its sources on one line (reqwest puts the useful part in the sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(feature = "tls")]
fn tls_setup(
    builder: reqwest::ClientBuilder,
    config: &ConsulConfig,
) -> Result<reqwest::ClientBuilder> {
    Ok(builder.tls_backend_preconfigured(tls::client_config(config)?))
}

#[cfg(not(feature = "tls"))]
fn tls_setup(
    builder: reqwest::ClientBuilder,
    config: &ConsulConfig,
) -> Result<reqwest::ClientBuilder> {
    if config.https {
        return Err(Error::invalid(
            "consul URL",
            "https (consuls://) needs the `tls` feature of backend-consul",
        ));
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elections_and_overload_are_transient() {
        assert!(unavailable(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No cluster leader"
        ));
        assert!(unavailable(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rpc error making call: EOF"
        ));
        assert!(unavailable(StatusCode::TOO_MANY_REQUESTS, ""));
        assert!(!unavailable(
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid session \"x\""
        ));
        assert!(!unavailable(StatusCode::BAD_REQUEST, "Conflicting flags"));
    }
}
