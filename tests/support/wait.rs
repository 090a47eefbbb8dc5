//! The one bounded wait of the integration tests: poll a condition until it holds, or fail the
//! test saying what never happened.

use std::{fmt::Display, time::Duration};

use tokio::time::Instant;

/// How long any condition may take before the test fails; generous, since it only matters
/// when something is broken (or the machine is very busy).
pub const LIMIT: Duration = Duration::from_secs(20);
/// Time between two checks: short next to anything a test waits for, long next to a check.
const POLL: Duration = Duration::from_millis(5);

/// Polls `check` until it returns `Some`, and returns that value; panics after [`LIMIT`].
pub async fn until_some<T>(what: impl Display, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it returns `true`; panics after [`LIMIT`].
pub async fn until(what: impl Display, mut check: impl AsyncFnMut() -> bool) {
    until_some(what, async || check().await.then_some(())).await;
}
