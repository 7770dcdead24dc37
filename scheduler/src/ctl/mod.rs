//! The `spoolctl` commands, one function each, generic over the broker.
//!
//! Each command returns a report: a value that serializes to the command's
//! `--json` shape and renders as text for people ([`Report::to_text`]).
//! [`render`] picks one of the two.
//!
//! ```
//! use spool_broker::{Broker, MemoryBroker, QueueName};
//! use spool_scheduler::ctl::{self, CallRequest, Format};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> spool_scheduler::Result<()> {
//! let broker = MemoryBroker::new();
//! let ids = ctl::call(&broker, &CallRequest::new("spool.ping")).await?;
//! assert_eq!(ids.ids.len(), 1);
//! let report = ctl::queues(&broker, &[], std::time::Duration::ZERO).await?;
//! assert!(ctl::render(&report, Format::Text)?.starts_with("QUEUE"));
//! # Ok(())
//! # }
//! ```

mod call;
mod dead;
mod dead_purge;
mod dead_retry;
mod dead_show;
mod follow;
mod ingest;
mod inspect;
mod pause;
mod purge;
mod queues;
mod revoke;
mod store;
mod task;
mod tasks;
mod top;
mod workers;
mod workflow;
mod workflow_graph;

use std::time::Duration;

use serde::Serialize;
use spool_broker::Timestamp;
use spool_broker::store::JobRecord;

pub use self::call::{
    CallReport, CallRequest, DEFAULT_MAX_ATTEMPTS, MAX_CALL_COUNT, call, call_recorded, read_args,
    read_args_from, record_enqueued,
};
pub use self::dead::{ARGS_WIDTH, DEFAULT_DEAD_LIMIT, DeadReport, DeadRow, ERROR_WIDTH, dead_list};
pub use self::dead_purge::{DeadPurgeReport, check_dead_purge_confirmed, dead_purge};
pub use self::dead_retry::{DeadRetryReport, check_entry_ids, dead_retry, dead_retry_recorded};
pub use self::dead_show::{DeadShowReport, MAX_DEAD_SCAN, dead_show};
pub use self::follow::{
    DEFAULT_FOLLOW_POLL, FollowOutcome, MAX_FOLLOWED, task_follow, tasks_follow,
};
pub use self::ingest::{IngestReport, IngestRequest, ingest};
pub use self::inspect::{RegisteredReport, RegisteredRow, registered, registered_report};
pub use self::pause::{PauseReport, pause, resume};
pub use self::purge::{PurgeReport, check_purge_confirmed, purge};
pub use self::queues::{
    DEFAULT_SAMPLE, QueueRow, QueuesReport, QueuesSample, humantime_rounded, queues,
    queues_to_show, queues_with_paused, seconds,
};
pub use self::revoke::{DEFAULT_REVOKE_TTL, RevokeReport, RevokeRequest, revoke};
pub use self::store::{StoreMigrateReport, store_migrate};
pub use self::task::{TaskReport, task_show};
pub use self::tasks::{DEFAULT_TASKS_LIMIT, TasksFilter, TasksReport, tasks};
pub use self::top::{
    DEFAULT_TOP_INTERVAL, DEFAULT_TOP_WIDTH, FailureRow, Focus, KEYS_HELP, MAX_FAILURES,
    MAX_RUNNING, RATE_HISTORY, RateHistory, RunningTask, Top, TopFrame, View, draw, frame_height,
    render_frame, render_text, run_interactive,
};
pub use self::workers::{WorkerRow, WorkersReport, workers, workers_report};
pub use self::workflow::{
    DEFAULT_WORKFLOWS_LIMIT, MAX_WORKFLOWS_LIMIT, NodeView, ParentJson, ProgressJson,
    WorkflowActionReport, WorkflowReport, WorkflowRow, WorkflowsReport, check_limit,
    workflow_cancel, workflow_list, workflow_retry, workflow_show,
};
use crate::error::{Error, Result};

/// The result of a command, printable for people or for scripts.
pub trait Report: Serialize {
    /// The human rendering, ending with a newline.
    fn to_text(&self) -> String;
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Tables and sentences for people.
    #[default]
    Text,
    /// Pretty-printed JSON for scripts.
    Json,
}

/// Renders a report in `format`, ending with a newline.
///
/// # Errors
///
/// [`Error::Output`] when the report cannot be encoded as JSON, which only
/// a broken `Serialize` implementation can cause.
pub fn render<R: Report + ?Sized>(report: &R, format: Format) -> Result<String> {
    match format {
        Format::Text => Ok(report.to_text()),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(report).map_err(Error::Output)?;
            json.push('\n');
            Ok(json)
        }
    }
}

/// The value of `--store-url` that means "no job store", as every binary
/// spells it.
pub use spool_cli_common::NO_STORE;

/// The job store URL to connect to, or [`Error::NoStore`] when `url` is
/// empty or [`NO_STORE`].
///
/// # Errors
///
/// [`Error::NoStore`] when no store is configured.
pub fn require_store(url: &str) -> Result<&str> {
    let url = url.trim();
    if url.is_empty() || url.eq_ignore_ascii_case(NO_STORE) {
        Err(Error::NoStore)
    } else {
        Ok(url)
    }
}

/// A record as JSON: [`JobRecord::to_json`], with every key the CLI
/// promises present (null when unknown).
#[must_use]
pub fn record_json(record: &JobRecord) -> serde_json::Value {
    let mut json = record.to_json();
    if let serde_json::Value::Object(map) = &mut json {
        for key in [
            "id", "name", "queue", "status", "attempts", "worker", "progress", "result", "error",
            "args",
        ] {
            map.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    json
}

/// How long from `since` to `now`, whole seconds, in humantime (`1h 2m 3s`).
fn age(now: Timestamp, since: Timestamp) -> String {
    let secs = now.saturating_since(since).as_secs();
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// `count` followed by `noun`, plural unless the count is one.
fn plural(count: u64, noun: &str) -> String {
    let s = if count == 1 { "" } else { "s" };
    format!("{count} {noun}{s}")
}
