//! `spoolctl dead purge`: deletes a queue's dead letters.

use serde::Serialize;
use spool_broker::{Broker, QueueName};

use super::{Report, plural};
use crate::error::{Error, Result};

/// How many dead letters a purge deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadPurgeReport {
    /// The queue whose dead letters were deleted.
    pub queue: QueueName,
    /// How many there were.
    pub purged: u64,
}

impl Report for DeadPurgeReport {
    fn to_text(&self) -> String {
        format!(
            "purged {} from queue {}\n",
            plural(self.purged, "dead letter"),
            self.queue
        )
    }
}

/// Refuses a dead-letter purge that was not confirmed; lets the caller
/// check before connecting to a broker.
///
/// # Errors
///
/// [`Error::DeadPurgeNotConfirmed`] when `confirmed` is false.
pub fn check_dead_purge_confirmed(queue: &QueueName, confirmed: bool) -> Result<()> {
    if confirmed {
        Ok(())
    } else {
        Err(Error::DeadPurgeNotConfirmed {
            queue: queue.clone(),
        })
    }
}

/// Deletes the dead letters of `queue` once `confirmed`, and says how many
/// there were.
///
/// # Errors
///
/// [`Error::DeadPurgeNotConfirmed`] when `confirmed` is false, and nothing
/// is deleted; [`Error::Broker`] when the broker fails.
pub async fn dead_purge(
    broker: &impl Broker,
    queue: &QueueName,
    confirmed: bool,
) -> Result<DeadPurgeReport> {
    check_dead_purge_confirmed(queue, confirmed)?;
    let purged = broker.purge_dead(queue).await?;
    Ok(DeadPurgeReport {
        queue: queue.clone(),
        purged,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ctl::dead_retry::tests::with_dead;
    use crate::ctl::{Format, render};

    const Q: QueueName = QueueName::ANALYSIS;

    #[tokio::test]
    async fn a_confirmed_purge_deletes_the_dead_letters() {
        let broker = with_dead(2).await;
        let report = dead_purge(&broker, &Q, true).await.unwrap();
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "purged 2 dead letters from queue analysis\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json, json!({"queue": "analysis", "purged": 2}));
        assert_eq!(broker.stats(&Q).await.unwrap().dead, 0);
    }

    #[tokio::test]
    async fn an_unconfirmed_purge_deletes_nothing() {
        let broker = with_dead(2).await;
        let err = dead_purge(&broker, &Q, false).await.unwrap_err();
        assert!(
            matches!(err, Error::DeadPurgeNotConfirmed { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("without --yes"), "{err}");
        assert_eq!(broker.stats(&Q).await.unwrap().dead, 2);
    }
}
