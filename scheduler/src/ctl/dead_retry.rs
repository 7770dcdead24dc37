//! `spoolctl dead retry`: sends dead letters back to their queue.

use serde::Serialize;
use spool_broker::{Broker, QueueName};

use super::{Report, plural};
use crate::error::Result;

/// How many dead letters were requeued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadRetryReport {
    /// The queue whose dead letters were requeued.
    pub queue: QueueName,
    /// How many went back to the queue.
    pub requeued: u64,
}

impl Report for DeadRetryReport {
    fn to_text(&self) -> String {
        format!(
            "requeued {} to queue {}\n",
            plural(self.requeued, "dead letter"),
            self.queue
        )
    }
}

/// Moves the dead letters of `queue` with these entry ids (as `dead list`
/// shows them) back to the queue, or all of them when `entry_ids` is
/// empty. Entries already gone are skipped.
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when the broker fails.
pub async fn dead_retry(
    broker: &impl Broker,
    queue: &QueueName,
    entry_ids: &[String],
) -> Result<DeadRetryReport> {
    let ids = (!entry_ids.is_empty()).then_some(entry_ids);
    let requeued = broker.requeue_dead(queue, ids).await?;
    Ok(DeadRetryReport {
        queue: queue.clone(),
        requeued,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use serde_json::json;
    use spool_broker::{DeadLetter, DeadReason, Envelope, MemoryBroker};

    use super::*;
    use crate::ctl::{Format, dead_list, render};

    const Q: QueueName = QueueName::ANALYSIS;

    /// A broker whose analysis queue holds `n` dead letters.
    pub(crate) async fn with_dead(n: usize) -> MemoryBroker {
        let broker = MemoryBroker::new();
        let tasks: Vec<_> = (0..n).map(|_| Envelope::new("t", Q, vec![])).collect();
        broker.enqueue(&tasks).await.unwrap();
        let batch = broker.fetch(&Q, "w", n, Duration::ZERO).await.unwrap();
        for delivery in &batch.deliveries {
            let letter = DeadLetter {
                reason: DeadReason::AttemptsExhausted,
                error: "boom".into(),
                attempts: 3,
            };
            broker.dead_letter(&delivery.tag, &letter).await.unwrap();
        }
        broker
    }

    #[tokio::test]
    async fn chosen_entries_go_back_then_the_rest() {
        let broker = with_dead(3).await;
        let listed = dead_list(&broker, &Q, 10).await.unwrap();
        let first = vec![listed.rows[0].entry_id.clone()];
        let report = dead_retry(&broker, &Q, &first).await.unwrap();
        assert_eq!(report.requeued, 1);
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "requeued 1 dead letter to queue analysis\n"
        );
        // Already requeued: skipped, never doubled.
        assert_eq!(dead_retry(&broker, &Q, &first).await.unwrap().requeued, 0);

        let rest = dead_retry(&broker, &Q, &[]).await.unwrap();
        assert_eq!(rest.requeued, 2);
        let json: serde_json::Value =
            serde_json::from_str(&render(&rest, Format::Json).unwrap()).unwrap();
        assert_eq!(json, json!({"queue": "analysis", "requeued": 2}));
        let stats = broker.stats(&Q).await.unwrap();
        assert_eq!((stats.dead, stats.ready_total()), (0, 3));
    }
}
