//! Config hot reload through a real file: valid edits apply, invalid edits are rejected and the
//! old config stays in force. (One test per binary: the metrics recorder is process-global.)
#![allow(clippy::unwrap_used)]

mod support;

use kactivator::cli::Mode;
use support::app::{admin_get, metric_value, start};

async fn reloads(app: &support::app::TestApp, result: &str) -> f64 {
    let (_, body) = admin_get(app, "/metrics").await;
    metric_value(
        &body,
        &format!("kactivator_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

async fn wait_reloads(app: &support::app::TestApp, result: &str, at_least: f64) -> f64 {
    support::app::wait_metric(
        app,
        &format!("kactivator_config_reloads_total{{result=\"{result}\"}}"),
        |n| n >= at_least,
    )
    .await
}

#[tokio::test]
async fn valid_edits_apply_and_invalid_edits_are_rejected_keeping_the_old_config() {
    let app = start(Mode::Autoscaler, "revisions:\n  - name: hello\n").await;

    app.write_config("revisions:\n  - name: hello\n  - name: world\n");
    assert_eq!(
        wait_reloads(&app, "applied", 1.0).await,
        1.0,
        "valid edit applied"
    );

    app.write_config("revisions:\n  - name: hello\n    max_scale: 0\n");
    assert_eq!(
        wait_reloads(&app, "rejected", 1.0).await,
        1.0,
        "invalid value rejected"
    );

    app.write_config("revisions:\n  - name: hello\n    bogus_key: 1\n");
    assert_eq!(
        wait_reloads(&app, "rejected", 2.0).await,
        2.0,
        "unknown key rejected"
    );

    // Nothing was applied by the bad edits, and the process still serves.
    assert_eq!(reloads(&app, "applied").await, 1.0);
    assert_eq!(admin_get(&app, "/readyz").await.0, 200);

    // A valid edit after bad ones applies again.
    app.write_config("revisions:\n  - name: again\n");
    assert_eq!(wait_reloads(&app, "applied", 2.0).await, 2.0);
    app.shutdown().await.unwrap();
}
