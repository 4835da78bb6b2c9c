//! The kit's own background runtime, and [`blocking`] for callers without an async context.
//!
//! Fault proxies run their tasks here rather than on the test's runtime, so a proxy keeps
//! working when it outlives the `#[tokio::test]` that created it (e.g. in a shared fixture), and
//! its synchronous controls (`set_mode`, `cut_all`) can wait for their effect without
//! deadlocking a single-threaded test runtime.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// The background runtime (one worker thread), created on first use.
pub(crate) fn runtime() -> Result<&'static Runtime> {
    static RT: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testkit-bg")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        Error::io(
            "starting the testkit background runtime",
            std::io::Error::other(e.clone()),
        )
    })
}

/// Runs an async kit call to completion from synchronous code, e.g.
/// `testkit::blocking(testkit::redis::Redis::start())??`.
///
/// Works with or without a surrounding tokio runtime (the future runs on a helper thread, so
/// calling this inside async code blocks that thread until the future is done). The outer
/// `Result` fails only if the kit's background runtime cannot be started.
pub fn blocking<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    std::thread::scope(|s| match s.spawn(|| rt.handle().block_on(fut)).join() {
        Ok(v) => Ok(v),
        Err(panic) => std::panic::resume_unwind(panic),
    })
}
