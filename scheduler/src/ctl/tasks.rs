//! `spoolctl tasks`: the job store's records, newest first, filtered.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};
use spool_broker::store::{JobQuery, JobRecord, JobStatus, JobStore, MAX_PAGE_SIZE};
use spool_broker::{QueueName, Timestamp};

use super::{Report, age, record_json};
use crate::error::{Error, Result};
use crate::table::{Align, Table};

/// How many records `tasks` shows unless told otherwise.
pub const DEFAULT_TASKS_LIMIT: usize = 20;

/// Which records `spoolctl tasks` lists: every filter set must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksFilter {
    /// Any of these statuses; empty: any status.
    pub statuses: Vec<JobStatus>,
    /// Only this queue.
    pub queue: Option<QueueName>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this task name.
    pub name: Option<String>,
    /// Only tasks created at most this long ago.
    pub since: Option<Duration>,
    /// Show at most this many, 1 to [`MAX_PAGE_SIZE`].
    pub limit: usize,
}

impl Default for TasksFilter {
    fn default() -> Self {
        Self {
            statuses: Vec::new(),
            queue: None,
            tenant: None,
            name: None,
            since: None,
            limit: DEFAULT_TASKS_LIMIT,
        }
    }
}

impl TasksFilter {
    /// Checks the limit; lets the caller check before connecting.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a limit of 0 or above [`MAX_PAGE_SIZE`].
    pub fn validate(&self) -> Result<()> {
        if (1..=MAX_PAGE_SIZE).contains(&self.limit) {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "--limit must be between 1 and {MAX_PAGE_SIZE}, not {}",
                self.limit
            )))
        }
    }

    /// The store query for this filter, `now` being the current time.
    #[must_use]
    pub fn to_query(&self, now: Timestamp) -> JobQuery {
        let mut query = JobQuery::new().limit(self.limit);
        if !self.statuses.is_empty() {
            query = query.status(self.statuses.iter().copied());
        }
        if let Some(queue) = &self.queue {
            query = query.queue(queue.clone());
        }
        if let Some(tenant) = &self.tenant {
            query = query.tenant(tenant.clone());
        }
        if let Some(name) = &self.name {
            query = query.name(name.clone());
        }
        if let Some(since) = self.since {
            let window = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
            let from = Timestamp::from_millis(now.as_millis().saturating_sub(window));
            query = query.created_between(Some(from), None);
        }
        query
    }
}

/// The records that matched, newest first; JSON: an array of
/// [`record_json`] objects.
#[derive(Debug, Clone, PartialEq)]
pub struct TasksReport {
    /// The records shown.
    pub records: Vec<JobRecord>,
    /// Whether more records matched than were shown.
    pub more: bool,
    /// When the list was read, for the ages.
    pub now: Timestamp,
}

impl Serialize for TasksReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.records.iter().map(record_json))
    }
}

impl Report for TasksReport {
    fn to_text(&self) -> String {
        if self.records.is_empty() {
            return "no tasks match\n".to_owned();
        }
        let mut table = Table::new([
            ("ID", Align::Left),
            ("NAME", Align::Left),
            ("QUEUE", Align::Left),
            ("STATUS", Align::Left),
            ("ATTEMPTS", Align::Right),
            ("CREATED", Align::Left),
            ("AGE", Align::Right),
        ]);
        for r in &self.records {
            table.row([
                r.id.to_string(),
                r.name.clone(),
                r.queue.to_string(),
                r.status.as_str().to_owned(),
                r.attempts.to_string(),
                r.created_at.to_string(),
                age(self.now, r.created_at),
            ]);
        }
        let mut text = table.to_string();
        if self.more {
            let _ = writeln!(
                text,
                "({} shown, more match; raise --limit to see more)",
                self.records.len()
            );
        }
        text
    }
}

/// Lists the records matching `filter`, newest first.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a bad limit, [`Error::Broker`] when the
/// store fails.
pub async fn tasks(store: &JobStore, filter: &TasksFilter) -> Result<TasksReport> {
    filter.validate()?;
    let now = Timestamp::now();
    let page = store.query(&filter.to_query(now)).await?;
    Ok(TasksReport {
        records: page.records,
        more: page.next.is_some(),
        now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::task::tests::seeded_store;
    use crate::ctl::{Format, render};

    #[tokio::test]
    async fn the_table_lists_newest_first_with_ages() {
        let seeded = seeded_store().await;
        let report = tasks(&seeded.store, &TasksFilter::default()).await.unwrap();
        let text = render(&report, Format::Text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("ID "), "{text}");
        assert!(lines[0].contains("  CREATED  ") && lines[0].ends_with("AGE"));
        let order = [
            &seeded.running,
            &seeded.failed,
            &seeded.done,
            &seeded.queued,
        ];
        for (line, envelope) in lines[1..].iter().zip(order) {
            assert!(line.starts_with(&envelope.id.to_string()), "{text}");
            assert!(line.contains(&envelope.created_at.to_string()), "{text}");
        }
        assert!(lines[1].contains("video.probe") && lines[1].contains("running"));
        assert!(lines[4].ends_with("  2h"), "{text}");
        assert!(lines[3].ends_with("  3m"), "{text}");
    }

    #[tokio::test]
    async fn filters_apply() {
        let seeded = seeded_store().await;
        let list = |filter: TasksFilter| {
            let store = &seeded.store;
            async move {
                let report = tasks(store, &filter).await.unwrap();
                report.records.iter().map(|r| r.id).collect::<Vec<_>>()
            }
        };
        let failed = TasksFilter {
            statuses: vec![JobStatus::Failed, JobStatus::Dead],
            ..TasksFilter::default()
        };
        assert_eq!(list(failed).await, [seeded.failed.id]);
        let gpu = TasksFilter {
            queue: Some(QueueName::GPU),
            tenant: Some("acme".into()),
            ..TasksFilter::default()
        };
        assert_eq!(list(gpu).await, [seeded.failed.id]);
        let transcodes = TasksFilter {
            name: Some("video.transcode".into()),
            ..TasksFilter::default()
        };
        assert_eq!(list(transcodes).await, [seeded.done.id, seeded.queued.id]);
        let recent = TasksFilter {
            since: Some(Duration::from_secs(3600)),
            ..TasksFilter::default()
        };
        assert_eq!(list(recent).await.len(), 3);
    }

    #[tokio::test]
    async fn the_limit_applies_and_the_table_says_more_match() {
        let seeded = seeded_store().await;
        let filter = TasksFilter {
            limit: 2,
            ..TasksFilter::default()
        };
        let report = tasks(&seeded.store, &filter).await.unwrap();
        assert_eq!((report.records.len(), report.more), (2, true));
        let text = render(&report, Format::Text).unwrap();
        assert!(
            text.ends_with("(2 shown, more match; raise --limit to see more)\n"),
            "{text}"
        );
        let zero = TasksFilter {
            limit: 0,
            ..TasksFilter::default()
        };
        let err = tasks(&seeded.store, &zero).await.unwrap_err();
        assert!(err.to_string().contains("--limit"), "{err}");
    }

    #[tokio::test]
    async fn json_is_an_array_of_records() {
        let seeded = seeded_store().await;
        let report = tasks(&seeded.store, &TasksFilter::default()).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0]["id"], seeded.running.id.to_string());
        assert_eq!(rows[0]["progress"]["percent"], 40.0);
        assert_eq!(rows[2]["result"]["height"], 1080);
        for row in rows {
            for key in [
                "id", "name", "queue", "status", "attempts", "worker", "error",
            ] {
                assert!(row.get(key).is_some(), "{key} in {row}");
            }
        }
    }

    #[tokio::test]
    async fn nothing_matching_says_so() {
        let seeded = seeded_store().await;
        let filter = TasksFilter {
            name: Some("nope".into()),
            ..TasksFilter::default()
        };
        let report = tasks(&seeded.store, &filter).await.unwrap();
        assert_eq!(render(&report, Format::Text).unwrap(), "no tasks match\n");
        assert_eq!(render(&report, Format::Json).unwrap(), "[]\n");
    }
}
