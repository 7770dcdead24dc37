//! `spoolctl top`: a live view of the queues, the workers, the tasks
//! running now and the recent failures.
//!
//! Each refresh reads the worker registry and every queue's signals
//! ([`QueuesSample`]), computing the rates over the time since the
//! previous refresh and keeping their recent history for the sparklines;
//! the job store's running and failed records when a store is configured
//! (else the running task ids from the workers' records and the queues'
//! dead letters); and the running tasks' progress events, for what the
//! store does not keep (FFmpeg's speed) and reports newer than its own.
//! A [`TopFrame`] holds one refresh.
//!
//! Rendering is a pure function of a frame, a width and the interactive
//! [`View`] ([`render_text`], [`draw`]), on ratatui; the interactive mode
//! ([`run_interactive`]) only adds the terminal and the keys.

mod app;
mod columns;
mod render;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use futures_util::stream::{AbortHandle, SelectAll};
use futures_util::{FutureExt as _, StreamExt as _};
use serde::{Serialize, Serializer};
use spool_broker::store::{JobQuery, JobRecord, JobStatus, JobStore};
use spool_broker::{
    Broker, DeadLetterEntry, Progress, QueueName, RedisBroker, TaskEvent, TaskId, Timestamp,
};

pub use self::app::run_interactive;
pub use self::render::{Focus, KEYS_HELP, View, draw, frame_height, render_text};
use super::follow::{Events, subscribe};
use super::queues::{QueuesReport, QueuesSample, queues_with_paused};
use super::workers::{WorkersReport, workers_report};
use super::{Format, Report};
use crate::error::{Error, Result};

/// How often `top` refreshes unless told otherwise.
pub const DEFAULT_TOP_INTERVAL: Duration = Duration::from_secs(1);

/// The width `top` renders at when neither `--width`, the terminal nor
/// `COLUMNS` says.
pub const DEFAULT_TOP_WIDTH: u16 = 80;

/// How many refreshes the sparklines show.
pub const RATE_HISTORY: usize = 30;

/// The most running tasks a frame lists.
pub const MAX_RUNNING: usize = 50;

/// The most recent failures a frame lists.
pub const MAX_FAILURES: usize = 8;

/// One task running now, as `top` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunningTask {
    /// The task's id.
    pub id: TaskId,
    /// Its name; null when the job store does not know the task (or
    /// none is configured): only a worker's record named it.
    pub name: Option<String>,
    /// Its queue, when known.
    pub queue: Option<QueueName>,
    /// The worker running it, when known.
    pub worker: Option<String>,
    /// When its current attempt started; RFC 3339 in JSON.
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<Timestamp>,
    /// Its attempt, from 1; 0 when not known.
    pub attempt: u32,
    /// Its latest progress report, when any.
    pub progress: Option<Progress>,
    /// Seconds left: the handler's estimate, else one from the percent
    /// done and the time it took; null when neither is known.
    pub eta_seconds: Option<f64>,
}

impl RunningTask {
    /// The row for a store record of a running task, `now` being the time.
    #[must_use]
    pub fn from_record(record: JobRecord, now: Timestamp) -> Self {
        let eta_seconds = eta(record.progress.as_ref(), record.started_at, now);
        Self {
            id: record.id,
            name: Some(record.name),
            queue: Some(record.queue),
            worker: record.worker.map(|w| w.to_string()),
            started_at: record.started_at,
            attempt: record.attempts,
            progress: record.progress,
            eta_seconds,
        }
    }

    /// The row for a task only a worker's record names.
    #[must_use]
    pub fn unknown(id: TaskId, worker: String) -> Self {
        Self {
            id,
            name: None,
            queue: None,
            worker: Some(worker),
            started_at: None,
            attempt: 0,
            progress: None,
            eta_seconds: None,
        }
    }
}

/// Seconds left: the reported estimate, else the elapsed time scaled by
/// what remains of the percent.
fn eta(progress: Option<&Progress>, started: Option<Timestamp>, now: Timestamp) -> Option<f64> {
    let progress = progress?;
    if let Some(eta) = progress.eta_seconds {
        return Some(f64::from(eta.max(0.0)));
    }
    let percent = f64::from(progress.percent);
    if !(0.5..100.0).contains(&percent) {
        return None;
    }
    let elapsed = now.saturating_since(started?).as_secs_f64();
    Some(elapsed * (100.0 - percent) / percent)
}

/// One recent failure: a failed or dead task in the job store, or a dead
/// letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureRow {
    /// The task's id, when known (a dead letter's bytes may not decode).
    pub id: Option<TaskId>,
    /// Its name, when known.
    pub name: Option<String>,
    /// Its queue.
    pub queue: QueueName,
    /// `failed` or `dead`.
    pub status: String,
    /// How many runs were made.
    pub attempts: u32,
    /// The error in words.
    pub error: String,
    /// When it failed; RFC 3339 in JSON.
    #[serde(serialize_with = "rfc3339")]
    pub at: Timestamp,
    /// Where it was read: `store` or `dead_letters`.
    pub source: &'static str,
}

impl FailureRow {
    fn from_record(record: JobRecord) -> Self {
        Self {
            id: Some(record.id),
            at: record
                .finished_at
                .or(record.started_at)
                .unwrap_or(record.created_at),
            name: Some(record.name),
            queue: record.queue,
            status: record.status.as_str().to_owned(),
            attempts: record.attempts,
            error: record.error.unwrap_or_default(),
            source: "store",
        }
    }

    fn from_dead_letter(entry: DeadLetterEntry) -> Self {
        let (id, name) = entry
            .envelope
            .map_or((None, None), |e| (Some(e.id), Some(e.name)));
        Self {
            id,
            name,
            queue: entry.queue,
            status: "dead".to_owned(),
            attempts: entry.attempts,
            error: format!("{}: {}", entry.reason, entry.error),
            at: entry.dead_at,
            source: "dead_letters",
        }
    }
}

/// A queue's recent rates, oldest first, for its sparklines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateHistory {
    /// Tasks in per second, one value per refresh.
    pub rate_in: Vec<f64>,
    /// Tasks out per second, one value per refresh.
    pub rate_out: Vec<f64>,
}

/// One refresh of `top`; JSON: `{"at", "interval_seconds", "queues",
/// "workers", "running", "failures", "store"}`, `queues` and `workers`
/// with the shapes of `queues --json` and `workers --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopFrame {
    /// When it was read; RFC 3339 in JSON.
    #[serde(serialize_with = "rfc3339")]
    pub at: Timestamp,
    /// The time between refreshes, in seconds.
    #[serde(serialize_with = "seconds", rename = "interval_seconds")]
    pub interval: Duration,
    /// The queues: the routed ones, those asked for, the paused ones and
    /// those the live workers serve.
    pub queues: QueuesReport,
    /// The worker processes in the registry.
    pub workers: WorkersReport,
    /// The tasks running now, longest running first.
    pub running: Vec<RunningTask>,
    /// The most recent failures, newest first.
    pub failures: Vec<FailureRow>,
    /// Whether the job store was read (else names, progress and failures
    /// come only from the workers' records and the dead letters).
    pub store: bool,
    /// Each queue's recent rates, for the sparklines (not in JSON).
    #[serde(skip)]
    pub history: BTreeMap<QueueName, RateHistory>,
}

impl TopFrame {
    /// A frame of these queues and workers, with nothing running, no
    /// failure and no history.
    #[must_use]
    pub fn new(
        at: Timestamp,
        interval: Duration,
        queues: QueuesReport,
        workers: WorkersReport,
    ) -> Self {
        Self {
            at,
            interval,
            queues,
            workers,
            running: Vec::new(),
            failures: Vec::new(),
            store: false,
            history: BTreeMap::new(),
        }
    }
}

fn rfc3339<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(at)
}

fn rfc3339_opt<S: Serializer>(at: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.collect_str(at),
        None => serializer.serialize_none(),
    }
}

fn seconds<S: Serializer>(interval: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(interval.as_secs_f64())
}

impl Report for TopFrame {
    /// The frame at [`DEFAULT_TOP_WIDTH`] columns.
    fn to_text(&self) -> String {
        render_text(self, DEFAULT_TOP_WIDTH)
    }
}

/// Renders a frame for printing: JSON on one line, or text `width`
/// columns wide.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_broker::{MemoryBroker, QueueName, Timestamp};
/// use spool_scheduler::ctl::{self, Format, QueuesSample, TopFrame};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_scheduler::Result<()> {
/// let broker = MemoryBroker::new();
/// let sample = QueuesSample::read(&broker, &[QueueName::DEFAULT]).await?;
/// let frame = TopFrame::new(
///     Timestamp::now(),
///     Duration::from_secs(1),
///     sample.report(None),
///     ctl::workers_report(Vec::new(), Timestamp::now()),
/// );
/// let line = ctl::render_frame(&frame, Format::Json, 80)?;
/// assert!(line.starts_with("{\"at\":") && line.ends_with("}\n"));
/// let text = ctl::render_frame(&frame, Format::Text, 60)?;
/// assert!(text.lines().all(|line| line.chars().count() <= 60));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Output`] when the frame cannot be encoded as JSON.
pub fn render_frame(frame: &TopFrame, format: Format, width: u16) -> Result<String> {
    match format {
        Format::Json => {
            let mut line = serde_json::to_string(frame).map_err(Error::Output)?;
            line.push('\n');
            Ok(line)
        }
        Format::Text => Ok(render_text(frame, width)),
    }
}

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
    /// [`Error::Broker`] when Redis or the store fails.
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

#[cfg(test)]
pub(crate) mod tests {
    use spool_broker::{MemoryBroker, WorkerRecord};

    use super::*;
    use crate::ctl::queues;

    /// A frame with a backlog, a worker, a running transcode and a failure.
    pub(crate) async fn frame() -> TopFrame {
        let broker = MemoryBroker::new();
        let sample = QueuesSample::read(&broker, &queues::queues_to_show(&[]))
            .await
            .unwrap();
        let mut report = sample.report(None);
        report.rows[0].backlog = 1234;
        report.rows[0].rate_in = Some(12.5);
        report.rows[0].rate_out = Some(3.0);
        let mut record = WorkerRecord::new("w-1-ab", "w", "node-a", 1);
        record.queues = vec![QueueName::DEFAULT];
        record.slots = 2;
        let at = Timestamp::from_millis(1_700_000_000_000);
        let id: TaskId = "0193a7c4-5e1f-7d2a-9b3c-4d5e6f708192".parse().unwrap();
        let mut frame = TopFrame::new(
            at,
            Duration::from_millis(1500),
            report,
            workers_report(vec![record], at),
        );
        frame.running.push(RunningTask {
            id,
            name: Some("video.transcode".into()),
            queue: Some(QueueName::DEFAULT),
            worker: Some("node-a:1".into()),
            started_at: Some(Timestamp::from_millis(1_700_000_000_000 - 30_000)),
            attempt: 1,
            progress: Some(Progress {
                stage: Some("encode libx264".into()),
                fps: Some(118.0),
                speed: Some(3.9),
                ..Progress::percent(42.0)
            }),
            eta_seconds: Some(41.0),
        });
        frame.failures.push(FailureRow {
            id: Some(id),
            name: Some("video.probe".into()),
            queue: QueueName::GPU,
            status: "dead".into(),
            attempts: 3,
            error: "ffprobe: input.mp4: No such file or directory".into(),
            at: Timestamp::from_millis(1_700_000_000_000 - 120_000),
            source: "store",
        });
        frame.history.insert(
            QueueName::DEFAULT,
            RateHistory {
                rate_in: vec![0.0, 5.0, 12.5],
                rate_out: vec![1.0, 2.0, 3.0],
            },
        );
        frame.store = true;
        frame
    }

    #[tokio::test]
    async fn json_frames_are_one_line_with_running_tasks_and_failures() {
        let frame = frame().await;
        let line = render_frame(&frame, Format::Json, 80).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["interval_seconds"], 1.5);
        assert_eq!(json["queues"].as_array().unwrap().len(), 4);
        assert_eq!(json["workers"][0]["host"], "node-a");
        let running = &json["running"][0];
        assert_eq!(running["name"], "video.transcode");
        assert_eq!(running["started_at"], "2023-11-14T22:12:50.000Z");
        assert_eq!(running["progress"]["percent"], 42.0);
        assert_eq!(running["eta_seconds"], 41.0);
        assert_eq!(json["failures"][0]["status"], "dead");
        assert_eq!(json["failures"][0]["at"], "2023-11-14T22:11:20.000Z");
        assert_eq!(json["store"], true);
        assert!(json.get("history").is_none());
    }

    #[test]
    fn the_eta_is_reported_or_estimated() {
        let now = Timestamp::from_millis(100_000);
        let started = Some(Timestamp::from_millis(70_000));
        let reported = Progress {
            eta_seconds: Some(12.0),
            ..Progress::percent(10.0)
        };
        assert_eq!(eta(Some(&reported), started, now), Some(12.0));
        // 30 s for 25 %: 90 s more.
        let estimated = eta(Some(&Progress::percent(25.0)), started, now).unwrap();
        assert!((estimated - 90.0).abs() < 1e-6, "{estimated}");
        assert_eq!(eta(Some(&Progress::percent(0.0)), started, now), None);
        assert_eq!(eta(Some(&Progress::percent(25.0)), None, now), None);
        assert_eq!(eta(None, started, now), None);
    }
}
