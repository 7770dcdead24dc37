//! `spoolctl queues`: each queue's backlog, in-flight and delayed tasks,
//! dead letters, oldest wait, consumers and rates.
//!
//! Rates come from the broker's cumulative counters
//! ([`QueueStats::enqueued_total`], [`QueueStats::completed_total`]) read
//! twice: `queues` samples over a short window (`--sample`, 1 s by default),
//! and `top` between refreshes, as Sidekiq's dashboard polls its processed
//! and failed counters. Nothing is kept in Redis for it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use spool_broker::{Broker, QueueName, QueueStats};

use super::Report;
use crate::error::Result;
use crate::table::{Align, Table};

/// How long `spoolctl queues` watches the counters for its rates unless told
/// otherwise.
pub const DEFAULT_SAMPLE: Duration = Duration::from_secs(1);

/// What the text shows for a value that is not known.
const NONE: &str = "-";

/// One queue's counts and signals, as `spoolctl queues` shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueRow {
    /// The queue.
    pub queue: QueueName,
    /// Whether it is paused: workers do not fetch it.
    pub paused: bool,
    /// Waiting for a worker: ready plus due delayed tasks.
    pub backlog: u64,
    /// Ready at high priority.
    pub ready_high: u64,
    /// Ready at normal priority.
    pub ready_normal: u64,
    /// Ready at low priority.
    pub ready_low: u64,
    /// Ready at any priority.
    pub ready: u64,
    /// Fetched by a worker and not yet settled: in flight.
    pub pending: u64,
    /// Scheduled for later, due ones included.
    pub delayed: u64,
    /// Delayed tasks whose time has come (promoted by the next fetch).
    pub delayed_due: u64,
    /// In the dead-letter stream.
    pub dead: u64,
    /// How long the oldest runnable task has waited, in seconds (to the
    /// millisecond); null when nothing is runnable. Every duration in
    /// Spool's JSON is a number of seconds named `_seconds`.
    pub oldest_age_seconds: Option<f64>,
    /// The same in humantime (`1m 5s`), for the table; not in JSON.
    #[serde(skip)]
    pub oldest_age: Option<String>,
    /// Consumers active on the queue lately: about its worker processes.
    pub consumers: u64,
    /// Tasks wait and no consumer is active: no worker serves the queue
    /// (it is not paused). The table flags it `no-consumer`.
    pub no_consumer: bool,
    /// Tasks that entered the queue's streams, cumulative.
    pub enqueued_total: u64,
    /// Tasks that left them (settled), cumulative.
    pub completed_total: u64,
    /// Tasks entering per second over the sample; null when not sampled.
    pub rate_in: Option<f64>,
    /// Tasks settled per second over the sample; null when not sampled.
    pub rate_out: Option<f64>,
    /// Why this queue could not be read (one of its keys holds something
    /// else, say), its counts then zero; absent when it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl QueueRow {
    /// The row for `queue`'s stats, without rates.
    #[must_use]
    pub fn new(queue: QueueName, stats: &QueueStats) -> Self {
        let [ready_high, ready_normal, ready_low] = stats.ready;
        let oldest_age_seconds = stats.oldest_age.map(seconds);
        Self {
            queue,
            paused: stats.paused,
            backlog: stats.backlog(),
            ready_high,
            ready_normal,
            ready_low,
            ready: stats.ready_total(),
            pending: stats.pending,
            delayed: stats.delayed,
            delayed_due: stats.delayed_due,
            dead: stats.dead,
            oldest_age_seconds,
            oldest_age: stats.oldest_age.map(humantime_rounded),
            consumers: stats.consumers,
            no_consumer: stats.backlog() > 0 && stats.consumers == 0 && !stats.paused,
            enqueued_total: stats.enqueued_total,
            completed_total: stats.completed_total,
            rate_in: None,
            rate_out: None,
            error: None,
        }
    }

    /// The row of a queue that could not be read, saying why.
    #[must_use]
    pub fn unreadable(queue: QueueName, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::new(queue, &QueueStats::default())
        }
    }

    /// Sets the rates from the counters of an earlier row of the same queue,
    /// read `elapsed` before this one. A counter that went back (the queue
    /// was purged meanwhile) leaves its rate unknown.
    #[must_use]
    pub fn with_rates_since(mut self, earlier: &QueueRow, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        let rate = |now: u64, then: u64| {
            (seconds > 0.0 && now >= then).then(|| (now - then) as f64 / seconds)
        };
        self.rate_in = rate(self.enqueued_total, earlier.enqueued_total);
        self.rate_out = rate(self.completed_total, earlier.completed_total);
        self
    }
}

/// A duration in humantime, to the second from one second up and to the
/// millisecond below: `1m 5s`, `350ms`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_scheduler::ctl::humantime_rounded;
///
/// assert_eq!(humantime_rounded(Duration::from_millis(65_432)), "1m 5s");
/// assert_eq!(humantime_rounded(Duration::from_micros(350_900)), "350ms");
/// ```
#[must_use]
pub fn humantime_rounded(duration: Duration) -> String {
    let rounded = if duration >= Duration::from_secs(1) {
        Duration::from_secs(duration.as_secs())
    } else {
        Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(0))
    };
    humantime::format_duration(rounded).to_string()
}

/// A duration as JSON writes it: seconds, to the millisecond.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_scheduler::ctl::seconds;
///
/// assert_eq!(seconds(Duration::from_micros(65_432_900)), 65.432);
/// ```
#[must_use]
pub fn seconds(duration: Duration) -> f64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX) as f64 / 1000.0
}

/// A rate per second with one decimal, or `-` when unknown.
fn rate_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| NONE.to_owned(), |r| format!("{r:.1}"))
}

/// The signals of several queues; JSON: an array of [`QueueRow`]s.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct QueuesReport {
    /// One row per queue, in the order asked.
    pub rows: Vec<QueueRow>,
}

impl Report for QueuesReport {
    fn to_text(&self) -> String {
        let mut table = Table::new([
            ("QUEUE", Align::Left),
            ("BACKLOG", Align::Right),
            ("IN-FLIGHT", Align::Right),
            ("DELAYED", Align::Right),
            ("DEAD", Align::Right),
            ("OLDEST", Align::Right),
            ("CONSUMERS", Align::Right),
            ("IN/S", Align::Right),
            ("OUT/S", Align::Right),
            ("PAUSED", Align::Left),
            ("FLAG", Align::Left),
        ]);
        let mut errors = String::new();
        for r in &self.rows {
            if let Some(error) = &r.error {
                let mut row = vec![r.queue.to_string()];
                row.extend(std::iter::repeat_n(NONE.to_owned(), 9));
                row.push("ERROR".to_owned());
                table.row(row);
                let _ = writeln!(errors, "queue {}: {error}", r.queue);
                continue;
            }
            table.row([
                r.queue.to_string(),
                r.backlog.to_string(),
                r.pending.to_string(),
                r.delayed.to_string(),
                r.dead.to_string(),
                r.oldest_age.clone().unwrap_or_else(|| NONE.to_owned()),
                r.consumers.to_string(),
                rate_text(r.rate_in),
                rate_text(r.rate_out),
                if r.paused { "yes" } else { "no" }.to_owned(),
                if r.no_consumer { "no-consumer" } else { NONE }.to_owned(),
            ]);
        }
        table.to_string() + &errors
    }
}

/// The queues `spoolctl queues` reports on: the four routed ones, then those
/// of `extra` not among them, each once, in order.
#[must_use]
pub fn queues_to_show(extra: &[QueueName]) -> Vec<QueueName> {
    let mut all = QueueName::ROUTED.to_vec();
    for queue in extra {
        if !all.contains(queue) {
            all.push(queue.clone());
        }
    }
    all
}

/// The stats of some queues, read at one moment. Two samples make a report
/// with rates.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_broker::{Broker, Envelope, MemoryBroker, QueueName};
/// use spool_scheduler::ctl::QueuesSample;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_scheduler::Result<()> {
/// let broker = MemoryBroker::new();
/// let queues = [QueueName::DEFAULT];
/// let before = QueuesSample::read(&broker, &queues).await?;
/// broker.enqueue(&[Envelope::new("spool.ping", QueueName::DEFAULT, vec![])]).await?;
/// tokio::time::sleep(Duration::from_millis(10)).await;
/// let after = QueuesSample::read(&broker, &queues).await?;
/// let row = &after.report(Some(&before)).rows[0];
/// assert_eq!((row.backlog, row.enqueued_total), (1, 1));
/// assert!(row.rate_in.is_some_and(|rate| rate > 0.0));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct QueuesSample {
    /// When the reading started.
    pub at: Instant,
    /// Each queue's stats, in the order asked.
    pub stats: Vec<(QueueName, QueueStats)>,
    /// The queues that could not be read, and why: their rows follow.
    pub unreadable: Vec<(QueueName, String)>,
}

impl QueuesSample {
    /// Reads the stats of `queues`, one round trip each. A queue Redis
    /// refuses to read (a key of the wrong type) is set aside with its
    /// error, so that one bad key does not hide the other queues.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`](crate::Error::Broker) when the broker cannot be
    /// reached.
    pub async fn read(broker: &impl Broker, queues: &[QueueName]) -> Result<Self> {
        let at = Instant::now();
        let mut stats = Vec::with_capacity(queues.len());
        let mut unreadable = Vec::new();
        for queue in queues {
            match broker.stats(queue).await {
                Ok(read) => stats.push((queue.clone(), read)),
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => unreadable.push((queue.clone(), e.to_string())),
            }
        }
        Ok(Self {
            at,
            stats,
            unreadable,
        })
    }

    /// The report of this sample, with rates since `earlier` for the queues
    /// both read.
    #[must_use]
    pub fn report(&self, earlier: Option<&QueuesSample>) -> QueuesReport {
        let rows = self
            .stats
            .iter()
            .map(|(queue, stats)| {
                let row = QueueRow::new(queue.clone(), stats);
                let before = earlier.and_then(|e| {
                    let elapsed = self.at.saturating_duration_since(e.at);
                    let (_, stats) = e.stats.iter().find(|(q, _)| q == queue)?;
                    Some((QueueRow::new(queue.clone(), stats), elapsed))
                });
                match before {
                    Some((before, elapsed)) => row.with_rates_since(&before, elapsed),
                    None => row,
                }
            })
            .chain(
                self.unreadable
                    .iter()
                    .map(|(queue, error)| QueueRow::unreadable(queue.clone(), error.clone())),
            )
            .collect();
        QueuesReport { rows }
    }
}

/// The queues to show: the routed ones, those of `extra`, any paused
/// queue, and every queue that holds tasks ([`Broker::known_queues`]:
/// a backlog no worker serves included), each once.
///
/// # Examples
///
/// ```
/// use spool_broker::{Broker, MemoryBroker, QueueName};
/// use spool_scheduler::ctl;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_scheduler::Result<()> {
/// let broker = MemoryBroker::new();
/// let uploads: QueueName = "uploads".parse()?;
/// broker.pause(&uploads).await?;
/// let shown = ctl::queues_with_paused(&broker, &[]).await?;
/// assert_eq!(shown.last(), Some(&uploads));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when the broker fails.
pub async fn queues_with_paused(
    broker: &impl Broker,
    extra: &[QueueName],
) -> Result<Vec<QueueName>> {
    let mut extra = extra.to_vec();
    extra.extend(broker.paused().await?);
    extra.extend(broker.known_queues().await?);
    Ok(queues_to_show(&extra))
}

/// Reads the routed queues, those of `extra` and the paused ones. With a
/// non-zero `sample`, reads them again after that long and reports rates
/// over the window; with zero, the rates are unknown.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_broker::MemoryBroker;
/// use spool_scheduler::ctl::{self, Format};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_scheduler::Result<()> {
/// let broker = MemoryBroker::new();
/// let report = ctl::queues(&broker, &[], Duration::from_millis(50)).await?;
/// assert_eq!(report.rows.len(), 4);
/// assert_eq!(report.rows[0].rate_in, Some(0.0));
/// print!("{}", ctl::render(&report, Format::Text)?);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when the broker fails.
pub async fn queues(
    broker: &impl Broker,
    extra: &[QueueName],
    sample: Duration,
) -> Result<QueuesReport> {
    let shown = queues_with_paused(broker, extra).await?;
    let first = QueuesSample::read(broker, &shown).await?;
    if sample.is_zero() {
        return Ok(first.report(None));
    }
    tokio::time::sleep(sample).await;
    let second = QueuesSample::read(broker, &shown).await?;
    Ok(second.report(Some(&first)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use spool_broker::{Envelope, MemoryBroker, Priority, Timestamp};

    use super::*;
    use crate::ctl::{Format, render};

    fn task(queue: &QueueName, priority: Priority) -> Envelope {
        let mut envelope = Envelope::new("t", queue.clone(), vec![]);
        envelope.priority = priority;
        envelope
    }

    async fn sample_broker() -> MemoryBroker {
        let broker = MemoryBroker::new();
        let thumbs = QueueName::new("thumbs").unwrap();
        let mut later = task(&QueueName::GPU, Priority::Low);
        later.eta = Some(Timestamp::now().saturating_add(Duration::from_secs(60)));
        let mut tasks = vec![later];
        tasks.extend((0..12).map(|_| task(&QueueName::DEFAULT, Priority::Normal)));
        tasks.extend([Priority::High, Priority::Low].map(|p| task(&QueueName::DEFAULT, p)));
        tasks.push(task(&thumbs, Priority::High));
        tasks.push(task(&thumbs, Priority::High));
        broker.enqueue(&tasks).await.unwrap();
        // One of thumbs' tasks is in flight.
        let batch = broker.fetch(&thumbs, "w", 1, Duration::ZERO).await.unwrap();
        assert_eq!(batch.len(), 1);
        broker.pause(&QueueName::STREAMING).await.unwrap();
        broker
    }

    #[tokio::test]
    async fn routed_queues_come_first_then_extra_ones_once() {
        let broker = sample_broker().await;
        let extra = ["thumbs", "default", "thumbs"].map(|q| q.parse().unwrap());
        let report = queues(&broker, &extra, Duration::ZERO).await.unwrap();
        let names: Vec<_> = report.rows.iter().map(|r| r.queue.as_str()).collect();
        assert_eq!(names, ["default", "analysis", "streaming", "gpu", "thumbs"]);
    }

    #[tokio::test]
    async fn paused_queues_are_always_shown() {
        let broker = sample_broker().await;
        let extra: QueueName = "uploads".parse().unwrap();
        broker.pause(&extra).await.unwrap();
        let report = queues(&broker, &[], Duration::ZERO).await.unwrap();
        let paused: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.paused)
            .map(|r| r.queue.as_str())
            .collect();
        assert_eq!(paused, ["streaming", "uploads"]);
    }

    #[tokio::test]
    async fn the_table_aligns_counts_under_a_header() {
        let broker = sample_broker().await;
        let report = queues(&broker, &["thumbs".parse().unwrap()], Duration::ZERO)
            .await
            .unwrap();
        let text = render(&report, Format::Text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "QUEUE      BACKLOG  IN-FLIGHT  DELAYED  DEAD  OLDEST  CONSUMERS  IN/S  OUT/S  PAUSED  FLAG"
        );
        // Ages depend on the clock: check the columns around them.
        let cells =
            |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_owned).collect() };
        let default = cells(lines[1]);
        assert_eq!(default[..5], ["default", "14", "0", "0", "0"], "{text}");
        assert!(default[5].ends_with('s'), "an age: {text}");
        assert_eq!(default[6..], ["0", "-", "-", "no", "no-consumer"], "{text}");
        assert_eq!(
            cells(lines[3]),
            [
                "streaming",
                "0",
                "0",
                "0",
                "0",
                "-",
                "0",
                "-",
                "-",
                "yes",
                "-"
            ]
        );
        assert_eq!(
            cells(lines[4]),
            ["gpu", "0", "0", "1", "0", "-", "0", "-", "-", "no", "-"]
        );
        let thumbs = cells(lines[5]);
        assert_eq!(thumbs[..5], ["thumbs", "1", "1", "0", "0"], "{text}");
        assert_eq!(thumbs[6], "1", "one consumer fetched: {text}");
    }

    #[tokio::test]
    async fn json_is_an_array_of_flat_objects() {
        let broker = sample_broker().await;
        let report = queues(&broker, &[], Duration::ZERO).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        // The four routed queues, then thumbs: it holds tasks.
        assert_eq!(json.as_array().unwrap().len(), 5);
        assert_eq!(json[4]["queue"], "thumbs");
        let mut default = json[0].clone();
        let age = default["oldest_age_seconds"].as_f64().expect("an age");
        assert!(age < 60.0, "{default}");
        assert!(default.get("oldest_age").is_none(), "{default}");
        let object = default.as_object_mut().unwrap();
        object.remove("oldest_age_seconds");
        assert_eq!(
            default,
            json!({
                "queue": "default", "paused": false, "backlog": 14,
                "ready_high": 1, "ready_normal": 12, "ready_low": 1, "ready": 14,
                "pending": 0, "delayed": 0, "delayed_due": 0, "dead": 0,
                "consumers": 0, "no_consumer": true, "enqueued_total": 14, "completed_total": 0,
                "rate_in": null, "rate_out": null,
            })
        );
        assert_eq!(json[3]["queue"], "gpu");
        assert_eq!(json[3]["delayed"], 1);
        assert!(json[3]["oldest_age_seconds"].is_null());
        assert_eq!(json[3]["no_consumer"], false, "nothing waits yet");
        assert_eq!(json[2]["paused"], true);
    }

    #[tokio::test]
    async fn rates_come_from_the_counters_between_two_samples() {
        let broker = MemoryBroker::new();
        let q = QueueName::DEFAULT;
        let queues = [q.clone()];
        let tasks = |n: usize| {
            (0..n)
                .map(|_| task(&q, Priority::Normal))
                .collect::<Vec<_>>()
        };
        broker.enqueue(&tasks(4)).await.unwrap();
        let first = QueuesSample::read(&broker, &queues).await.unwrap();
        broker.enqueue(&tasks(6)).await.unwrap();
        let batch = broker.fetch(&q, "w", 3, Duration::ZERO).await.unwrap();
        let tags: Vec<_> = batch.deliveries.iter().map(|d| d.tag.clone()).collect();
        broker.ack(&tags).await.unwrap();
        let mut second = QueuesSample::read(&broker, &queues).await.unwrap();
        // The window, fixed for the arithmetic.
        second.at = first.at + Duration::from_secs(2);
        let row = &second.report(Some(&first)).rows[0];
        assert_eq!((row.enqueued_total, row.completed_total), (10, 3));
        assert_eq!((row.rate_in, row.rate_out), (Some(3.0), Some(1.5)));
        assert_eq!(
            render(&second.report(Some(&first)), Format::Text)
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .skip(7)
                .collect::<Vec<_>>(),
            ["3.0", "1.5", "no", "-"]
        );

        // A purge restarts the counters: the rates are unknown, not negative.
        broker.purge(&q).await.unwrap();
        let mut third = QueuesSample::read(&broker, &queues).await.unwrap();
        third.at = second.at + Duration::from_secs(1);
        let row = &third.report(Some(&second)).rows[0];
        assert_eq!((row.rate_in, row.rate_out), (None, None));
    }

    #[test]
    fn ages_round_to_seconds_above_one_second() {
        assert_eq!(humantime_rounded(Duration::from_millis(65_432)), "1m 5s");
        assert_eq!(humantime_rounded(Duration::from_micros(350_900)), "350ms");
        assert_eq!(humantime_rounded(Duration::ZERO), "0s");
    }
}
