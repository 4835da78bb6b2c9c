//! Fault hooks the Redis harnesses (one server and Redlock) share.

use std::net::SocketAddr;
use std::time::Duration;

use conformance::{Foreign, HookError, HookResult};
use testkit::redis::Redis;
use tumbler_core::{LockBackend, LockName};
use tumbler_redis::RedisBackend;

/// How long a killed waiter may block others (issue 12 A.2: 3 s), plus slack.
pub const KILLED_WAITER_BOUND: Duration = Duration::from_secs(5);

/// The store drops every hold of `holder` at once: a forced release by `admin`, another
/// client (Redis has no sessions; a hold lives in its key). The forced release publishes the
/// removal on the lock's channel, which the holder's connection receives before the reply to
/// its next request; that request is made here, so the holder has been told on return.
pub async fn expire_holds(holder: &RedisBackend, admin: &RedisBackend) -> HookResult {
    let failed = |what: &str, e: tumbler_core::Error| HookError::Failed(format!("{what}: {e}"));
    holder
        .settle()
        .await
        .map_err(|e| failed("holder subscriptions", e))?;
    for name in holder.held_locks() {
        admin
            .force_release(&name)
            .await
            .map_err(|e| failed("forced release", e))?;
        LockBackend::state(holder, &name)
            .await
            .map_err(|e| failed("the holder's round trip", e))?;
    }
    Ok(())
}

/// Writes `what` on every server, with the backend's key layout (no prefix): the lock key
/// `NAME` (a mutex value is a string; a hash is foreign) and the fence counter
/// `{NAME}#tumbler:fence` (an integer; text or `i64::MAX`, whose next INCR overflows, are
/// foreign or damaged).
pub async fn write_foreign(servers: &[Redis], name: &LockName, what: Foreign) -> HookResult {
    let fence = format!("{{{name}}}#tumbler:fence");
    let max = i64::MAX.to_string();
    let command: Vec<&str> = match what {
        Foreign::WrongType => vec!["HSET", name.as_str(), "owner", "someone-else"],
        Foreign::GarbageCounter => vec!["SET", &fence, "not-a-number"],
        Foreign::OverflowCounter => vec!["SET", &fence, &max],
    };
    for server in servers {
        server
            .cmd(&command)
            .await
            .map_err(|e| HookError::Failed(format!("{command:?}: {e}")))?;
    }
    Ok(())
}

/// URLs `tumbler_locks::connect` must refuse (issue 12 A.8): port 0, credentials both in the
/// userinfo and as `?user=`, and for Redlock one master listed twice, also under an alias.
pub fn bad_urls(scheme: &str, servers: &[SocketAddr]) -> Vec<(String, &'static str)> {
    let port = servers.first().map(|a| a.port()).unwrap_or(6379);
    let mut urls = vec![
        (format!("{scheme}://127.0.0.1:0"), "port 0"),
        (
            format!("{scheme}://alice:secret@127.0.0.1:{port}?user=bob"),
            "credentials given twice",
        ),
    ];
    if scheme == "redis+redlock" {
        let other = servers.get(1).map(|a| a.port()).unwrap_or(port + 1);
        urls.extend([
            (
                format!("{scheme}://127.0.0.1:{port},127.0.0.1:{port},127.0.0.1:{other}"),
                "one master listed twice",
            ),
            (
                format!("{scheme}://127.0.0.1:{port},localhost:{port},127.0.0.1:{other}"),
                "one master listed twice (localhost alias)",
            ),
            (
                format!("{scheme}://127.0.0.1:{port},[::1]:{port},127.0.0.1:{other}"),
                "one master listed twice ([::1] alias)",
            ),
            (
                format!("{scheme}://127.0.0.1:{port},127.0.0.1:0,127.0.0.1:{other}"),
                "port 0 among the masters",
            ),
        ]);
    }
    urls
}
