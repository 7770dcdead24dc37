//! `spoolctl queues`: how many tasks each queue holds, by state.

use serde::Serialize;
use spool_broker::{Broker, QueueName, QueueStats};

use super::Report;
use crate::error::Result;
use crate::table::{Align, Table};

/// One queue's counts, as `spoolctl queues` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueRow {
    /// The queue.
    pub queue: QueueName,
    /// Ready at high priority.
    pub ready_high: u64,
    /// Ready at normal priority.
    pub ready_normal: u64,
    /// Ready at low priority.
    pub ready_low: u64,
    /// Ready at any priority.
    pub ready: u64,
    /// Fetched by a worker and not yet settled (in flight).
    pub pending: u64,
    /// Scheduled for later.
    pub delayed: u64,
    /// In the dead-letter stream.
    pub dead: u64,
}

impl QueueRow {
    /// The row for `queue`'s stats.
    #[must_use]
    pub fn new(queue: QueueName, stats: &QueueStats) -> Self {
        let [ready_high, ready_normal, ready_low] = stats.ready;
        Self {
            queue,
            ready_high,
            ready_normal,
            ready_low,
            ready: stats.ready_total(),
            pending: stats.pending,
            delayed: stats.delayed,
            dead: stats.dead,
        }
    }
}

/// The counts of several queues; JSON: an array of [`QueueRow`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct QueuesReport {
    /// One row per queue, in the order asked.
    pub rows: Vec<QueueRow>,
}

impl Report for QueuesReport {
    fn to_text(&self) -> String {
        let mut table = Table::new([
            ("QUEUE", Align::Left),
            ("HIGH", Align::Right),
            ("NORMAL", Align::Right),
            ("LOW", Align::Right),
            ("READY", Align::Right),
            ("PENDING", Align::Right),
            ("DELAYED", Align::Right),
            ("DEAD", Align::Right),
        ]);
        for r in &self.rows {
            let counts = [
                r.ready_high,
                r.ready_normal,
                r.ready_low,
                r.ready,
                r.pending,
                r.delayed,
                r.dead,
            ];
            let cells = std::iter::once(r.queue.to_string()).chain(counts.map(|n| n.to_string()));
            table.row(cells);
        }
        table.to_string()
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

/// Counts the tasks of the routed queues and of `extra`, by state.
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when the broker fails.
pub async fn queues(broker: &impl Broker, extra: &[QueueName]) -> Result<QueuesReport> {
    let mut rows = Vec::new();
    for queue in queues_to_show(extra) {
        let stats = broker.stats(&queue).await?;
        rows.push(QueueRow::new(queue, &stats));
    }
    Ok(QueuesReport { rows })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        broker
    }

    #[tokio::test]
    async fn routed_queues_come_first_then_extra_ones_once() {
        let broker = sample_broker().await;
        let extra = ["thumbs", "default", "thumbs"].map(|q| q.parse().unwrap());
        let report = queues(&broker, &extra).await.unwrap();
        let names: Vec<_> = report.rows.iter().map(|r| r.queue.as_str()).collect();
        assert_eq!(names, ["default", "analysis", "streaming", "gpu", "thumbs"]);
    }

    #[tokio::test]
    async fn the_table_aligns_counts_under_a_header() {
        let broker = sample_broker().await;
        let report = queues(&broker, &["thumbs".parse().unwrap()]).await.unwrap();
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "QUEUE      HIGH  NORMAL  LOW  READY  PENDING  DELAYED  DEAD\n\
             default       1      12    1     14        0        0     0\n\
             analysis      0       0    0      0        0        0     0\n\
             streaming     0       0    0      0        0        0     0\n\
             gpu           0       0    0      0        0        1     0\n\
             thumbs        1       0    0      1        1        0     0\n"
        );
    }

    #[tokio::test]
    async fn json_is_an_array_of_flat_objects() {
        let broker = sample_broker().await;
        let report = queues(&broker, &[]).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 4);
        assert_eq!(
            json[0],
            json!({
                "queue": "default", "ready_high": 1, "ready_normal": 12, "ready_low": 1,
                "ready": 14, "pending": 0, "delayed": 0, "dead": 0,
            })
        );
        assert_eq!(json[3]["queue"], "gpu");
        assert_eq!(json[3]["delayed"], 1);
    }
}
