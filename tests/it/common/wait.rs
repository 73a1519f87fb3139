//! Bounded waits: poll a condition until it holds or a limit passes.

use std::time::Duration;

use super::http::get;

/// Polls `check` every 200 ms for at most `limit`; fails the test naming
/// `what` when the limit passes first.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (at most `limit`) until the daemon at `base` answers `/readyz`
/// with 200: its first complete snapshot is taken (docs/operations.md).
pub async fn wait_ready(base: &str, limit: Duration) {
    eventually(limit, "/readyz 200", || async { get(&format!("{base}/readyz")).await.0 == 200 }).await;
}
