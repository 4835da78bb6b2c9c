//! Fault hooks the Redis harnesses (one server and Redlock) share.

use backend_redis::RedisBackend;
use conformance::{HookError, HookResult};
use lockcore::LockBackend;

/// The store drops every hold of `holder` at once: a forced release by `admin`, another
/// client (Redis has no sessions; a hold lives in its key). The forced release publishes the
/// removal on the lock's channel, which the holder's connection receives before the reply to
/// its next request; that request is made here, so the holder has been told on return.
pub async fn expire_holds(holder: &RedisBackend, admin: &RedisBackend) -> HookResult {
    let failed = |what: &str, e: lockcore::Error| HookError::Failed(format!("{what}: {e}"));
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
