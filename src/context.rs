//! What every mode is handed by the wiring: the live config, the drain state, readiness and
//! identity. It lives below the modes so that `app` imports them and never the other way round.

use std::sync::Arc;

use tokio::sync::watch;

use crate::{admin::Readiness, config::SharedConfig, drain::Drain};

/// The shared process state a mode reads; cheap to clone.
#[derive(Clone, Debug)]
pub struct Context {
    /// The config in force; `changed()` fires on every applied reload.
    pub config: watch::Receiver<SharedConfig>,
    pub drain: Drain,
    pub readiness: Readiness,
    /// `pod_name` sent in stats.
    pub pod_name: Arc<str>,
}

impl Context {
    /// The config in force now.
    pub fn current(&self) -> SharedConfig {
        self.config.borrow().clone()
    }
}
