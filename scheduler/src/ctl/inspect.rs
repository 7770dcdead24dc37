//! `spoolctl inspect registered`: the task names the live workers serve,
//! and the check `spoolctl call` makes against them.

use std::collections::BTreeMap;

use serde::Serialize;
use spool_broker::{QueueName, RedisBroker, WorkerRecord};

use super::{Report, plural};
use crate::error::{Error, Result};
use crate::table::{Align, Table};

/// One task name and the live workers that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredRow {
    /// The task's wire name, such as `spool.ping`.
    pub task: String,
    /// The ids of the live workers with a handler for it, sorted.
    pub workers: Vec<String>,
    /// The queues those workers fetch from, sorted, each once.
    pub queues: Vec<QueueName>,
}

/// The task names the live workers serve, by name; JSON: an array of
/// [`RegisteredRow`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RegisteredReport {
    /// One row per task name, sorted by name.
    pub rows: Vec<RegisteredRow>,
    /// How many live workers there are in all.
    #[serde(skip)]
    pub live_workers: usize,
    /// The ids of live workers whose records name no task (workers older
    /// than the records' `tasks` field): what they serve is unknown.
    #[serde(skip)]
    pub unreported: Vec<String>,
}

impl RegisteredReport {
    /// The task names, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.task.as_str()).collect()
    }

    /// Whether some live worker serves `name`.
    #[must_use]
    pub fn serves(&self, name: &str) -> bool {
        self.rows.iter().any(|r| r.task == name)
    }

    /// Checks that a task called `name` would be run by a live worker:
    /// `spoolctl call`'s check, which `--force` skips. When some live
    /// worker does not report its tasks, the name cannot be refused.
    ///
    /// # Errors
    ///
    /// [`Error::NoLiveWorker`] when no live worker is registered,
    /// [`Error::UnregisteredTask`] (listing the names served) when none of
    /// them serves `name`.
    pub fn check_callable(&self, name: &str) -> Result<()> {
        if self.live_workers == 0 {
            return Err(Error::NoLiveWorker {
                name: name.to_owned(),
            });
        }
        if self.serves(name) || !self.unreported.is_empty() {
            return Ok(());
        }
        Err(Error::UnregisteredTask {
            name: name.to_owned(),
            registered: self.names().join(", "),
        })
    }
}

impl Report for RegisteredReport {
    fn to_text(&self) -> String {
        if self.live_workers == 0 {
            return "no live worker is registered\n".to_owned();
        }
        let mut out = String::new();
        if !self.rows.is_empty() {
            let mut table = Table::new([
                ("TASK", Align::Left),
                ("WORKERS", Align::Right),
                ("QUEUES", Align::Left),
            ]);
            for r in &self.rows {
                let queues: Vec<&str> = r.queues.iter().map(QueueName::as_str).collect();
                table.row([
                    r.task.clone(),
                    r.workers.len().to_string(),
                    queues.join(","),
                ]);
            }
            out = table.to_string();
        }
        if !self.unreported.is_empty() {
            out.push_str(&format!(
                "{} of {} report no task names (older workers): `call` refuses no name while they run\n",
                self.unreported.len(),
                plural(self.live_workers as u64, "live worker"),
            ));
        }
        out
    }
}

/// The report for these registry records: only live workers count
/// ([`WorkerRecord::is_live`]).
#[must_use]
pub fn registered_report(records: &[WorkerRecord]) -> RegisteredReport {
    let mut by_task: BTreeMap<&str, (Vec<String>, Vec<QueueName>)> = BTreeMap::new();
    let mut live_workers = 0;
    let mut unreported = Vec::new();
    for record in records.iter().filter(|r| r.is_live()) {
        live_workers += 1;
        if record.tasks.is_empty() {
            unreported.push(record.id.clone());
        }
        for task in &record.tasks {
            let (workers, queues) = by_task.entry(task).or_default();
            workers.push(record.id.clone());
            queues.extend(record.queues.iter().cloned());
        }
    }
    unreported.sort();
    let rows = by_task
        .into_iter()
        .map(|(task, (mut workers, mut queues))| {
            workers.sort();
            workers.dedup();
            queues.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            queues.dedup();
            RegisteredRow {
                task: task.to_owned(),
                workers,
                queues,
            }
        })
        .collect();
    RegisteredReport {
        rows,
        live_workers,
        unreported,
    }
}

/// Reads the worker registry of `broker` for the task names its live
/// workers serve.
///
/// # Errors
///
/// [`Error::Broker`] when Redis fails.
pub async fn registered(broker: &RedisBroker) -> Result<RegisteredReport> {
    Ok(registered_report(&broker.workers().await?))
}

#[cfg(test)]
mod tests {
    use spool_broker::WorkerState;

    use super::*;
    use crate::ctl::{Format, render};

    fn record(id: &str, queues: &[QueueName], tasks: &[&str]) -> WorkerRecord {
        let mut r = WorkerRecord::new(id, "w", "host", 1);
        r.queues = queues.to_vec();
        r.tasks = tasks.iter().map(|t| (*t).to_owned()).collect();
        r
    }

    #[test]
    fn names_are_merged_across_live_workers() {
        let mut stopped = record("c-3", &[QueueName::DEFAULT], &["old.task"]);
        stopped.state = WorkerState::Stopped;
        let records = [
            record("b-2", &[QueueName::GPU], &["spool.ping", "video.transcode"]),
            record("a-1", &[QueueName::DEFAULT], &["spool.ping"]),
            stopped,
        ];
        let report = registered_report(&records);
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "TASK             WORKERS  QUEUES\n\
             spool.ping             2  default,gpu\n\
             video.transcode        1  gpu\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json[0]["task"], "spool.ping");
        assert_eq!(json[0]["workers"], serde_json::json!(["a-1", "b-2"]));
        assert_eq!(json[1]["queues"], serde_json::json!(["gpu"]));
        assert_eq!(json.as_array().unwrap().len(), 2);

        report.check_callable("video.transcode").unwrap();
        let err = report.check_callable("old.task").unwrap_err().to_string();
        assert!(
            err.contains("old.task") && err.contains("spool.ping, video.transcode"),
            "{err}"
        );
        assert!(err.contains("--force"), "{err}");
    }

    #[test]
    fn no_live_worker_refuses_every_name() {
        let report = registered_report(&[]);
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "no live worker is registered\n"
        );
        assert_eq!(render(&report, Format::Json).unwrap(), "[]\n");
        let err = report.check_callable("spool.ping").unwrap_err().to_string();
        assert!(
            err.contains("no live worker") && err.contains("--force"),
            "{err}"
        );
    }

    #[test]
    fn a_worker_that_does_not_report_lets_every_name_through() {
        let records = [
            record("a-1", &[QueueName::DEFAULT], &["spool.ping"]),
            record("old-2", &[QueueName::DEFAULT], &[]),
        ];
        let report = registered_report(&records);
        report.check_callable("custom.task").unwrap();
        assert!(
            render(&report, Format::Text)
                .unwrap()
                .ends_with("1 of 2 live workers report no task names (older workers): `call` refuses no name while they run\n")
        );
    }
}
