//! What every request handler shares.

use std::sync::Arc;

use spool_broker::RedisBroker;
use spool_broker::store::JobStore;
use spool_scheduler::beat::BeatConfig;

use crate::auth::Secret;
use crate::config::DashboardConfig;
use crate::error::{Error, Result};
use crate::history::History;

/// The dashboard's shared state: cheap to clone (handles and `Arc`s).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The Redis broker, for the Inspector/Admin API.
    pub broker: RedisBroker,
    /// The job store, when one is configured.
    pub store: Option<JobStore>,
    /// The configuration.
    pub config: Arc<DashboardConfig>,
    /// The beat entries, when `--beat-config` names a file.
    pub beat: Option<Arc<BeatConfig>>,
    /// The CSRF token every form of this process carries.
    pub csrf: Arc<Secret>,
    /// The queues over time.
    pub history: History,
    /// Turns true when the server shuts down: live streams end then, so
    /// the graceful shutdown does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    /// The job store, or [`Error::NoStore`].
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] when none is configured.
    pub fn store(&self) -> Result<&JobStore> {
        self.store.as_ref().ok_or(Error::NoStore)
    }
}
