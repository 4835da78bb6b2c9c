//! Issue 12 A.8 and A.11: bad configuration is refused at connect, and names a store cannot
//! hold are refused by `LockName` with the rule, in messages of a readable length.

use std::sync::Arc;

use tumbler_core::{Error, LockName, NameRule};

use crate::util::{CaseResult, Verdict, PROMPT};
use crate::{ensure, hook, Harness};

/// Every bad URL of the store (duplicate Redlock masters and their aliases, port 0,
/// credentials given twice) is refused by `tumbler_locks::connect` with `InvalidArgument`, quickly.
pub async fn bad_config_refused(h: Arc<dyn Harness>) -> CaseResult {
    let urls = hook!(h.bad_urls());
    let mut problems = Vec::new();
    for (url, wrong) in urls {
        match tokio::time::timeout(PROMPT, tumbler_locks::connect(&url)).await {
            Err(_) => problems.push(format!("{url} ({wrong}): connect hung for {PROMPT:?}")),
            Ok(Ok(_)) => problems.push(format!("{url} ({wrong}): accepted")),
            Ok(Err(Error::InvalidArgument { .. })) => {}
            Ok(Err(e)) => problems.push(format!("{url} ({wrong}): {e}, not InvalidArgument")),
        }
    }
    ensure!(
        problems.is_empty(),
        "bad configuration not refused: {}",
        problems.join("; ")
    );
    Ok(Verdict::Passed)
}

/// The longest error message a bad name may give (it must not echo a 10 kB name).
const MESSAGE_LIMIT: usize = 300;

/// `.`, `a/./b`, ZooKeeper's reserved `zookeeper` and segments starting with `.` are refused
/// by `LockName` (and so by every handle) with `InvalidName`; a 10 kB name's error is short.
pub async fn names_a_store_cannot_hold(h: Arc<dyn Harness>) -> CaseResult {
    let a = h.client().await?;
    let mut problems = Vec::new();
    for (bad, rule) in [
        (".", NameRule::DotSegment),
        ("a/./b", NameRule::DotSegment),
        (".hidden", NameRule::DotSegment),
        ("a/.hidden", NameRule::DotSegment),
        ("zookeeper", NameRule::Reserved),
        ("zookeeper/quota", NameRule::Reserved),
    ] {
        match LockName::new(bad) {
            Err(Error::InvalidName { rule: broken, .. }) if broken == rule => {}
            Err(e) => problems.push(format!("{bad:?}: {e}, not InvalidName({rule:?})")),
            Ok(_) => problems.push(format!("{bad:?} accepted")),
        }
        if a.locks.mutex(bad).is_ok() {
            problems.push(format!("{bad:?} accepted by mutex()"));
        }
    }
    let long = "n".repeat(10_000);
    match a.locks.mutex(long.as_str()) {
        Ok(_) => problems.push("a 10 kB name was accepted".into()),
        Err(e) => {
            let message = e.to_string();
            if message.len() > MESSAGE_LIMIT {
                problems.push(format!(
                    "a 10 kB name's error is {} bytes long (it echoes the name): {}...",
                    message.len(),
                    &message[..120.min(message.len())]
                ));
            }
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(Verdict::Passed)
}
