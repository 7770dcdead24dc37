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
    /// The job store's counts by status, and when they were read: the
    /// overview's failure rate reads them at most once per
    /// [`STORE_COUNTS_TTL`], however many pages are open.
    pub store_counts: Arc<tokio::sync::Mutex<Option<StoreCounts>>>,
    /// Turns true when the server shuts down: live streams end then, so
    /// the graceful shutdown does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// How long the overview reuses the job store's counts by status: a count
/// over a large store is not free, and every open overview asks for it on
/// every reading.
pub const STORE_COUNTS_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The job store's counts by status, as read at `at`.
#[derive(Debug, Clone)]
pub struct StoreCounts {
    /// When they were read.
    pub at: tokio::time::Instant,
    /// How many records have each status.
    pub counts: Vec<(spool_broker::store::JobStatus, u64)>,
}

impl AppState {
    /// The job store's counts by status, read again when older than
    /// [`STORE_COUNTS_TTL`]; `None` without a store or when it fails.
    pub async fn store_counts(&self) -> Option<Vec<(spool_broker::store::JobStatus, u64)>> {
        let store = self.store.as_ref()?;
        let mut cached = self.store_counts.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < STORE_COUNTS_TTL
        {
            return Some(c.counts.clone());
        }
        let counts = store.count_by_status(None).await.ok()?;
        *cached = Some(StoreCounts {
            at: tokio::time::Instant::now(),
            counts: counts.clone(),
        });
        Some(counts)
    }

    /// The job store, or [`Error::NoStore`].
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] when none is configured.
    pub fn store(&self) -> Result<&JobStore> {
        self.store.as_ref().ok_or(Error::NoStore)
    }
}
