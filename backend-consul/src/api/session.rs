//! The session endpoint: create, renew, destroy.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tumbler_core::{Error, Result};

use super::kv::go_duration;
use super::{Api, Call, BACKEND};

/// What Consul does with a session's keys when the session is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behavior {
    /// Release them (and put them under lock-delay): api.Lock's sessions.
    Release,
    /// Delete them: api.Semaphore's sessions and our waiter sessions.
    Delete,
}

/// The settings of a session to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionSpec {
    /// Shown in the UI and `/v1/session/list`.
    pub(crate) name: String,
    /// Consul invalidates the session after 2 × TTL without a renewal.
    pub(crate) ttl: Duration,
    /// How long released-by-invalidation keys stay unacquirable.
    pub(crate) lock_delay: Duration,
    /// Release or delete the keys on invalidation.
    pub(crate) behavior: Behavior,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody<'a> {
    name: &'a str,
    #[serde(rename = "TTL")]
    ttl: String,
    lock_delay: String,
    behavior: &'a str,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

impl Api {
    /// `PUT /v1/session/create`: the new session's ID.
    pub(crate) async fn session_create(&self, spec: &SessionSpec) -> Result<String> {
        let what = "session create";
        let body = CreateBody {
            name: &spec.name,
            ttl: go_duration(spec.ttl),
            // `go_duration` never writes 0 (that means "default" for waits); here 0 is 0.
            lock_delay: if spec.lock_delay.is_zero() {
                "0s".to_string()
            } else {
                go_duration(spec.lock_delay)
            },
            behavior: match spec.behavior {
                Behavior::Release => "release",
                Behavior::Delete => "delete",
            },
        };
        let req = self
            .request(Method::PUT, "/v1/session/create", &[], self.request_timeout)
            .json(&body);
        let body = self.call(req, what, Call::Ordinary).await?;
        match body.status {
            StatusCode::OK => {
                let created: Created = serde_json::from_slice(&body.bytes).map_err(|e| {
                    Error::backend(BACKEND, format!("{what}: unexpected answer: {e}"))
                })?;
                Ok(created.id)
            }
            StatusCode::INTERNAL_SERVER_ERROR
                if String::from_utf8_lossy(&body.bytes).contains("Session TTL") =>
            {
                Err(Error::invalid(
                    "consul session ttl",
                    format!(
                        "the agent refused TTL {}: {}; use a TTL within the agent's limits \
                         (10s..=24h unless session_ttl_min is lowered)",
                        tumbler_core::params::format_duration(spec.ttl),
                        String::from_utf8_lossy(&body.bytes).trim()
                    ),
                ))
            }
            status => Err(self.status_error(what, status, &body.bytes)),
        }
    }

    /// `PUT /v1/session/renew/<id>`: `false` when the session no longer exists.
    pub(crate) async fn session_renew(&self, id: &str) -> Result<bool> {
        let what = "session renew";
        let req = self.request(
            Method::PUT,
            &format!("/v1/session/renew/{id}"),
            &[],
            self.request_timeout,
        );
        let body = self.call(req, what, Call::Ordinary).await?;
        match body.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(self.status_error(what, status, &body.bytes)),
        }
    }

    /// `PUT /v1/session/destroy/<id>`: releases (or deletes) the session's keys now, with
    /// lock-delay.
    pub(crate) async fn session_destroy(&self, id: &str) -> Result<()> {
        let what = "session destroy";
        let req = self.request(
            Method::PUT,
            &format!("/v1/session/destroy/{id}"),
            &[],
            self.request_timeout,
        );
        let body = self.call(req, what, Call::Ordinary).await?;
        match body.status {
            StatusCode::OK => Ok(()),
            status => Err(self.status_error(what, status, &body.bytes)),
        }
    }
}
