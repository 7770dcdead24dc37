//! `spoolctl task show ID --follow`: a task's state changes and progress,
//! live, until it ends.
//!
//! It subscribes to the task's events first, then reads its record, so
//! nothing that happens in between is missed: progress comes from the
//! events (FFmpeg's fps and speed included), state changes from the record,
//! read again on every event and at least every `poll` (a retry or a start
//! publishes no event). When the task ends, its final record is printed
//! from the store: the last progress is never left at what the last event
//! said.

use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use spool_broker::store::{JobRecord, JobStore};
use spool_broker::{Broker, JobStatus, Progress, TaskEvent, TaskId};

use super::{Report, record_json};
use crate::error::{Error, Result};

use super::task::TaskReport;

/// How often the record is read again between events.
pub const DEFAULT_FOLLOW_POLL: Duration = Duration::from_secs(1);

/// Follows task `id` until it ends, writing a line for each state change
/// and progress report to `out` (one JSON object a line with `json`), then
/// its final record. Returns how it ended.
///
/// # Errors
///
/// [`Error::UnknownTask`] when the store has no record of the task (it
/// was enqueued without a store, or was pruned); broker and store errors;
/// [`Error::Write`] when `out` refuses the output.
///
/// # Cancel safety
///
/// Cancelling it only stops following: nothing is changed.
pub async fn task_follow<B: Broker>(
    broker: &B,
    store: &JobStore,
    id: TaskId,
    poll: Duration,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<JobStatus> {
    let mut events = broker.task_events(id).await?;
    let mut last: Option<(JobStatus, u32)> = None;
    let mut poll_timer = tokio::time::interval(poll);
    loop {
        let record = store.get(id).await?.ok_or(Error::UnknownTask(id))?;
        if record.status.is_finished() {
            let report = TaskReport { record };
            let status = report.record.status;
            if json {
                let line = json!({ "event": "finished", "record": record_json(&report.record) });
                writeln!(out, "{line}")?;
            } else {
                write!(out, "{}", report.to_text())?;
            }
            out.flush()?;
            return Ok(status);
        }
        let now = (record.status, record.attempts);
        if last != Some(now) {
            last = Some(now);
            write_state(out, &record, json)?;
        }
        tokio::select! {
            event = events.next() => match event {
                Some(TaskEvent::Progress { progress, attempt, .. }) => {
                    write_progress(out, &progress, attempt, json)?;
                }
                // A finished event, or an unknown one: the record tells.
                Some(_) => {}
                // The subscription broke (Redis restarting): subscribe
                // again; the record read next covers what was missed.
                None => events = broker.task_events(id).await?,
            },
            _ = poll_timer.tick() => {}
        }
    }
}

fn write_state(out: &mut (dyn Write + Send), record: &JobRecord, json: bool) -> Result<()> {
    if json {
        let line = json!({
            "event": "state",
            "id": record.id.to_string(),
            "status": record.status.as_str(),
            "attempts": record.attempts,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "{} {} (attempt {})",
            record.name,
            record.status.as_str(),
            record.attempts
        )?;
    }
    out.flush()?;
    Ok(())
}

fn write_progress(
    out: &mut (dyn Write + Send),
    progress: &Progress,
    attempt: u32,
    json: bool,
) -> Result<()> {
    if json {
        let line = json!({ "event": "progress", "attempt": attempt, "progress": progress });
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "  {progress}")?;
    }
    out.flush()?;
    Ok(())
}
