//! Reporting a task's life beyond the broker: run starts and progress to the
//! job store, progress events to whoever watches the task.
//!
//! These writes are batched in the background, off the acknowledgement
//! path: losing one (the worker dies) costs a stale `running` or progress
//! figure, never a task. Outcomes are different: the settler records them
//! before it acknowledges.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use spool_broker::store::{ProgressUpdate, Started};
use spool_broker::{Broker, Progress, TaskEvent, TaskId};
use tokio::sync::mpsc;
use tracing::warn;

use super::store::Store;

/// The most notes written in one batch.
const BATCH: usize = 1024;

/// Reports are at least this far apart, unless the percent moved by
/// [`MIN_STEP`] points or the task is done.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MIN_STEP: f32 = 1.0;

/// Something to write in the background.
#[derive(Debug)]
pub(crate) enum Note {
    Started(Box<Started>),
    Progress(ProgressUpdate),
}

/// Writes notes in batches until every sender is gone.
pub(crate) async fn keep<B: Broker>(
    broker: B,
    store: Option<Store>,
    mut notes: mpsc::UnboundedReceiver<Note>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while notes.recv_many(&mut batch, BATCH).await > 0 {
        let mut started = Vec::new();
        let mut progress = Vec::new();
        for note in batch.drain(..) {
            match note {
                Note::Started(record) => started.push(*record),
                Note::Progress(update) => progress.push(update),
            }
        }
        if let Some(store) = &store {
            if !started.is_empty()
                && let Err(e) = store.record_started(&started).await
            {
                warn!(error = %e, "could not record {} task starts", started.len());
            }
            if !progress.is_empty()
                && let Err(e) = store.record_progress_many(&progress).await
            {
                warn!(error = %e, "could not record progress");
            }
        }
        let events: Vec<TaskEvent> = progress
            .into_iter()
            .map(|u| TaskEvent::Progress {
                id: u.id,
                attempt: u.attempt,
                progress: u.progress,
            })
            .collect();
        if let Err(e) = broker.publish_events(&events).await {
            warn!(error = %e, "could not publish progress");
        }
    }
}

/// Where one run sends its progress, throttled.
///
/// It holds the channel weakly: a handler may keep its context after the
/// run, and that must not keep the reporter (and so the worker) alive.
#[derive(Debug, Clone)]
pub(crate) struct ProgressSink {
    notes: mpsc::WeakUnboundedSender<Note>,
    id: TaskId,
    attempt: u32,
    last: Arc<Mutex<Option<(f32, Instant)>>>,
}

impl ProgressSink {
    pub(crate) fn new(notes: &mpsc::UnboundedSender<Note>, id: TaskId, attempt: u32) -> Self {
        Self {
            notes: notes.downgrade(),
            id,
            attempt,
            last: Arc::default(),
        }
    }

    /// Sends `progress` unless the last report was under a second ago and
    /// less than a point behind; says whether it was sent.
    pub(crate) fn report(&self, progress: Progress) -> bool {
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((percent, at)) = *last
                && progress.percent < 100.0
                && (progress.percent - percent).abs() < MIN_STEP
                && now.duration_since(at) < MIN_INTERVAL
            {
                return false;
            }
            *last = Some((progress.percent, now));
        }
        let update = ProgressUpdate {
            id: self.id,
            attempt: self.attempt,
            progress,
        };
        self.notes
            .upgrade()
            .is_some_and(|notes| notes.send(Note::Progress(update)).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_throttled_by_step_and_time() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = ProgressSink::new(&tx, TaskId::new(), 1);
        let sent: Vec<bool> = [0.0, 0.5, 1.0, 1.2, 50.0, 50.1, 100.0]
            .into_iter()
            .map(|p| sink.report(Progress::percent(p)))
            .collect();
        assert_eq!(sent, [true, false, true, false, true, false, true]);
        let mut received = 0;
        while rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 4);
    }
}
