//! `spoolctl pause` and `spoolctl resume`: stop and restart the fetching of
//! a queue.

use serde::Serialize;
use spool_broker::{Broker, QueueName};

use super::Report;
use crate::error::Result;

/// A queue whose pause state was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseReport {
    /// The queue.
    pub queue: QueueName,
    /// Whether it is paused now.
    pub paused: bool,
}

impl Report for PauseReport {
    fn to_text(&self) -> String {
        if self.paused {
            format!(
                "paused queue {}: workers stop fetching it; running tasks finish\n",
                self.queue
            )
        } else {
            format!("resumed queue {}: workers fetch it again\n", self.queue)
        }
    }
}

/// Pauses `queue`: workers stop fetching it (at once, through the control
/// channel), give back the tasks they fetched and did not start, and finish
/// the running ones; its delayed tasks are not promoted. Nothing is lost:
/// [`resume`] picks up where it stopped.
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
/// ctl::pause(&broker, &QueueName::GPU).await?;
/// assert_eq!(broker.paused().await?, [QueueName::GPU]);
/// ctl::resume(&broker, &QueueName::GPU).await?;
/// assert!(broker.paused().await?.is_empty());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when the broker fails.
pub async fn pause(broker: &impl Broker, queue: &QueueName) -> Result<PauseReport> {
    broker.pause(queue).await?;
    Ok(PauseReport {
        queue: queue.clone(),
        paused: true,
    })
}

/// Resumes a paused `queue`: workers fetch it again, and its due delayed
/// tasks are promoted. Resuming a queue that is not paused does nothing.
///
/// # Examples
///
/// ```
/// use spool_broker::{MemoryBroker, QueueName};
/// use spool_scheduler::ctl::{self, Format};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_scheduler::Result<()> {
/// let report = ctl::resume(&MemoryBroker::new(), &QueueName::GPU).await?;
/// assert_eq!(
///     ctl::render(&report, Format::Text)?,
///     "resumed queue gpu: workers fetch it again\n"
/// );
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when the broker fails.
pub async fn resume(broker: &impl Broker, queue: &QueueName) -> Result<PauseReport> {
    broker.resume(queue).await?;
    Ok(PauseReport {
        queue: queue.clone(),
        paused: false,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use spool_broker::{Envelope, MemoryBroker, Timestamp};

    use super::*;
    use crate::ctl::{Format, render};

    const Q: QueueName = QueueName::ANALYSIS;

    #[tokio::test]
    async fn a_paused_queue_keeps_its_tasks_until_resumed() {
        let broker = MemoryBroker::new();
        let mut due = Envelope::new("t", Q, vec![]);
        // Still in the future when enqueued, even on a loaded machine.
        due.eta = Some(Timestamp::now().saturating_add(Duration::from_millis(300)));
        broker
            .enqueue(&[Envelope::new("t", Q, vec![]), due])
            .await
            .unwrap();
        let report = pause(&broker, &Q).await.unwrap();
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "paused queue analysis: workers stop fetching it; running tasks finish\n"
        );
        // Once the delayed task is due, a paused fetch still does not
        // promote it.
        let became_due = async {
            while broker.stats(&Q).await.unwrap().delayed_due == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), became_due)
            .await
            .unwrap();
        let batch = broker.fetch(&Q, "w", 10, Duration::ZERO).await.unwrap();
        assert!(batch.is_empty());
        let stats = broker.stats(&Q).await.unwrap();
        assert!(stats.paused);
        assert_eq!((stats.ready_total(), stats.delayed_due), (1, 1));
        assert_eq!(stats.backlog(), 2);

        let report = resume(&broker, &Q).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json, json!({"queue": "analysis", "paused": false}));
        let batch = broker.fetch(&Q, "w", 10, Duration::ZERO).await.unwrap();
        assert_eq!(batch.deliveries.len(), 2);
        assert!(!broker.stats(&Q).await.unwrap().paused);
    }
}
