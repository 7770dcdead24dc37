//! Reading `top`'s frames: the registry, the queues, the job store and
//! the running tasks' progress events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use futures_util::stream::{AbortHandle, SelectAll};
use futures_util::{FutureExt as _, StreamExt as _};
use spool_broker::store::{JobQuery, JobStatus, JobStore};
use spool_broker::{Broker as _, Progress, QueueName, RedisBroker, TaskEvent, TaskId, Timestamp};

use super::{
    FailureRow, MAX_FAILURES, MAX_RUNNING, RATE_HISTORY, RateHistory, RunningTask, TopFrame, eta,
};
use crate::ctl::follow::{Events, subscribe};
use crate::ctl::queues::{QueuesReport, QueuesSample, queues_with_paused};
use crate::ctl::workers::workers_report;
use crate::error::Result;

/// Reads successive frames of `top` from one broker and, optionally, the
/// job store.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use spool_broker::RedisBroker;
/// use spool_scheduler::ctl::{self, Format};
///
/// # async fn demo() -> anyhow::Result<()> {
/// let broker = RedisBroker::connect_url("redis://127.0.0.1:6379/").await?;
/// let mut top = ctl::Top::new(&broker, None, Vec::new(), Duration::from_secs(1));
/// for _ in 0..3 {
///     let frame = top.next_frame().await?;
///     print!("{}", ctl::render_frame(&frame, Format::Text, 100)?);
///     tokio::time::sleep(Duration::from_secs(1)).await;
/// }
/// # Ok(()) }
/// ```
pub struct Top<'a> {
    broker: &'a RedisBroker,
    store: Option<&'a JobStore>,
    extra: Vec<QueueName>,
    interval: Duration,
    previous: Option<QueuesSample>,
    history: BTreeMap<QueueName, VecDeque<(f64, f64)>>,
    /// The running tasks' progress events: FFmpeg's speed, which the store
    /// does not keep, and reports newer than the store's.
    events: SelectAll<Events>,
    /// The running tasks subscribed to, and the latest report of each.
    subscribed: HashMap<TaskId, (AbortHandle, Option<Progress>)>,
}

impl fmt::Debug for Top<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Top")
            .field("extra", &self.extra)
            .field("interval", &self.interval)
            .field("store", &self.store.is_some())
            .field("subscribed", &self.subscribed.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Top<'a> {
    /// A view of the routed queues, `extra` ones, the paused ones and those
    /// the live workers serve, refreshed every `interval` (which the frames
    /// only report: the caller paces them); with `store`, the running and
    /// failed tasks' records.
    #[must_use]
    pub fn new(
        broker: &'a RedisBroker,
        store: Option<&'a JobStore>,
        extra: Vec<QueueName>,
        interval: Duration,
    ) -> Self {
        Self {
            broker,
            store,
            extra,
            interval,
            previous: None,
            history: BTreeMap::new(),
            events: SelectAll::new(),
            subscribed: HashMap::new(),
        }
    }

    /// The broker read.
    #[must_use]
    pub fn broker(&self) -> &'a RedisBroker {
        self.broker
    }

    /// The time between refreshes.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The job store read, if any.
    #[must_use]
    pub fn store(&self) -> Option<&'a JobStore> {
        self.store
    }

    /// Reads the next frame; its rates cover the time since the previous
    /// one (the first has none).
    ///
    /// # Errors
    ///
    /// [`Error::Broker`](crate::Error::Broker) when Redis or the store fails.
    pub async fn next_frame(&mut self) -> Result<TopFrame> {
        let records = self.broker.workers().await?;
        let mut extra = self.extra.clone();
        for record in records.iter().filter(|r| r.is_live()) {
            extra.extend(record.queues.iter().cloned());
        }
        let queues = queues_with_paused(self.broker, &extra).await?;
        let sample = QueuesSample::read(self.broker, &queues).await?;
        let now = Timestamp::now();
        let report = sample.report(self.previous.as_ref());
        self.remember_rates(&report);

        let mut running = Vec::new();
        let mut failures = Vec::new();
        if let Some(store) = self.store {
            let query = JobQuery::new()
                .status([JobStatus::Running])
                .limit(MAX_RUNNING);
            running = store
                .query(&query)
                .await?
                .records
                .into_iter()
                .map(|r| RunningTask::from_record(r, now))
                .collect();
            let query = JobQuery::new()
                .status([JobStatus::Failed, JobStatus::Dead])
                .limit(MAX_FAILURES);
            failures = store
                .query(&query)
                .await?
                .records
                .into_iter()
                .map(FailureRow::from_record)
                .collect();
        } else {
            for row in report.rows.iter().filter(|r| r.dead > 0) {
                let entries = self.broker.dead_letters(&row.queue, MAX_FAILURES).await?;
                failures.extend(entries.into_iter().map(FailureRow::from_dead_letter));
            }
            failures.sort_by_key(|f| std::cmp::Reverse(f.at));
            failures.truncate(MAX_FAILURES);
        }
        // Tasks a live worker runs that the store does not list as running
        // (no store, or a record not written yet): by id.
        for record in records.iter().filter(|r| r.is_live()) {
            for id in &record.running {
                if running.len() < MAX_RUNNING && !running.iter().any(|t| t.id == *id) {
                    running.push(RunningTask::unknown(*id, record.id.clone()));
                }
            }
        }
        running.sort_by_key(|t| (t.started_at.map_or(u64::MAX, |s| s.as_millis()), t.id));
        self.follow_progress(&mut running, now).await?;

        let frame = TopFrame {
            at: now,
            interval: self.interval,
            queues: report,
            workers: workers_report(records, now),
            running,
            failures,
            store: self.store.is_some(),
            history: self
                .history
                .iter()
                .map(|(queue, points)| {
                    let history = RateHistory {
                        rate_in: points.iter().map(|p| p.0).collect(),
                        rate_out: points.iter().map(|p| p.1).collect(),
                    };
                    (queue.clone(), history)
                })
                .collect(),
        };
        self.previous = Some(sample);
        Ok(frame)
    }

    /// Brings the running tasks' progress up to their latest events, and
    /// follows the events of the tasks that started since the last frame
    /// (and no longer those that ended).
    async fn follow_progress(&mut self, running: &mut [RunningTask], now: Timestamp) -> Result<()> {
        while let Some(Some((id, event))) = self.events.next().now_or_never() {
            match (event, self.subscribed.get_mut(&id)) {
                (Some(TaskEvent::Progress { progress, .. }), Some((_, latest))) => {
                    *latest = Some(progress);
                }
                // The subscription broke: subscribed again below.
                (None, Some(_)) => {
                    self.subscribed.remove(&id);
                }
                _ => {}
            }
        }
        self.subscribed.retain(|id, (subscription, _)| {
            let runs = running.iter().any(|t| t.id == *id);
            if !runs {
                subscription.abort();
            }
            runs
        });
        for task in running.iter_mut() {
            match self.subscribed.get(&task.id) {
                Some((_, Some(latest))) => {
                    task.progress = Some(latest.clone());
                    task.eta_seconds = eta(task.progress.as_ref(), task.started_at, now);
                }
                Some((_, None)) => {}
                None if self.subscribed.len() < MAX_RUNNING => {
                    let (events, subscription) = subscribe(self.broker, task.id).await?;
                    self.events.push(events);
                    self.subscribed.insert(task.id, (subscription, None));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Adds this refresh's rates to each queue's history.
    fn remember_rates(&mut self, report: &QueuesReport) {
        for row in &report.rows {
            let (Some(rate_in), Some(rate_out)) = (row.rate_in, row.rate_out) else {
                continue;
            };
            let points = self.history.entry(row.queue.clone()).or_default();
            if points.len() == RATE_HISTORY {
                points.pop_front();
            }
            points.push_back((rate_in, rate_out));
        }
        self.history
            .retain(|queue, _| report.rows.iter().any(|r| &r.queue == queue));
    }
}
