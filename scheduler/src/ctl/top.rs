//! `spoolctl top`: a live view of the queues and the workers.
//!
//! Each refresh reads the worker registry and every queue's signals
//! ([`QueuesSample`]), and computes the rates over the time since the
//! previous refresh. The binary prints each frame over the last one (ANSI
//! clear and home) on a terminal, or one after the other otherwise, or one
//! JSON object per line with `--json`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};
use spool_broker::{QueueName, RedisBroker, Timestamp};

use super::queues::{QueuesReport, QueuesSample, queues_with_paused};
use super::workers::{WorkersReport, workers_report};
use super::{Format, Report};
use crate::error::{Error, Result};

/// How often `top` refreshes unless told otherwise.
pub const DEFAULT_TOP_INTERVAL: Duration = Duration::from_secs(1);

/// Moves the cursor home and clears the screen: the next frame replaces
/// the last one.
pub const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// One refresh of `top`; JSON: `{"at", "interval_seconds", "queues",
/// "workers"}` with the shapes of `queues --json` and `workers --json`.
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
}

fn rfc3339<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(at)
}

fn seconds<S: Serializer>(interval: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(interval.as_secs_f64())
}

impl Report for TopFrame {
    fn to_text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "spoolctl top  {}  every {}  (Ctrl-C quits)\n",
            self.at,
            humantime::format_duration(self.interval)
        );
        text.push_str(&self.queues.to_text());
        text.push('\n');
        text.push_str(&self.workers.to_text());
        text
    }
}

/// Renders a frame: JSON on one line, or text, led by [`CLEAR_SCREEN`] when
/// `clear` is set (on a terminal; a pipe gets frames one after another).
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
/// let frame = TopFrame {
///     at: Timestamp::now(),
///     interval: Duration::from_secs(1),
///     queues: sample.report(None),
///     workers: ctl::workers_report(Vec::new(), Timestamp::now()),
/// };
/// let line = ctl::render_frame(&frame, Format::Json, false)?;
/// assert!(line.starts_with("{\"at\":") && line.ends_with("}\n"));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Output`] when the frame cannot be encoded as JSON.
pub fn render_frame(frame: &TopFrame, format: Format, clear: bool) -> Result<String> {
    match format {
        Format::Json => {
            let mut line = serde_json::to_string(frame).map_err(Error::Output)?;
            line.push('\n');
            Ok(line)
        }
        Format::Text if clear => Ok(format!("{CLEAR_SCREEN}{}", frame.to_text())),
        // Frames one after another, a blank line apart.
        Format::Text => Ok(format!("{}\n", frame.to_text())),
    }
}

/// Reads successive frames of `top` from one broker.
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
/// let mut top = ctl::Top::new(&broker, Vec::new(), Duration::from_secs(1));
/// for _ in 0..3 {
///     let frame = top.next_frame().await?;
///     print!("{}", ctl::render_frame(&frame, Format::Text, true)?);
///     tokio::time::sleep(Duration::from_secs(1)).await;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Top<'a> {
    broker: &'a RedisBroker,
    extra: Vec<QueueName>,
    interval: Duration,
    previous: Option<QueuesSample>,
}

impl<'a> Top<'a> {
    /// A view of the routed queues, `extra` ones, the paused ones and those
    /// the live workers serve, refreshed every `interval` (which the frames
    /// only report: the caller paces them).
    #[must_use]
    pub fn new(broker: &'a RedisBroker, extra: Vec<QueueName>, interval: Duration) -> Self {
        Self {
            broker,
            extra,
            interval,
            previous: None,
        }
    }

    /// Reads the next frame; its rates cover the time since the previous
    /// one (the first has none).
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when Redis fails.
    pub async fn next_frame(&mut self) -> Result<TopFrame> {
        let records = self.broker.workers().await?;
        let mut extra = self.extra.clone();
        for record in records.iter().filter(|r| r.is_live()) {
            extra.extend(record.queues.iter().cloned());
        }
        let queues = queues_with_paused(self.broker, &extra).await?;
        let sample = QueuesSample::read(self.broker, &queues).await?;
        let frame = TopFrame {
            at: Timestamp::now(),
            interval: self.interval,
            queues: sample.report(self.previous.as_ref()),
            workers: workers_report(records, Timestamp::now()),
        };
        self.previous = Some(sample);
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use spool_broker::{MemoryBroker, WorkerRecord};

    use super::*;
    use crate::ctl::queues;

    async fn frame() -> TopFrame {
        let broker = MemoryBroker::new();
        let sample = QueuesSample::read(&broker, &queues::queues_to_show(&[]))
            .await
            .unwrap();
        let mut record = WorkerRecord::new("w-1-ab", "w", "node-a", 1);
        record.queues = vec![QueueName::DEFAULT];
        record.slots = 2;
        TopFrame {
            at: Timestamp::from_millis(1_700_000_000_000),
            interval: Duration::from_millis(1500),
            queues: sample.report(None),
            workers: workers_report(vec![record], Timestamp::now()),
        }
    }

    #[tokio::test]
    async fn text_frames_clear_the_screen_on_a_terminal_only() {
        let frame = frame().await;
        let cleared = render_frame(&frame, Format::Text, true).unwrap();
        let body = cleared.strip_prefix(CLEAR_SCREEN).expect("cleared first");
        assert!(
            body.starts_with("spoolctl top  2023-11-14T22:13:20.000Z  every 1s 500ms"),
            "{body}"
        );
        assert!(body.contains("\nQUEUE "), "{body}");
        assert!(body.contains("\nHOST "), "{body}");
        let plain = render_frame(&frame, Format::Text, false).unwrap();
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(plain.ends_with("\n\n"), "{plain}");
    }

    #[tokio::test]
    async fn json_frames_are_one_line_each() {
        let frame = frame().await;
        let line = render_frame(&frame, Format::Json, true).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["interval_seconds"], 1.5);
        assert_eq!(json["queues"].as_array().unwrap().len(), 4);
        assert_eq!(json["workers"][0]["host"], "node-a");
    }
}
