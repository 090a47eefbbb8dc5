//! A fake cluster for the tests that run the real binary under `discovery: kubernetes`: the API
//! server, the autoscaler, and a directory for configs, kubeconfig and logs. Each suite adds its
//! own methods (`impl Cluster` in the test file).

use super::{apiserver::FakeApiServer, autoscaler::FakeAutoscaler};

pub struct Cluster {
    pub api: FakeApiServer,
    pub autoscaler: FakeAutoscaler,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Self {
        Self {
            api: FakeApiServer::start().await,
            autoscaler: FakeAutoscaler::start().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }
}
