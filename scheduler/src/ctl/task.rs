//! `spoolctl task show`: one task's record in the job store, and the
//! timeline of its attempts.

use std::fmt::Write as _;

use serde::{Serialize, Serializer};
use spool_broker::store::{JobEvent, JobRecord, JobStore};
use spool_broker::{TaskId, Timestamp};

use super::{Report, record_json};
use crate::error::{Error, Result};
use crate::table::{Align, Table, clean};

/// What the text shows for a value that is not known.
const NONE: &str = "-";

/// One task's record and timeline; JSON: [`record_json`] of the record,
/// with the timeline as `events` (each `{"attempt", "transition", "at",
/// "worker", "error"}`, times in RFC 3339).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    /// The record.
    pub record: JobRecord,
    /// Its transitions, oldest first ([`JobStore::events`]); empty for a
    /// record written before the store kept timelines.
    pub events: Vec<JobEvent>,
}

impl Serialize for TaskReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut json = record_json(&self.record);
        if let serde_json::Value::Object(map) = &mut json {
            let events = serde_json::to_value(&self.events).map_err(serde::ser::Error::custom)?;
            map.insert("events".into(), events);
        }
        json.serialize(serializer)
    }
}

/// The timeline as a table indented under the record: when, which
/// attempt, what happened, on which worker, and the error.
fn timeline_text(events: &[JobEvent]) -> String {
    let mut table = Table::new([
        ("TIME", Align::Left),
        ("ATTEMPT", Align::Right),
        ("EVENT", Align::Left),
        ("WORKER", Align::Left),
        ("ERROR", Align::Left),
    ]);
    for event in events {
        table.row([
            event.at.to_string(),
            event.attempt.to_string(),
            event.transition.as_str().to_owned(),
            event
                .worker
                .as_ref()
                .map_or_else(|| NONE.to_owned(), ToString::to_string),
            event.error.clone().unwrap_or_else(|| NONE.to_owned()),
        ]);
    }
    let mut text = String::from("timeline:\n");
    for line in table.to_string().lines() {
        let _ = writeln!(text, "  {line}");
    }
    text
}

impl Report for TaskReport {
    fn to_text(&self) -> String {
        let r = &self.record;
        let time = |t: Option<Timestamp>| t.map_or_else(|| NONE.to_owned(), |t| t.to_string());
        let progress = r.progress.as_ref().map_or_else(
            || NONE.to_owned(),
            |p| {
                let mut text = format!("{:.0}%", p.percent);
                if let Some(stage) = &p.stage {
                    let _ = write!(text, " {stage}");
                }
                if let Some(message) = &p.message {
                    let _ = write!(text, " ({message})");
                }
                text
            },
        );
        let result = match r.result_json() {
            Ok(Some(json)) => json.to_string(),
            Ok(None) => NONE.to_owned(),
            Err(_) => "(undecodable)".to_owned(),
        };
        let args = r
            .args
            .as_ref()
            .map_or_else(|| NONE.to_owned(), ToString::to_string);
        let fields = [
            ("id", r.id.to_string()),
            ("name", r.name.clone()),
            ("args", args),
            ("queue", r.queue.to_string()),
            ("priority", r.priority.as_str().to_owned()),
            (
                "tenant",
                r.tenant.clone().unwrap_or_else(|| NONE.to_owned()),
            ),
            ("status", r.status.as_str().to_owned()),
            ("attempts", r.attempts.to_string()),
            (
                "worker",
                r.worker
                    .as_ref()
                    .map_or_else(|| NONE.to_owned(), ToString::to_string),
            ),
            ("progress", progress),
            ("created", r.created_at.to_string()),
            ("started", time(r.started_at)),
            ("finished", time(r.finished_at)),
            ("result", result),
            ("error", r.error.clone().unwrap_or_else(|| NONE.to_owned())),
        ];
        let mut text = String::new();
        for (key, value) in fields {
            let _ = writeln!(text, "{:<10}{}", format!("{key}:"), clean(&value));
        }
        if !self.events.is_empty() {
            text.push_str(&timeline_text(&self.events));
        }
        text
    }
}

/// The record of task `id`, and its timeline.
///
/// # Errors
///
/// [`Error::UnknownTask`] when the store has no record of it,
/// [`Error::Broker`] when the store fails.
pub async fn task_show(store: &JobStore, id: TaskId) -> Result<TaskReport> {
    let record = store.get(id).await?.ok_or(Error::UnknownTask(id))?;
    let events = store.events(id).await?;
    Ok(TaskReport { record, events })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use serde_json::json;
    use spool_broker::store::{Finished, JobStatus, NewJob, Started, WorkerId};
    use spool_broker::{Envelope, Progress, QueueName, encode_payload};

    use super::*;
    use crate::ctl::{Format, render};

    /// The tasks of [`seeded_store`].
    pub(crate) struct Seeded {
        pub store: JobStore,
        /// video.transcode on default, succeeded at its second attempt.
        pub done: Envelope,
        /// thumbs.make on gpu for tenant acme, failed.
        pub failed: Envelope,
        /// video.probe on default, running at 40%.
        pub running: Envelope,
        /// video.transcode on default, queued, the oldest.
        pub queued: Envelope,
    }

    /// A memory store with four tasks created a minute apart, the queued
    /// one two hours ago, the others over the last three minutes.
    pub(crate) async fn seeded_store() -> Seeded {
        let store = JobStore::connect("sqlite::memory:").await.unwrap();
        let now = Timestamp::now();
        let ago = |secs: u64| Timestamp::from_millis(now.as_millis() - secs * 1000);
        let worker = WorkerId::new("gpu-1", 42);

        let mut queued = Envelope::new("video.transcode", QueueName::DEFAULT, vec![]);
        queued.created_at = ago(7200);
        store
            .record_enqueued(&[NewJob::from_envelope(&queued)])
            .await
            .unwrap();

        let mut done = Envelope::new("video.transcode", QueueName::DEFAULT, vec![]);
        done.created_at = ago(180);
        done.attempt = 2;
        let mut finished = Finished::from_envelope(&done, JobStatus::Succeeded, ago(60));
        finished.result = Some(encode_payload(&json!({"height": 1080})).unwrap());
        finished.started_at = Some(ago(120));
        finished.worker = Some(worker.clone());
        store.record_outcomes(&[finished]).await.unwrap();

        let mut failed = Envelope::new("thumbs.make", QueueName::GPU, vec![]);
        failed.created_at = ago(120);
        failed.attempt = 1;
        failed.tenant = Some("acme".into());
        let mut outcome = Finished::from_envelope(&failed, JobStatus::Failed, ago(30));
        outcome.error = Some("no such file:\nin.mp4".into());
        store.record_outcomes(&[outcome]).await.unwrap();

        let mut running = Envelope::new("video.probe", QueueName::DEFAULT, vec![]);
        running.created_at = ago(60);
        running.attempt = 1;
        store
            .record_started(&[Started::from_envelope(&running, &worker, ago(10))])
            .await
            .unwrap();
        let progress = Progress {
            stage: Some("probe".into()),
            ..Progress::percent(40.0)
        };
        store
            .record_progress(running.id, 1, &progress)
            .await
            .unwrap();
        // Timestamps are in milliseconds: let "now" move past them.
        tokio::time::sleep(Duration::from_millis(2)).await;
        Seeded {
            store,
            done,
            failed,
            running,
            queued,
        }
    }

    #[tokio::test]
    async fn the_text_lists_every_field() {
        let seeded = seeded_store().await;
        let report = task_show(&seeded.store, seeded.done.id).await.unwrap();
        let text = render(&report, Format::Text).unwrap();
        let line = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key}:")))
                .unwrap_or_else(|| panic!("no {key} in {text}"))[10..]
                .to_owned()
        };
        assert_eq!(line("id"), seeded.done.id.to_string());
        assert_eq!(line("name"), "video.transcode");
        assert_eq!(line("status"), "succeeded");
        assert_eq!(line("attempts"), "2");
        assert_eq!(line("worker"), "gpu-1:42");
        assert_eq!(line("progress"), "-");
        assert_eq!(line("created"), seeded.done.created_at.to_string());
        assert!(line("finished").ends_with('Z'), "{text}");
        assert_eq!(line("result"), r#"{"height":1080}"#);
        assert_eq!(line("error"), "-");
    }

    #[tokio::test]
    async fn progress_and_errors_are_shown_on_one_line() {
        let seeded = seeded_store().await;
        let running = task_show(&seeded.store, seeded.running.id).await.unwrap();
        let text = render(&running, Format::Text).unwrap();
        assert!(text.contains("progress: 40% probe\n"), "{text}");
        assert!(text.contains("started:  "), "{text}");
        let failed = task_show(&seeded.store, seeded.failed.id).await.unwrap();
        let text = render(&failed, Format::Text).unwrap();
        assert!(text.contains("error:    no such file: in.mp4\n"), "{text}");
        assert!(text.contains("tenant:   acme\n"), "{text}");
    }

    #[tokio::test]
    async fn json_is_the_record_with_its_result_decoded() {
        let seeded = seeded_store().await;
        let report = task_show(&seeded.store, seeded.done.id).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json["id"], seeded.done.id.to_string());
        assert_eq!(json["name"], "video.transcode");
        assert_eq!(json["queue"], "default");
        assert_eq!(json["status"], "succeeded");
        assert_eq!(json["attempts"], 2);
        assert_eq!(json["worker"], json!({"host": "gpu-1", "pid": 42}));
        assert_eq!(json["result"], json!({"height": 1080}));
        assert!(json["progress"].is_null() && json["error"].is_null());

        let running = task_show(&seeded.store, seeded.running.id).await.unwrap();
        let json = serde_json::to_value(&running).unwrap();
        assert_eq!(json["progress"]["stage"], "probe");
        assert!(json["result"].is_null());
    }

    #[tokio::test]
    async fn the_timeline_shows_each_attempt() {
        let store = JobStore::connect("sqlite::memory:").await.unwrap();
        let base = Timestamp::from_millis(1_750_000_000_000);
        let at = |ms: u64| Timestamp::from_millis(base.as_millis() + ms);
        let mut first = Envelope::new("video.transcode", QueueName::GPU, vec![]);
        first.created_at = base;
        store
            .record_enqueued(&[NewJob::from_envelope(&first)])
            .await
            .unwrap();
        store
            .record_started(&[Started::from_envelope(
                &first,
                &WorkerId::new("gpu-1", 42),
                at(1_000),
            )])
            .await
            .unwrap();
        let mut retry = Finished::from_envelope(&first, JobStatus::Retrying, at(2_000));
        retry.error = Some("encoder crashed:\nexit 1".into());
        store.record_outcomes(&[retry]).await.unwrap();
        let second = first.next_attempt(None);
        let mut done = Finished::from_envelope(&second, JobStatus::Succeeded, at(9_000));
        done.worker = Some(WorkerId::new("gpu-2", 7));
        store.record_outcomes(&[done]).await.unwrap();

        let report = task_show(&store, first.id).await.unwrap();
        let text = render(&report, Format::Text).unwrap();
        let timeline: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "timeline:")
            .skip(1)
            .collect();
        assert_eq!(
            timeline,
            [
                "  TIME                      ATTEMPT  EVENT      WORKER    ERROR",
                "  2025-06-15T15:06:40.000Z        1  queued     -         -",
                "  2025-06-15T15:06:41.000Z        1  running    gpu-1:42  -",
                "  2025-06-15T15:06:42.000Z        1  retrying   -         encoder crashed: exit 1",
                "  2025-06-15T15:06:49.000Z        2  succeeded  gpu-2:7   -",
            ],
            "{text}"
        );

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["status"], "succeeded");
        let events = json["events"].as_array().unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[1],
            json!({
                "attempt": 1,
                "transition": "running",
                "at": "2025-06-15T15:06:41.000Z",
                "worker": {"host": "gpu-1", "pid": 42},
                "error": null,
            })
        );
        assert_eq!(events[2]["error"], "encoder crashed:\nexit 1");
    }

    #[tokio::test]
    async fn an_unknown_id_is_an_error() {
        let seeded = seeded_store().await;
        let id = TaskId::new();
        let err = task_show(&seeded.store, id).await.unwrap_err();
        assert!(matches!(err, Error::UnknownTask(i) if i == id), "{err:?}");
        assert_eq!(err.to_string(), format!("no task {id} in the job store"));
    }
}
