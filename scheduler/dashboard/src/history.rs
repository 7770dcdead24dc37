//! The queues over time: a sampler reads every queue's stats once a
//! sampling interval (as `spoolctl queues` does, twice apart for the
//! rates) and keeps the last readings, for the overview's charts and its
//! live updates.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use spool_broker::{RedisBroker, Timestamp, WorkerRecord};
use spool_scheduler::ctl::{self, QueueRow, QueuesSample};
use tokio::sync::watch;

/// One reading of every queue, with the rates since the previous one.
#[derive(Debug, Clone)]
pub struct Reading {
    /// When it was taken.
    pub at: Timestamp,
    /// One row per queue.
    pub rows: Vec<QueueRow>,
}

/// The readings kept, the newest last, and the workers seen at the latest.
#[derive(Debug, Default)]
struct Inner {
    readings: VecDeque<Reading>,
    workers: Vec<WorkerRecord>,
    error: Option<String>,
}

/// The history shared by the sampler and the pages; a watch channel says
/// when a new reading arrived.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
    generation: watch::Sender<u64>,
}

impl History {
    /// An empty history keeping up to `capacity` readings.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::default(),
            capacity: capacity.max(2),
            generation: watch::Sender::new(0),
        }
    }

    /// The readings, oldest first.
    #[must_use]
    pub fn readings(&self) -> Vec<Reading> {
        self.lock().readings.iter().cloned().collect()
    }

    /// The newest reading, if any.
    #[must_use]
    pub fn latest(&self) -> Option<Reading> {
        self.lock().readings.back().cloned()
    }

    /// The worker records of the newest reading.
    #[must_use]
    pub fn workers(&self) -> Vec<WorkerRecord> {
        self.lock().workers.clone()
    }

    /// Why the last reading failed, if it did.
    #[must_use]
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// A receiver that changes on every new reading.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, reading: Reading, workers: Vec<WorkerRecord>) {
        {
            let mut inner = self.lock();
            if inner.readings.len() == self.capacity {
                inner.readings.pop_front();
            }
            inner.readings.push_back(reading);
            inner.workers = workers;
            inner.error = None;
        }
        self.generation.send_modify(|g| *g += 1);
    }

    fn fail(&self, error: String) {
        self.lock().error = Some(error);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Reads the queues every `interval` into `history` until the task is
/// aborted. The queues are the routed ones, `extra`, the paused and known
/// ones and those the live workers serve, as `spoolctl queues` shows.
pub async fn run_sampler(
    broker: RedisBroker,
    extra: Vec<spool_broker::QueueName>,
    interval: Duration,
    history: History,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<QueuesSample> = None;
    loop {
        ticks.tick().await;
        match sample(&broker, &extra, previous.as_ref()).await {
            Ok((sample, reading, workers)) => {
                history.push(reading, workers);
                previous = Some(sample);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queues");
                history.fail(e.to_string());
            }
        }
    }
}

async fn sample(
    broker: &RedisBroker,
    extra: &[spool_broker::QueueName],
    previous: Option<&QueuesSample>,
) -> crate::Result<(QueuesSample, Reading, Vec<WorkerRecord>)> {
    let workers = broker.workers().await?;
    let mut queues = extra.to_vec();
    for record in workers.iter().filter(|r| r.is_live()) {
        queues.extend(record.queues.iter().cloned());
    }
    let shown = ctl::queues_with_paused(broker, &queues).await?;
    let sample = QueuesSample::read(broker, &shown).await?;
    let reading = Reading {
        at: Timestamp::now(),
        rows: sample.report(previous).rows,
    };
    Ok((sample, reading, workers))
}
