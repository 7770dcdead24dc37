//! The worker side of the registry: a heartbeat record per worker process.
//!
//! A [`Heartbeat`] owns the process's [`WorkerRecord`] and writes it with
//! [`RedisBroker::write_worker`]: once at start, on every change of state
//! (retiring, stopping) at once, at most once a second while tasks come and
//! go, and at least every heartbeat interval otherwise, with a time to
//! live of three intervals. Its [`HeartbeatObserver`] tracks the slots in
//! use, the running task ids and the counts. On a clean exit it writes a
//! last record in state `stopped` with the final counts, which expires like
//! the others; a crashed child's record is removed by its supervisor, or
//! expires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use spool_broker::{RedisBroker, TaskId, Timestamp, WorkerRecord, WorkerState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use spool_worker::{Observer, Outcome, TaskInfo};

/// The most often a record is rewritten while only its counts change.
const FRESHNESS: Duration = Duration::from_secs(1);

/// Live counts of one worker process, for its registry record.
#[derive(Debug, Default)]
pub struct HeartbeatObserver {
    live: Mutex<Live>,
    dirty: AtomicBool,
}

#[derive(Debug, Default)]
struct Live {
    /// Running tasks, in start order, with how many runs of each (a task
    /// may run twice here in rare reclaim races).
    running: Vec<(TaskId, u32)>,
    processed: u64,
    succeeded: u64,
    failed: u64,
    retried: u64,
}

impl Observer for HeartbeatObserver {
    fn started(&self, task: &TaskInfo<'_>) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        match live.running.iter_mut().find(|(id, _)| *id == task.id) {
            Some((_, n)) => *n += 1,
            None => live.running.push((task.id, 1)),
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    fn finished(&self, task: &TaskInfo<'_>, outcome: Outcome, _ran_for: Duration) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = live.running.iter().position(|(id, _)| *id == task.id) {
            if live.running[i].1 > 1 {
                live.running[i].1 -= 1;
            } else {
                live.running.remove(i);
            }
        }
        match outcome {
            // Not run here, or run again later: not processed.
            Outcome::Requeued | Outcome::Abandoned | Outcome::Deferred => return,
            Outcome::Succeeded => live.succeeded += 1,
            Outcome::Failed | Outcome::DeadLettered(_) => live.failed += 1,
            Outcome::Retried => live.retried += 1,
            Outcome::Expired | Outcome::Revoked => {}
            // An outcome newer than this binary: counted as processed only.
            _ => {}
        }
        live.processed += 1;
        self.dirty.store(true, Ordering::Relaxed);
    }
}

impl HeartbeatObserver {
    /// Copies the live counts into `record`.
    fn fill(&self, record: &mut WorkerRecord) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        record.running = live.running.iter().map(|(id, _)| *id).collect();
        record.busy = live.running.iter().map(|(_, n)| *n).sum();
        record.processed = live.processed;
        record.succeeded = live.succeeded;
        record.failed = live.failed;
        record.retried = live.retried;
    }
}

/// Keeps one worker process's registry record fresh.
#[derive(Debug)]
pub struct Heartbeat {
    broker: RedisBroker,
    record: Mutex<WorkerRecord>,
    observer: Arc<HeartbeatObserver>,
    interval: Duration,
    changed: Notify,
}

impl Heartbeat {
    /// A heartbeat for `record` (its id, name, queues, slots, capabilities
    /// filled in), written every `interval` and expiring after three.
    #[must_use]
    pub fn new(broker: RedisBroker, record: WorkerRecord, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            broker,
            record: Mutex::new(record),
            observer: Arc::new(HeartbeatObserver::default()),
            interval: interval.max(Duration::from_millis(100)),
            changed: Notify::new(),
        })
    }

    /// The observer to register on the worker.
    #[must_use]
    pub fn observer(&self) -> Arc<HeartbeatObserver> {
        Arc::clone(&self.observer)
    }

    /// How long a record lives without a refresh: three intervals.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.interval * 3
    }

    /// The worker's id in the registry.
    #[must_use]
    pub fn id(&self) -> String {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .id
            .clone()
    }

    /// Moves to `state` for `reason`; the record is rewritten at once. A
    /// worker already retiring or stopping stays so, with its first reason,
    /// until it is stopped.
    pub fn set_state(&self, state: WorkerState, reason: &str) {
        {
            let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            if record.state != WorkerState::Running && state != WorkerState::Stopped {
                return;
            }
            record.state = state;
            // A stopped record keeps why it stopped (max-tasks, memory,
            // signal), if it was told.
            if state != WorkerState::Stopped || record.reason.is_none() {
                record.reason = Some(reason.to_owned());
            }
        }
        self.changed.notify_one();
    }

    /// Sets the task names the worker serves (its handlers), for the
    /// records written from now on.
    pub fn set_tasks<S: Into<String>>(&self, tasks: impl IntoIterator<Item = S>) {
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.tasks = tasks.into_iter().map(Into::into).collect();
        record.tasks.sort_unstable();
        record.tasks.dedup();
    }

    /// The record as it would be written now.
    #[must_use]
    pub fn snapshot(&self) -> WorkerRecord {
        let mut record = self
            .record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.observer.fill(&mut record);
        record.rss_bytes = crate::supervisor::resident_bytes().unwrap_or(0);
        record.last_seen = Timestamp::now();
        record
    }

    async fn write(&self) {
        self.observer.dirty.store(false, Ordering::Relaxed);
        let record = self.snapshot();
        if let Err(e) = self.broker.write_worker(&record, self.ttl()).await {
            warn!(error = %e, "cannot write this worker's registry record");
        }
    }

    /// Writes the record until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut last = tokio::time::Instant::now();
        self.write().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(FRESHNESS.min(self.interval)) => {
                    if !self.observer.dirty.load(Ordering::Relaxed) && last.elapsed() < self.interval {
                        continue;
                    }
                }
            }
            self.write().await;
            last = tokio::time::Instant::now();
        }
    }

    /// Writes the last record, in state `stopped` with the final counts and
    /// the reason it stopped for (`exited` when it ended on its own).
    pub async fn finish(&self) {
        self.set_state(WorkerState::Stopped, "exited");
        let record = self.snapshot();
        match self.broker.write_worker(&record, self.ttl()).await {
            Ok(()) => debug!(worker = %record.id, "registry record marked stopped"),
            Err(e) => warn!(error = %e, "cannot write this worker's last registry record"),
        }
    }
}

/// A worker's record as it starts: identity, queues, slots, capabilities.
#[must_use]
pub fn initial_record(
    id: &str,
    name: &str,
    queues: Vec<spool_broker::QueueName>,
    slots: usize,
    supervisor_pid: Option<u32>,
    capabilities: std::collections::BTreeMap<String, String>,
) -> WorkerRecord {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut record = WorkerRecord::new(id, name, host, std::process::id());
    record.supervisor_pid = supervisor_pid;
    record.queues = queues;
    record.slots = u32::try_from(slots).unwrap_or(u32::MAX);
    record.capabilities = capabilities;
    record.version = env!("CARGO_PKG_VERSION").to_owned();
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_broker::QueueName;

    #[test]
    fn the_observer_tracks_slots_and_counts() {
        let observer = HeartbeatObserver::default();
        let q = QueueName::DEFAULT;
        let (a, b) = (TaskId::new(), TaskId::new());
        let info = |id| TaskInfo {
            id,
            name: "t",
            queue: &q,
            attempt: 1,
        };
        observer.started(&info(a));
        observer.started(&info(b));
        let mut record = initial_record("w-1", "w", vec![q.clone()], 4, None, Default::default());
        observer.fill(&mut record);
        assert_eq!((record.busy, record.running.clone()), (2, vec![a, b]));
        observer.finished(&info(a), Outcome::Succeeded, Duration::ZERO);
        observer.finished(&info(b), Outcome::Retried, Duration::ZERO);
        observer.finished(&info(TaskId::new()), Outcome::Requeued, Duration::ZERO);
        observer.fill(&mut record);
        assert_eq!(record.busy, 0);
        assert_eq!(
            (
                record.processed,
                record.succeeded,
                record.retried,
                record.failed
            ),
            (2, 1, 1, 0)
        );
    }
}
