//! The job-store health gate.
//!
//! A task is acknowledged only once its outcome is in the job store. While
//! the store refuses writes (PostgreSQL down, SQLite locked), outcomes wait
//! in the settler: their tasks keep their prefetch slots and their leases
//! (the lease keeper renews whatever is not settled), so no other worker
//! reclaims them and they never count as deliveries to a dying worker. The
//! gate closes on the first failed write, which stops the fetchers from
//! taking new work that could not be recorded either, and opens again on
//! the first write that succeeds.

use std::sync::Arc;
use std::time::Duration;

use spool_broker::store::Finished;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::store::Store;

/// How long a worker that is shutting down keeps trying to record outcomes
/// before it leaves their tasks pending, to be redelivered elsewhere.
const STOPPING_PATIENCE: Duration = Duration::from_secs(30);

/// The longest pause between two tries at recording.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the job store takes writes, as last seen by the settler.
#[derive(Debug, Clone)]
pub(crate) struct StoreGate {
    open: Arc<watch::Sender<bool>>,
}

impl Default for StoreGate {
    fn default() -> Self {
        Self {
            open: Arc::new(watch::Sender::new(true)),
        }
    }
}

impl StoreGate {
    /// Whether new work may be taken.
    pub(crate) fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Completes once the gate is open.
    pub(crate) async fn opened(&self) {
        let mut open = self.open.subscribe();
        // Only fails when the sender is gone, and `self` holds it.
        let _ = open.wait_for(|open| *open).await;
    }

    /// Sets the gate; says whether that changed it.
    fn set(&self, open: bool) -> bool {
        self.open.send_replace(open) != open
    }
}

/// Records `records` in `store`, retrying transient failures with backoff
/// for as long as it takes (bounded only once `stop` fires), with the gate
/// closed meanwhile. Says whether they were recorded; `false` after a
/// permanent error, or when the worker stops before the store is back.
pub(crate) async fn record_outcomes(
    store: &Store,
    records: &[Finished],
    gate: &StoreGate,
    stop: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(100);
    let mut stopping_since = None;
    loop {
        let error = match store.record_outcomes(records).await {
            Ok(()) => {
                if gate.set(true) {
                    info!(
                        "the job store takes writes again: recorded {} waiting outcomes; taking new work",
                        records.len()
                    );
                }
                return true;
            }
            Err(e) => e,
        };
        if !error.is_transient() {
            error!(error = %error, "could not record the outcomes of {} tasks; they stay pending and will be redelivered", records.len());
            return false;
        }
        if gate.set(false) {
            error!(error = %error,
                "cannot record task outcomes in the job store: taking no new work until it is back; \
                 {} finished tasks keep their leases meanwhile", records.len());
        } else {
            warn!(error = %error, "the job store still refuses writes; retrying in {delay:?}");
        }
        if stop.is_cancelled() {
            let since = *stopping_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= STOPPING_PATIENCE {
                error!(
                    "stopping with {} outcomes unrecorded: the job store stayed unavailable; \
                     their tasks will be redelivered",
                    records.len()
                );
                return false;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}
