//! `spoolctl dead show`: one dead letter in full.

use std::fmt::Write as _;

use serde::Serialize;
use spool_broker::{Broker, DeadLetterEntry, Priority, QueueName, Timestamp};

use super::Report;
use super::dead::DeadRow;
use crate::error::{Error, Result};

/// The most dead letters `dead show` reads from a queue looking for one.
pub const MAX_DEAD_SCAN: usize = 100_000;

/// One dead letter in full: everything `dead list` shows, the error and
/// the arguments whole (secret fields redacted), and what the envelope
/// says of the task. JSON: this object, times RFC 3339 (ms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadShowReport {
    /// The dead letter as `dead list` shows it.
    #[serde(flatten)]
    pub row: DeadRow,
    /// The task's priority, when its bytes decode as an envelope.
    pub priority: Option<Priority>,
    /// The tenant it was accounted to.
    pub tenant: Option<String>,
    /// How many runs it was allowed.
    pub max_attempts: Option<u32>,
    /// When the producer created it.
    #[serde(with = "spool_broker::rfc3339::option")]
    pub created_at: Option<Timestamp>,
    /// When it was due to run, if it was scheduled.
    #[serde(with = "spool_broker::rfc3339::option")]
    pub eta: Option<Timestamp>,
    /// When it would have expired.
    #[serde(with = "spool_broker::rfc3339::option")]
    pub expires_at: Option<Timestamp>,
    /// The size of the original bytes kept with the dead letter.
    pub raw_bytes: usize,
}

impl From<DeadLetterEntry> for DeadShowReport {
    fn from(entry: DeadLetterEntry) -> Self {
        let envelope = entry.envelope.clone();
        let raw_bytes = entry.raw.len();
        Self {
            row: DeadRow::from(entry),
            priority: envelope.as_ref().map(|e| e.priority),
            tenant: envelope.as_ref().and_then(|e| e.tenant.clone()),
            max_attempts: envelope.as_ref().map(|e| e.max_attempts),
            created_at: envelope.as_ref().map(|e| e.created_at),
            eta: envelope.as_ref().and_then(|e| e.eta),
            expires_at: envelope.as_ref().and_then(|e| e.expires_at),
            raw_bytes,
        }
    }
}

impl Report for DeadShowReport {
    fn to_text(&self) -> String {
        let r = &self.row;
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let mut text = String::new();
        let mut line = |key: &str, value: String| {
            let _ = writeln!(text, "{key:<13}{value}");
        };
        line("entry id:", r.entry_id.clone());
        line("queue:", r.queue.to_string());
        line(
            "task:",
            r.name.clone().unwrap_or_else(|| "(undecodable)".to_owned()),
        );
        line("task id:", or_dash(r.task_id.map(|id| id.to_string())));
        line("reason:", r.reason.clone());
        line(
            "attempts:",
            match self.max_attempts {
                Some(max) => format!("{} of {max}", r.attempts),
                None => r.attempts.to_string(),
            },
        );
        line("priority:", or_dash(self.priority.map(|p| p.to_string())));
        line("tenant:", or_dash(self.tenant.clone()));
        line("created:", or_dash(self.created_at.map(|t| t.to_string())));
        line("eta:", or_dash(self.eta.map(|t| t.to_string())));
        line("expires:", or_dash(self.expires_at.map(|t| t.to_string())));
        line("dead at:", r.dead_at.to_string());
        line("raw bytes:", self.raw_bytes.to_string());
        line(
            "args:",
            r.args
                .as_ref()
                .and_then(|args| serde_json::to_string_pretty(args).ok())
                .map_or_else(
                    || "-".to_owned(),
                    |json| json.replace('\n', "\n             "),
                ),
        );
        line("error:", r.error.replace('\n', "\n             "));
        text
    }
}

/// The dead letter of `queue` whose entry id or task id is `id`, in full.
///
/// # Errors
///
/// [`Error::DeadLetterNotFound`] when the queue's first [`MAX_DEAD_SCAN`]
/// dead letters hold none with that id; [`Error::Broker`] when the broker
/// fails.
pub async fn dead_show(
    broker: &impl Broker,
    queue: &QueueName,
    id: &str,
) -> Result<DeadShowReport> {
    let entries = broker.dead_letters(queue, MAX_DEAD_SCAN).await?;
    entries
        .into_iter()
        .find(|entry| {
            entry.entry_id == id
                || entry
                    .envelope
                    .as_ref()
                    .is_some_and(|e| e.id.to_string() == id)
        })
        .map(DeadShowReport::from)
        .ok_or_else(|| Error::DeadLetterNotFound {
            queue: queue.clone(),
            id: id.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use spool_broker::{DeadLetter, DeadReason, Envelope, MemoryBroker, encode_payload};

    use super::*;
    use crate::ctl::{Format, render};

    const Q: QueueName = QueueName::DEFAULT;

    #[tokio::test]
    async fn shows_one_dead_letter_whole_with_secrets_redacted() {
        let broker = MemoryBroker::new();
        let payload =
            encode_payload(&json!({"input": "s3://in/a.mp4", "token": "hunter2"})).unwrap();
        let mut envelope = Envelope::new("video.transcode", Q, payload);
        envelope.mark_secret(&["token"]);
        envelope.tenant = Some("acme".into());
        broker
            .enqueue(std::slice::from_ref(&envelope))
            .await
            .unwrap();
        let batch = broker.fetch(&Q, "w", 1, Duration::ZERO).await.unwrap();
        let error = "ffmpeg exited with 1:\nno such file";
        let letter = DeadLetter {
            reason: DeadReason::AttemptsExhausted,
            error: error.into(),
            attempts: 3,
        };
        broker
            .dead_letter(&batch.deliveries[0].tag, &letter)
            .await
            .unwrap();
        let listed = crate::ctl::dead_list(&broker, &Q, 10).await.unwrap();
        let entry_id = listed.rows[0].entry_id.clone();

        // By entry id and by task id alike.
        let by_entry = dead_show(&broker, &Q, &entry_id).await.unwrap();
        let by_task = dead_show(&broker, &Q, &envelope.id.to_string())
            .await
            .unwrap();
        assert_eq!(by_entry, by_task);

        let json: serde_json::Value =
            serde_json::from_str(&render(&by_entry, Format::Json).unwrap()).unwrap();
        assert_eq!(
            json["args"],
            json!({"input": "s3://in/a.mp4", "token": "***"})
        );
        assert_eq!(json["error"], error, "whole");
        assert_eq!(json["attempts"], 3);
        assert_eq!(json["tenant"], "acme");
        assert_eq!(json["task_id"], envelope.id.to_string());
        for key in ["created_at", "dead_at"] {
            let text = json[key].as_str().unwrap();
            assert!(spool_broker::rfc3339::parse(text).is_ok(), "{key}: {text}");
        }
        assert!(json["eta"].is_null());

        let text = render(&by_entry, Format::Text).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("reason:      attempts_exhausted"), "{text}");
        assert!(text.contains("no such file"), "{text}");

        let missing = dead_show(&broker, &Q, "1-0").await.unwrap_err();
        assert!(
            matches!(missing, Error::DeadLetterNotFound { .. }),
            "{missing}"
        );
    }
}
