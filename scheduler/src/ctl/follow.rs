//! `spoolctl task show ID --follow` and `spoolctl tasks --follow`: tasks'
//! state changes and progress, live, until they end.
//!
//! It subscribes to the task's events first, then reads its record, so
//! nothing that happens in between is missed: progress comes from the
//! events (FFmpeg's fps and speed included), state changes from the record,
//! read again on every event and at least every `poll` (a retry or a start
//! publishes no event). When the task ends, its final record is printed
//! from the store: the last progress is never left at what the last event
//! said.
//!
//! `tasks --follow` ([`tasks_follow`]) does the same for the tasks matching
//! a filter: it reads the matching records every `poll`, follows the events
//! of each unfinished one (new matches included, up to the filter's limit)
//! and prints each line led by the task's id.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::{self, AbortHandle, SelectAll, Stream};
use serde_json::json;
use spool_broker::store::{JobRecord, JobStore};
use spool_broker::{Broker, JobStatus, Progress, TaskEvent, TaskId, Timestamp};

use super::task::TaskReport;
use super::tasks::TasksFilter;
use super::{Report, record_json};
use crate::error::{Error, Result};
use crate::table::clean;

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
    let lines = Lines {
        json,
        with_id: false,
    };
    let mut events = broker.task_events(id).await?;
    let mut last: Option<(JobStatus, u32)> = None;
    let mut poll_timer = tokio::time::interval(poll);
    loop {
        let record = store.get(id).await?.ok_or(Error::UnknownTask(id))?;
        if record.status.is_finished() {
            let status = record.status;
            lines.finished(out, record)?;
            return Ok(status);
        }
        let now = (record.status, record.attempts);
        if last != Some(now) {
            last = Some(now);
            lines.state(out, &record)?;
        }
        tokio::select! {
            event = events.next() => match event {
                Some(TaskEvent::Progress { progress, attempt, .. }) => {
                    lines.progress(out, id, &progress, attempt)?;
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

/// How the followed tasks' lines are written.
#[derive(Debug, Clone, Copy)]
struct Lines {
    /// One JSON object a line.
    json: bool,
    /// Text lines led by the task's id (several tasks are followed).
    with_id: bool,
}

impl Lines {
    fn lead(self, id: TaskId) -> String {
        if self.with_id {
            format!("{id} ")
        } else {
            String::new()
        }
    }

    fn state(self, out: &mut (dyn Write + Send), record: &JobRecord) -> Result<()> {
        if self.json {
            let line = json!({
                "event": "state",
                "id": record.id.to_string(),
                "name": record.name,
                "status": record.status.as_str(),
                "attempts": record.attempts,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{}{} {} (attempt {})",
                self.lead(record.id),
                record.name,
                record.status.as_str(),
                record.attempts
            )?;
        }
        out.flush()?;
        Ok(())
    }

    fn progress(
        self,
        out: &mut (dyn Write + Send),
        id: TaskId,
        progress: &Progress,
        attempt: u32,
    ) -> Result<()> {
        if self.json {
            let line = json!({
                "event": "progress",
                "id": id.to_string(),
                "attempt": attempt,
                "progress": progress,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}  {progress}", self.lead(id))?;
        }
        out.flush()?;
        Ok(())
    }

    /// The final record: whole for one task, on one line for several.
    fn finished(self, out: &mut (dyn Write + Send), record: JobRecord) -> Result<()> {
        if self.json {
            let line = json!({ "event": "finished", "record": record_json(&record) });
            writeln!(out, "{line}")?;
        } else if self.with_id {
            let mut line = format!(
                "{}{} {} (attempt {})",
                self.lead(record.id),
                record.name,
                record.status.as_str(),
                record.attempts
            );
            if let Some(progress) = &record.progress {
                line.push_str(&format!("  {progress}"));
            }
            if let Some(error) = &record.error {
                line.push_str(&format!(": {}", clean(error)));
            }
            writeln!(out, "{line}")?;
        } else {
            write!(out, "{}", TaskReport { record }.to_text())?;
        }
        out.flush()?;
        Ok(())
    }
}

/// The most tasks `tasks --follow` follows at once: each holds a
/// subscription (a Redis connection) while it runs.
pub const MAX_FOLLOWED: usize = 100;

/// A followed task's events, then `None` when its subscription ends.
type Events = Pin<Box<dyn Stream<Item = (TaskId, Option<TaskEvent>)> + Send>>;

/// A task followed by [`tasks_follow`].
struct Followed {
    status: JobStatus,
    attempts: u32,
    subscription: AbortHandle,
}

/// Subscribes to task `id`'s events, tagged with its id and ended by
/// `None`, abortable.
async fn subscribe<B: Broker>(broker: &B, id: TaskId) -> Result<(Events, AbortHandle)> {
    let events = broker
        .task_events(id)
        .await?
        .map(move |event| (id, Some(event)))
        .chain(stream::once(async move { (id, None) }));
    let (events, handle) = stream::abortable(events);
    Ok((Box::pin(events), handle))
}

/// How [`tasks_follow`] ended: the outcome of each task it followed to its
/// end, in the order they ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FollowOutcome {
    /// The tasks followed to their end, and how each ended.
    pub ended: Vec<(TaskId, JobStatus)>,
}

impl FollowOutcome {
    /// The first outcome other than success, if any: what the exit status
    /// reports.
    #[must_use]
    pub fn first_unsuccessful(&self) -> Option<JobStatus> {
        self.ended
            .iter()
            .map(|(_, status)| *status)
            .find(|status| *status != JobStatus::Succeeded)
    }
}

/// Follows the tasks matching `filter`: first a line for each (oldest
/// first; the finished ones with their outcome), then a line for each
/// state change and progress report of the unfinished ones and of those
/// that start matching later, each line led by the task's id (one JSON
/// object a line with `json`, as [`task_follow`] writes them), at most
/// [`MAX_FOLLOWED`] at once. The records are read every `poll` and at each
/// task's end. Runs until cancelled or, with `until_done`, until every
/// task it followed has ended (at once when none was unfinished).
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bad filter or a limit above
/// [`MAX_FOLLOWED`]; broker and store errors; [`Error::Write`] when `out`
/// refuses the output.
///
/// # Cancel safety
///
/// Cancelling it only stops following: nothing is changed.
pub async fn tasks_follow<B: Broker>(
    broker: &B,
    store: &JobStore,
    filter: &TasksFilter,
    poll: Duration,
    until_done: bool,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<FollowOutcome> {
    filter.validate()?;
    if filter.limit > MAX_FOLLOWED {
        return Err(Error::InvalidInput(format!(
            "--follow follows at most {MAX_FOLLOWED} tasks at once: lower --limit (now {})",
            filter.limit
        )));
    }
    let lines = Lines {
        json,
        with_id: true,
    };
    let mut seen: HashSet<TaskId> = HashSet::new();
    let mut followed: HashMap<TaskId, Followed> = HashMap::new();
    let mut events: SelectAll<Events> = SelectAll::new();
    let mut outcome = FollowOutcome::default();
    let mut poll_timer = tokio::time::interval(poll);
    poll_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read = true;
    loop {
        if read {
            read = false;
            let page = store.query(&filter.to_query(Timestamp::now())).await?;
            let mut records = page.records;
            // The followed tasks that no longer match (a status filter).
            for id in followed.keys() {
                if !records.iter().any(|r| r.id == *id)
                    && let Some(record) = store.get(*id).await?
                {
                    records.push(record);
                }
            }
            records.sort_by_key(|r| (r.created_at, r.id));
            for record in records {
                let id = record.id;
                if let Some(task) = followed.get_mut(&id) {
                    if record.status.is_finished() {
                        task.subscription.abort();
                        followed.remove(&id);
                        outcome.ended.push((id, record.status));
                        lines.finished(out, record)?;
                    } else if (task.status, task.attempts) != (record.status, record.attempts) {
                        (task.status, task.attempts) = (record.status, record.attempts);
                        lines.state(out, &record)?;
                    }
                } else if seen.insert(id) {
                    if record.status.is_finished() {
                        lines.finished(out, record)?;
                    } else if followed.len() < MAX_FOLLOWED {
                        let (stream, subscription) = subscribe(broker, id).await?;
                        events.push(stream);
                        lines.state(out, &record)?;
                        followed.insert(
                            id,
                            Followed {
                                status: record.status,
                                attempts: record.attempts,
                                subscription,
                            },
                        );
                    } else {
                        // No room: seen again at a later read.
                        seen.remove(&id);
                    }
                }
            }
            if until_done && followed.is_empty() {
                return Ok(outcome);
            }
        }
        tokio::select! {
            Some((id, event)) = events.next(), if !events.is_empty() => match event {
                Some(TaskEvent::Progress { progress, attempt, .. }) => {
                    if followed.contains_key(&id) {
                        lines.progress(out, id, &progress, attempt)?;
                    }
                }
                // A finished event, or an unknown one: the record tells.
                Some(_) => read = true,
                // The subscription broke (Redis restarting): subscribe
                // again; the next read covers what was missed.
                None => {
                    if let Some(task) = followed.get_mut(&id) {
                        let (stream, subscription) = subscribe(broker, id).await?;
                        events.push(stream);
                        task.subscription = subscription;
                        read = true;
                    }
                }
            },
            _ = poll_timer.tick() => read = true,
        }
    }
}
