//! `spoolctl dead retry`: sends dead letters back to their queue.

use serde::Serialize;
use spool_broker::store::{JobStore, NewJob};
use spool_broker::{Broker, DeadLetterEntry, Envelope, QueueName};

use super::{Report, plural};
use crate::error::{Error, Result};

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

/// Checks that each of `entry_ids` looks like a dead-letter entry id as
/// `dead list` shows it (`<ms>-<seq>`); lets the caller check before
/// connecting.
///
/// # Examples
///
/// ```
/// use spool_scheduler::ctl::check_entry_ids;
///
/// assert!(check_entry_ids(&["1732500000000-0".to_owned()]).is_ok());
/// assert!(check_entry_ids(&["latest".to_owned()]).is_err());
/// ```
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the first malformed id.
pub fn check_entry_ids(entry_ids: &[String]) -> Result<()> {
    let valid = |id: &str| {
        id.split_once('-').is_some_and(|(ms, seq)| {
            [ms, seq]
                .iter()
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    match entry_ids.iter().find(|id| !valid(id)) {
        Some(bad) => Err(Error::InvalidInput(format!(
            "{bad:?} is not a dead-letter entry id: expected one such as 1732500000000-0, as \
             `spoolctl dead list` shows them"
        ))),
        None => Ok(()),
    }
}

/// Moves the dead letters of `queue` with these entry ids (as `dead list`
/// shows them) back to the queue, or all of them when `entry_ids` is
/// empty.
///
/// Where workers require signed tasks, the broker must hold the signing
/// keys: it signs the next run of each dead letter whose own signature
/// verifies, and sends the others (`unsigned`, `bad_signature`) back
/// unchanged, so the workers refuse them again.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a malformed entry id (nothing is requeued),
/// [`Error::DeadLettersNotFound`] when some of the ids named no dead letter
/// of the queue (the others were requeued), [`Error::Broker`] when the
/// broker fails.
pub async fn dead_retry(
    broker: &impl Broker,
    queue: &QueueName,
    entry_ids: &[String],
) -> Result<DeadRetryReport> {
    dead_retry_recorded(broker, None, queue, entry_ids).await
}

/// [`dead_retry`], recording each revived task in the job store too: its
/// record moves back to `queued` with the attempts made so far, ready for
/// the next attempt's writes (arguments kept, secrets redacted).
///
/// The dead letters are read, then recorded, then requeued: a record
/// written after the requeue could land after a fast worker had already
/// recorded the new run's start or end, and reset that record to `queued`
/// for good (the reset applies whatever the stored revision). One requeued
/// by someone else in between is recorded all the same, which is harmless:
/// it is queued either way. When the requeue itself fails, the records say
/// `queued` for tasks still dead until the retry is asked again.
///
/// # Errors
///
/// As [`dead_retry`]; [`Error::Broker`] when the store fails too, and then
/// nothing was requeued.
pub async fn dead_retry_recorded(
    broker: &impl Broker,
    store: Option<&JobStore>,
    queue: &QueueName,
    entry_ids: &[String],
) -> Result<DeadRetryReport> {
    check_entry_ids(entry_ids)?;
    let mut wanted = entry_ids.to_vec();
    wanted.sort();
    wanted.dedup();
    let ids = (!wanted.is_empty()).then_some(&wanted[..]);
    let revived: Vec<Envelope> = match store {
        Some(_) => {
            let total = broker.stats(queue).await?.dead;
            let limit = usize::try_from(total).unwrap_or(usize::MAX);
            broker
                .dead_letters(queue, limit)
                .await?
                .iter()
                .filter(|entry| ids.is_none_or(|ids| ids.contains(&entry.entry_id)))
                .filter_map(DeadLetterEntry::next_run)
                .collect()
        }
        None => Vec::new(),
    };
    if let Some(store) = store {
        let jobs: Vec<NewJob> = revived.iter().map(NewJob::from_envelope).collect();
        // Nothing moved yet: a store failure is the whole retry's failure.
        store.record_requeued(&jobs).await?;
    }
    let requeued = broker.requeue_dead(queue, ids).await?;
    let asked = u64::try_from(wanted.len()).unwrap_or(u64::MAX);
    if requeued < asked {
        return Err(Error::DeadLettersNotFound {
            queue: queue.clone(),
            requeued,
            missing: asked - requeued,
        });
    }
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
        // Already requeued: skipped, never doubled, and said so.
        let err = dead_retry(&broker, &Q, &first).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::DeadLettersNotFound {
                    requeued: 0,
                    missing: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "1 of the entry ids given is not a dead letter of queue analysis (requeued or \
             purged already?); 0 requeued"
        );
        assert_eq!(broker.stats(&Q).await.unwrap().dead, 2);

        let rest = dead_retry(&broker, &Q, &[]).await.unwrap();
        assert_eq!(rest.requeued, 2);
        let json: serde_json::Value =
            serde_json::from_str(&render(&rest, Format::Json).unwrap()).unwrap();
        assert_eq!(json, json!({"queue": "analysis", "requeued": 2}));
        let stats = broker.stats(&Q).await.unwrap();
        assert_eq!((stats.dead, stats.ready_total()), (0, 3));
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn malformed_entry_ids_are_refused_before_anything_moves() {
        let ids = |list: &[&str]| list.iter().map(|&s| s.to_owned()).collect::<Vec<_>>();
        assert!(check_entry_ids(&ids(&["1732500000000-0", "1-12"])).is_ok());
        for bad in ["nope", "17-", "-1", "1-2-3", "12", ""] {
            let err = check_entry_ids(&ids(&[bad])).unwrap_err().to_string();
            assert!(err.contains("is not a dead-letter entry id"), "{err}");
        }
    }
}
