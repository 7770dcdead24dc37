//! `spoolctl dead list`: the dead letters of a queue.

use std::fmt::Write as _;

use serde::Serialize;
use spool_broker::{Broker, DeadLetterEntry, QueueName, TaskId, Timestamp};

use super::{Report, plural};
use crate::error::Result;
use crate::table::{Align, Table, truncate};

/// How many dead letters `dead list` shows unless told otherwise.
pub const DEFAULT_DEAD_LIMIT: usize = 20;

/// The most characters of an error the table shows; JSON has it whole.
pub const ERROR_WIDTH: usize = 60;

/// The most characters of the arguments the table shows; JSON has them
/// whole (secret fields redacted either way).
pub const ARGS_WIDTH: usize = 40;

/// What the table shows for a task whose bytes are not an envelope.
const UNDECODABLE: &str = "(undecodable)";

/// One dead letter, as `spoolctl dead list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadRow {
    /// The dead-letter entry's own id.
    pub entry_id: String,
    /// The queue it died in.
    pub queue: QueueName,
    /// The task's id, when its bytes decode as an envelope.
    pub task_id: Option<TaskId>,
    /// The task's name, when its bytes decode as an envelope.
    pub name: Option<String>,
    /// The task's arguments as JSON, secret fields redacted
    /// ([`spool_broker::Envelope::args_json`]); null when they do not
    /// decode.
    pub args: Option<serde_json::Value>,
    /// The reason code, such as `attempts_exhausted`.
    pub reason: String,
    /// The error in words, whole.
    pub error: String,
    /// How many runs were made.
    pub attempts: u32,
    /// When it was dead-lettered; RFC 3339 in JSON.
    #[serde(with = "spool_broker::rfc3339")]
    pub dead_at: Timestamp,
}

impl From<DeadLetterEntry> for DeadRow {
    fn from(entry: DeadLetterEntry) -> Self {
        let args = entry.envelope.as_ref().and_then(|e| e.args_json().ok());
        let (task_id, name) = entry
            .envelope
            .map_or((None, None), |e| (Some(e.id), Some(e.name)));
        Self {
            entry_id: entry.entry_id,
            queue: entry.queue,
            task_id,
            name,
            args,
            reason: entry.reason,
            error: entry.error,
            attempts: entry.attempts,
            dead_at: entry.dead_at,
        }
    }
}

/// A queue's dead letters, oldest first; JSON: an array of [`DeadRow`]s.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct DeadReport {
    /// The queue listed.
    #[serde(skip)]
    pub queue: QueueName,
    /// How many dead letters the queue holds, listed or not.
    #[serde(skip)]
    pub total: u64,
    /// The dead letters listed.
    pub rows: Vec<DeadRow>,
}

impl Report for DeadReport {
    fn to_text(&self) -> String {
        if self.rows.is_empty() {
            return format!("no dead letters in queue {}\n", self.queue);
        }
        let mut table = Table::new([
            ("ENTRY ID", Align::Left),
            ("NAME", Align::Left),
            ("TASK ID", Align::Left),
            ("REASON", Align::Left),
            ("ATTEMPTS", Align::Right),
            ("DEAD AT", Align::Left),
            ("ARGS", Align::Left),
            ("ERROR", Align::Left),
        ]);
        for r in &self.rows {
            table.row([
                r.entry_id.clone(),
                r.name.clone().unwrap_or_else(|| UNDECODABLE.to_owned()),
                r.task_id
                    .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                r.reason.clone(),
                r.attempts.to_string(),
                r.dead_at.to_string(),
                r.args.as_ref().map_or_else(
                    || "-".to_owned(),
                    |args| truncate(&args.to_string(), ARGS_WIDTH),
                ),
                truncate(&r.error, ERROR_WIDTH),
            ]);
        }
        let mut text = table.to_string();
        let shown = u64::try_from(self.rows.len()).unwrap_or(u64::MAX);
        if self.total > shown {
            let total = plural(self.total, "dead letter");
            let _ = writeln!(
                text,
                "({shown} of {total} shown; raise --limit to see more)"
            );
        }
        text
    }
}

/// Lists up to `limit` dead letters of `queue`, oldest first.
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when the broker fails.
pub async fn dead_list(
    broker: &impl Broker,
    queue: &QueueName,
    limit: usize,
) -> Result<DeadReport> {
    let entries = broker.dead_letters(queue, limit).await?;
    let total = broker.stats(queue).await?.dead;
    let rows: Vec<DeadRow> = entries.into_iter().map(DeadRow::from).collect();
    Ok(DeadReport {
        queue: queue.clone(),
        total: total.max(u64::try_from(rows.len()).unwrap_or(u64::MAX)),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use spool_broker::{DeadLetter, DeadReason, Envelope, MemoryBroker, Priority};

    use super::*;
    use crate::ctl::{Format, render};

    const Q: QueueName = QueueName::DEFAULT;

    /// A broker whose default queue holds two dead letters: a task that
    /// failed with a long two-line error, then bytes that are no envelope.
    async fn two_dead() -> (MemoryBroker, Envelope, String) {
        let broker = MemoryBroker::new();
        let envelope = Envelope::new("video.transcode", Q, vec![]);
        broker
            .enqueue(std::slice::from_ref(&envelope))
            .await
            .unwrap();
        let error = format!("ffmpeg exited with 1:\n{}", "x".repeat(80));
        let batch = broker.fetch(&Q, "w", 1, Duration::ZERO).await.unwrap();
        let letter = DeadLetter {
            reason: DeadReason::AttemptsExhausted,
            error: error.clone(),
            attempts: 3,
        };
        broker
            .dead_letter(&batch.deliveries[0].tag, &letter)
            .await
            .unwrap();

        broker.push_raw(&Q, Priority::Normal, b"garbage".to_vec());
        let batch = broker.fetch(&Q, "w", 1, Duration::ZERO).await.unwrap();
        let letter = DeadLetter {
            reason: batch.malformed[0].reason,
            error: batch.malformed[0].error.clone(),
            attempts: 0,
        };
        broker
            .dead_letter(&batch.malformed[0].tag, &letter)
            .await
            .unwrap();
        (broker, envelope, error)
    }

    #[tokio::test]
    async fn the_table_shows_names_ids_and_cut_errors() {
        let (broker, envelope, _) = two_dead().await;
        let report = dead_list(&broker, &Q, DEFAULT_DEAD_LIMIT).await.unwrap();
        let text = render(&report, Format::Text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let header = lines[0];
        assert!(header.starts_with("ENTRY ID"), "{text}");
        let column = |name: &str| header.find(name).unwrap();

        let transcode = lines[1];
        let name_at = column("NAME");
        assert!(
            transcode[name_at..].starts_with("video.transcode  "),
            "{text}"
        );
        assert!(transcode.contains(&envelope.id.to_string()), "{text}");
        assert!(transcode.contains("attempts_exhausted"), "{text}");
        let error = &transcode[column("ERROR")..];
        assert!(error.starts_with("ffmpeg exited with 1: xxx"), "{text}");
        assert!(error.ends_with('…'), "{text}");
        assert_eq!(error.chars().count(), ERROR_WIDTH, "{text}");
        let dead_at = &transcode[column("DEAD AT")..column("ARGS")];
        assert_eq!(dead_at.trim_end(), report.rows[0].dead_at.to_string());
        assert!(dead_at.ends_with("Z  "), "RFC 3339 in UTC: {dead_at}");

        let garbage = lines[2];
        assert!(garbage[name_at..].starts_with("(undecodable)  "), "{text}");
        assert!(garbage.contains("malformed"), "{text}");
    }

    #[tokio::test]
    async fn json_has_every_field_and_the_whole_error() {
        let (broker, envelope, error) = two_dead().await;
        let report = dead_list(&broker, &Q, DEFAULT_DEAD_LIMIT).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        let first = &report.rows[0];
        assert_eq!(
            rows[0],
            json!({
                "entry_id": first.entry_id, "queue": "default",
                "task_id": envelope.id.to_string(), "name": "video.transcode",
                "reason": "attempts_exhausted", "error": error, "attempts": 3, "args": null,
                "dead_at": first.dead_at.to_string(),
            })
        );
        assert!(rows[1]["name"].is_null() && rows[1]["task_id"].is_null());
        assert_eq!(rows[1]["reason"], "malformed");
    }

    #[tokio::test]
    async fn the_limit_applies_and_the_table_says_what_is_hidden() {
        let (broker, _, _) = two_dead().await;
        let report = dead_list(&broker, &Q, 1).await.unwrap();
        assert_eq!((report.rows.len(), report.total), (1, 2));
        let text = render(&report, Format::Text).unwrap();
        assert!(
            text.ends_with("(1 of 2 dead letters shown; raise --limit to see more)\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_empty_queue_says_so() {
        let report = dead_list(&MemoryBroker::new(), &QueueName::GPU, 5)
            .await
            .unwrap();
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "no dead letters in queue gpu\n"
        );
        assert_eq!(render(&report, Format::Json).unwrap(), "[]\n");
    }
}
