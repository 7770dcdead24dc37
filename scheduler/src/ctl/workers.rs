//! `spoolctl workers`: the worker processes in the registry.

use serde::Serialize;
use spool_broker::{QueueName, RedisBroker, TaskId, Timestamp, WorkerRecord, WorkerState};

use super::{Report, age};
use crate::error::Result;
use crate::table::{Align, Table};

/// One worker process, as `spoolctl workers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRow {
    /// Its consumer name in the broker.
    pub id: String,
    /// The worker's name (`--name`).
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it fetches from.
    pub queues: Vec<QueueName>,
    /// The task names it serves (empty for workers that do not say).
    pub tasks: Vec<String>,
    /// Slots running a task now.
    pub busy: u32,
    /// Slots in all.
    pub slots: u32,
    /// How many tasks it runs now.
    pub running: usize,
    /// The ids of the tasks it runs now.
    pub running_tasks: Vec<TaskId>,
    /// Deliveries that reached an outcome.
    pub processed: u64,
    /// Deliveries that failed for good or were dead-lettered.
    pub failed: u64,
    /// Where it is in its life.
    pub state: WorkerState,
    /// When the process started; RFC 3339 in JSON.
    #[serde(with = "spool_broker::rfc3339")]
    pub started_at: Timestamp,
    /// Whole seconds since it started.
    pub age_seconds: u64,
    /// When it last wrote its record; RFC 3339 in JSON.
    #[serde(with = "spool_broker::rfc3339")]
    pub last_seen: Timestamp,
}

impl WorkerRow {
    /// The row for `record`, `now` being the current time.
    #[must_use]
    pub fn new(record: WorkerRecord, now: Timestamp) -> Self {
        Self {
            age_seconds: now.saturating_since(record.started_at).as_secs(),
            running: record.running.len(),
            running_tasks: record.running,
            id: record.id,
            name: record.name,
            host: record.host,
            pid: record.pid,
            queues: record.queues,
            tasks: record.tasks,
            busy: record.busy,
            slots: record.slots,
            processed: record.processed,
            failed: record.failed,
            state: record.state,
            started_at: record.started_at,
            last_seen: record.last_seen,
        }
    }
}

/// The registry's workers by host then pid; JSON: an array of
/// [`WorkerRow`]s.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct WorkersReport {
    /// One row per worker process.
    pub rows: Vec<WorkerRow>,
    /// When the registry was read, for the ages.
    #[serde(skip)]
    pub now: Timestamp,
}

impl Report for WorkersReport {
    fn to_text(&self) -> String {
        if self.rows.is_empty() {
            return "no workers in the registry\n".to_owned();
        }
        let mut table = Table::new([
            ("HOST", Align::Left),
            ("PID", Align::Right),
            ("QUEUES", Align::Left),
            ("BUSY", Align::Right),
            ("RUNNING", Align::Right),
            ("PROCESSED", Align::Right),
            ("FAILED", Align::Right),
            ("AGE", Align::Right),
            ("STATE", Align::Left),
        ]);
        for r in &self.rows {
            let queues: Vec<&str> = r.queues.iter().map(QueueName::as_str).collect();
            table.row([
                r.host.clone(),
                r.pid.to_string(),
                queues.join(","),
                format!("{}/{}", r.busy, r.slots),
                r.running.to_string(),
                r.processed.to_string(),
                r.failed.to_string(),
                age(
                    self.now,
                    Timestamp::from_millis(
                        self.now
                            .as_millis()
                            .saturating_sub(r.age_seconds.saturating_mul(1000)),
                    ),
                ),
                r.state.as_str().to_owned(),
            ]);
        }
        table.to_string()
    }
}

/// The report for these registry records, sorted by host then pid.
#[must_use]
pub fn workers_report(records: Vec<WorkerRecord>, now: Timestamp) -> WorkersReport {
    let mut rows: Vec<WorkerRow> = records
        .into_iter()
        .map(|r| WorkerRow::new(r, now))
        .collect();
    rows.sort_by(|a, b| (&a.host, a.pid, &a.id).cmp(&(&b.host, b.pid, &b.id)));
    WorkersReport { rows, now }
}

/// Reads the worker registry of `broker`.
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when Redis fails.
pub async fn workers(broker: &RedisBroker) -> Result<WorkersReport> {
    let records = broker.workers().await?;
    Ok(workers_report(records, Timestamp::now()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::ctl::{Format, render};

    fn sample() -> (Vec<WorkerRecord>, Timestamp) {
        let now = Timestamp::now();
        let mut gpu = WorkerRecord::new("gpu-7-ab", "gpu", "node-b", 7);
        gpu.queues = vec![QueueName::GPU];
        gpu.tasks = vec!["video.transcode".into()];
        gpu.slots = 2;
        gpu.busy = 1;
        gpu.running = vec![TaskId::new()];
        gpu.processed = 10;
        gpu.failed = 1;
        gpu.started_at = Timestamp::from_millis(now.as_millis() - 3_723_400);
        let mut cpu = WorkerRecord::new("cpu-3-cd", "cpu", "node-a", 3);
        cpu.queues = vec![QueueName::DEFAULT, QueueName::ANALYSIS];
        cpu.slots = 8;
        cpu.state = WorkerState::Stopped;
        cpu.started_at = now.saturating_add(Duration::ZERO);
        cpu.started_at = Timestamp::from_millis(now.as_millis() - 59_900);
        (vec![gpu, cpu], now)
    }

    #[test]
    fn the_table_sorts_by_host_and_rounds_ages_to_seconds() {
        let (records, now) = sample();
        let report = workers_report(records, now);
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "HOST    PID  QUEUES            BUSY  RUNNING  PROCESSED  FAILED       AGE  STATE\n\
             node-a    3  default,analysis   0/8        0          0       0       59s  stopped\n\
             node-b    7  gpu                1/2        1         10       1  1h 2m 3s  running\n"
        );
    }

    #[test]
    fn json_is_an_array_of_rows() {
        let (records, now) = sample();
        let started = records[0].started_at;
        let records_running = records[0].running[0];
        let report = workers_report(records, now);
        let json = serde_json::to_value(&report).unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        let gpu = &rows[1];
        assert_eq!(
            (&gpu["host"], &gpu["pid"], &gpu["queues"]),
            (&json!("node-b"), &json!(7), &json!(["gpu"]))
        );
        assert_eq!((&gpu["busy"], &gpu["slots"]), (&json!(1), &json!(2)));
        assert_eq!(
            (&gpu["running"], &gpu["age_seconds"]),
            (&json!(1), &json!(3723))
        );
        assert_eq!(gpu["state"], "running");
        assert_eq!(gpu["tasks"], json!(["video.transcode"]));
        assert_eq!(gpu["running_tasks"], json!([records_running.to_string()]));
        assert_eq!(gpu["started_at"], started.to_string());
        assert_eq!(rows[0]["state"], "stopped");
    }

    #[test]
    fn an_empty_registry_says_so() {
        let report = workers_report(Vec::new(), Timestamp::now());
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            "no workers in the registry\n"
        );
        assert_eq!(render(&report, Format::Json).unwrap(), "[]\n");
    }
}
