//! `spoolctl purge`: deletes every task of a queue.

use serde::Serialize;
use spool_broker::{Broker, QueueName};

use super::{Report, plural};
use crate::error::{Error, Result};

/// How many tasks a purge deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// The queue purged.
    pub queue: QueueName,
    /// How many tasks it held, whatever their state.
    pub purged: u64,
}

impl Report for PurgeReport {
    fn to_text(&self) -> String {
        format!(
            "purged {} from queue {}\n",
            plural(self.purged, "task"),
            self.queue
        )
    }
}

/// Refuses a purge that was not confirmed; lets the caller check before
/// connecting to a broker.
///
/// # Errors
///
/// [`Error::NotConfirmed`] when `confirmed` is false.
pub fn check_purge_confirmed(queue: &QueueName, confirmed: bool) -> Result<()> {
    if confirmed {
        Ok(())
    } else {
        Err(Error::NotConfirmed {
            queue: queue.clone(),
        })
    }
}

/// Deletes every task of `queue` (ready, running, delayed and dead) once
/// `confirmed`, and says how many there were.
///
/// # Errors
///
/// [`Error::NotConfirmed`] when `confirmed` is false, and nothing is
/// deleted; [`Error::Broker`] when the broker fails.
pub async fn purge(
    broker: &impl Broker,
    queue: &QueueName,
    confirmed: bool,
) -> Result<PurgeReport> {
    check_purge_confirmed(queue, confirmed)?;
    let purged = broker.purge(queue).await?;
    Ok(PurgeReport {
        queue: queue.clone(),
        purged,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use spool_broker::{Envelope, MemoryBroker, Timestamp};

    use super::*;
    use crate::ctl::{Format, render};

    const Q: QueueName = QueueName::STREAMING;

    async fn four_tasks() -> MemoryBroker {
        let broker = MemoryBroker::new();
        let mut tasks: Vec<_> = (0..4).map(|_| Envelope::new("t", Q, vec![])).collect();
        tasks[0].eta = Some(Timestamp::now().saturating_add(Duration::from_secs(60)));
        broker.enqueue(&tasks).await.unwrap();
        broker.fetch(&Q, "w", 1, Duration::ZERO).await.unwrap();
        broker
    }

    #[tokio::test]
    async fn purge_counts_every_state_and_empties_the_queue() {
        let broker = four_tasks().await;
        let report = purge(&broker, &Q, true).await.unwrap();
        assert_eq!(report.purged, 4);
        assert!(broker.stats(&Q).await.unwrap().is_drained());
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "purged 4 tasks from queue streaming\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json, json!({"queue": "streaming", "purged": 4}));

        let again = purge(&broker, &Q, true).await.unwrap();
        assert_eq!(
            render(&again, Format::Text).unwrap(),
            "purged 0 tasks from queue streaming\n"
        );
    }

    #[tokio::test]
    async fn an_unconfirmed_purge_deletes_nothing() {
        let broker = four_tasks().await;
        let err = purge(&broker, &Q, false).await.unwrap_err();
        assert!(matches!(err, Error::NotConfirmed { .. }), "{err:?}");
        assert!(err.to_string().contains("without --yes"), "{err}");
        let stats = broker.stats(&Q).await.unwrap();
        assert_eq!(
            (stats.ready_total(), stats.pending, stats.delayed),
            (2, 1, 1)
        );
    }
}
