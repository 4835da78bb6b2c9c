//! Redis's restart protection is said, not a silent stall: on a fresh Redis without
//! persistence no lock is granted for `restart_delay`, and `tumbler status`, `run --no-wait` and
//! a waiting `run` each say so, with the time left and the URL parameter that sets it.

mod support;

use std::time::Duration;

use support::{exit_code, no_wait, tumbler, BUSY};

#[tokio::test]
async fn redis_restart_delay_is_said() {
    let redis = testkit::redis::Redis::start().await.expect("redis");
    let url = format!("{}?ttl=2s&restart_delay=6s", redis.url());

    let status = tumbler(&url)
        .args(["status", "cli/fresh"])
        .output()
        .await
        .expect("tumbler status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("no grants yet") && text.contains("restart_delay"),
        "status does not show the restart delay:\n{text}"
    );

    let status = tumbler(&url)
        .args(["status", "--json", "cli/fresh"])
        .output()
        .await
        .expect("tumbler status --json");
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let left = json["recovering_ms"].as_u64().unwrap_or(0);
    assert!(left > 0 && left <= 6_000, "recovering_ms: {json}");

    let (code, stderr) = no_wait(&url, "cli/fresh").await;
    assert_eq!(code, BUSY, "{stderr}");
    assert!(
        stderr.contains("restart_delay") && !stderr.contains("held by someone else"),
        "--no-wait does not say why: {stderr}"
    );

    let mut waiter = tumbler(&url)
        .args(["run", "cli/fresh", "--", "true"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tumbler run");
    let mut stderr = waiter.stderr.take().expect("stderr");
    assert_eq!(exit_code(&mut waiter, Duration::from_secs(30)).await, 0);
    let mut said = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut said)
        .await
        .expect("read stderr");
    assert!(
        said.contains("waiting for cli/fresh") && said.contains("restart_delay"),
        "run did not say what it waits for: {said}"
    );

    let status = tumbler(&url)
        .args(["status", "cli/fresh"])
        .output()
        .await
        .expect("tumbler status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        !text.contains("no grants yet"),
        "status still shows a delay after it passed:\n{text}"
    );
}
