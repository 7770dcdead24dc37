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
            write!(
                out,
                "{}",
                TaskReport {
                    record,
                    events: Vec::new()
                }
                .to_text()
            )?;
        }
        out.flush()?;
        Ok(())
    }
}

/// The most tasks `tasks --follow` follows at once: each holds a
/// subscription (a Redis connection) while it runs.
pub const MAX_FOLLOWED: usize = 100;

/// A followed task's events, then `None` when its subscription ends.
pub(super) type Events = Pin<Box<dyn Stream<Item = (TaskId, Option<TaskEvent>)> + Send>>;

/// A task followed by [`tasks_follow`].
struct Followed {
    status: JobStatus,
    attempts: u32,
    subscription: AbortHandle,
}

/// Subscribes to task `id`'s events, tagged with its id and ended by
/// `None`, abortable.
pub(super) async fn subscribe<B: Broker>(broker: &B, id: TaskId) -> Result<(Events, AbortHandle)> {
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
/// the filter's limit (itself at most [`MAX_FOLLOWED`]) at once. The records are read every `poll` and at each
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
                    } else if followed.len() < filter.limit {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use spool_broker::store::Finished;
    use spool_broker::{MemoryBroker, Progress};

    use super::*;
    use crate::ctl::task::tests::seeded_store;

    /// Output shared with the test while `tasks_follow` writes it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        async fn wait_for(&self, needle: &str) {
            tokio::time::timeout(Duration::from_secs(10), async {
                while !self.text().contains(needle) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{needle:?} in {}", self.text()));
        }
    }

    #[tokio::test]
    async fn the_matching_tasks_are_followed_to_their_end() {
        let seeded = seeded_store().await;
        let broker = MemoryBroker::new();
        let filter = TasksFilter {
            statuses: vec![JobStatus::Running, JobStatus::Succeeded],
            ..TasksFilter::default()
        };
        let out = Shared::default();
        let following = {
            let (broker, store, mut out) = (broker.clone(), seeded.store.clone(), out.clone());
            tokio::spawn(async move {
                let poll = Duration::from_millis(20);
                tasks_follow(&broker, &store, &filter, poll, true, false, &mut out).await
            })
        };
        let (done, running) = (seeded.done.id, seeded.running.id);
        // The finished one first (oldest first), then the running one.
        out.wait_for(&format!("{running} video.probe running (attempt 1)\n"))
            .await;
        assert!(
            out.text()
                .starts_with(&format!("{done} video.transcode succeeded (attempt 2)\n")),
            "{}",
            out.text()
        );
        let progress = Progress {
            fps: Some(118.0),
            ..Progress::percent(75.0)
        };
        broker
            .publish_events(&[TaskEvent::Progress {
                id: running,
                attempt: 1,
                progress,
            }])
            .await
            .unwrap();
        out.wait_for(&format!("{running}    75.0 %, 118 fps\n"))
            .await;

        let finished =
            Finished::from_envelope(&seeded.running, JobStatus::Succeeded, Timestamp::now());
        seeded.store.record_outcomes(&[finished]).await.unwrap();
        let outcome = following.await.unwrap().unwrap();
        assert_eq!(outcome.ended, [(running, JobStatus::Succeeded)]);
        assert_eq!(outcome.first_unsuccessful(), None);
        let last = out.text().lines().last().unwrap().to_owned();
        assert_eq!(
            last,
            format!("{running} video.probe succeeded (attempt 1)  100.0 % done")
        );
    }

    #[tokio::test]
    async fn too_many_at_once_are_refused() {
        let seeded = seeded_store().await;
        let filter = TasksFilter {
            limit: MAX_FOLLOWED + 1,
            ..TasksFilter::default()
        };
        let mut out = Vec::new();
        let err = tasks_follow(
            &MemoryBroker::new(),
            &seeded.store,
            &filter,
            DEFAULT_FOLLOW_POLL,
            true,
            false,
            &mut out,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("--limit"), "{err}");
        assert!(out.is_empty());
    }
}
