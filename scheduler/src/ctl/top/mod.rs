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
mod read;
mod render;
mod tables;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Serialize, Serializer};
use spool_broker::store::JobRecord;
use spool_broker::{DeadLetterEntry, Progress, QueueName, TaskId, Timestamp};

pub use self::app::run_interactive;
pub use self::read::Top;
pub use self::render::{Focus, KEYS_HELP, View, draw, frame_height, render_text};
use super::queues::QueuesReport;
use super::workers::WorkersReport;
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
    #[serde(serialize_with = "spool_broker::rfc3339::option::serialize")]
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
    #[serde(serialize_with = "spool_broker::rfc3339::serialize")]
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
    #[serde(serialize_with = "spool_broker::rfc3339::serialize")]
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

#[cfg(test)]
pub(crate) mod tests {
    use spool_broker::{MemoryBroker, WorkerRecord};

    use super::*;
    use crate::ctl::queues::{self, QueuesSample};
    use crate::ctl::workers::workers_report;

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
