//! The job store's records, write batches, queries and policies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, TaskId, Timestamp};
use crate::error::{Error, Result};
pub use crate::job::{JobStatus, Progress, RecordPolicy};
use crate::queue::{Priority, QueueName};

/// The order of writes to one record: a write applies only if its revision
/// is at least the stored one, so a stale attempt never overwrites a newer
/// outcome and a final status is never replaced by a live one of the same
/// attempt.
#[cfg(feature = "store")]
pub(crate) fn revision(attempt: u32, status: JobStatus) -> i64 {
    i64::from(attempt) * 4 + status.rank()
}

/// The worker process that ran an attempt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkerId {
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
}

impl WorkerId {
    /// A worker id from a host name and a process id.
    #[must_use]
    pub fn new(host: impl Into<String>, pid: u32) -> Self {
        Self {
            host: host.into(),
            pid,
        }
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.pid)
    }
}

/// One progress report of a batch for [`JobStore::record_progress_many`].
///
/// [`JobStore::record_progress_many`]: super::JobStore::record_progress_many
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressUpdate {
    /// The task.
    pub id: TaskId,
    /// The attempt that reports it; reports of an older attempt are ignored.
    pub attempt: u32,
    /// Where it is.
    pub progress: Progress,
}

/// A task the producer has just enqueued: written by
/// [`JobStore::record_enqueued`].
///
/// [`JobStore::record_enqueued`]: super::JobStore::record_enqueued
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The task's id.
    pub id: TaskId,
    /// Its wire name.
    pub name: String,
    /// Its queue.
    pub queue: QueueName,
    /// Its priority.
    pub priority: Priority,
    /// The tenant it is accounted to.
    pub tenant: Option<String>,
    /// When the producer created it.
    pub created_at: Timestamp,
    /// Not to run before this time: the record starts as `scheduled`.
    pub eta: Option<Timestamp>,
    /// The attempt the task will run as next: 1 for a new task, more for
    /// a dead letter sent back. The record counts the attempts before it.
    pub attempt: u32,
    /// The task's arguments as JSON, secret fields redacted
    /// ([`Envelope::args_json`]); `None` when the payload is not
    /// MessagePack.
    pub args: Option<serde_json::Value>,
}

impl NewJob {
    /// The record of an envelope about to be enqueued, with its arguments
    /// as [`Envelope::args_json`] gives them (secret fields redacted). This
    /// is the one way every producer (the SDK, `spoolctl call`, the beat,
    /// dead-letter retry, workflows) records a task.
    #[must_use]
    pub fn from_envelope(envelope: &Envelope) -> Self {
        Self {
            id: envelope.id,
            name: envelope.name.clone(),
            queue: envelope.queue.clone(),
            priority: envelope.priority,
            tenant: envelope.tenant.clone(),
            created_at: envelope.created_at,
            eta: envelope.eta,
            attempt: envelope.attempt.max(1),
            args: envelope.args_json().ok(),
        }
    }

    /// The status this record starts with: `scheduled` with an ETA,
    /// `queued` without.
    #[must_use]
    pub fn status(&self) -> JobStatus {
        if self.eta.is_some() {
            JobStatus::Scheduled
        } else {
            JobStatus::Queued
        }
    }
}

/// An attempt a worker has started: written by [`JobStore::record_started`].
///
/// It carries the task's identity too, because the producer may not have
/// recorded the task.
///
/// [`JobStore::record_started`]: super::JobStore::record_started
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// The task's id.
    pub id: TaskId,
    /// Its wire name.
    pub name: String,
    /// Its queue.
    pub queue: QueueName,
    /// Its priority.
    pub priority: Priority,
    /// The tenant it is accounted to.
    pub tenant: Option<String>,
    /// When the producer created it.
    pub created_at: Timestamp,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    /// Who runs it.
    pub worker: WorkerId,
    /// When the attempt started.
    pub started_at: Timestamp,
}

impl Started {
    /// The start of `envelope`'s attempt on `worker`.
    #[must_use]
    pub fn from_envelope(envelope: &Envelope, worker: &WorkerId, started_at: Timestamp) -> Self {
        Self {
            id: envelope.id,
            name: envelope.name.clone(),
            queue: envelope.queue.clone(),
            priority: envelope.priority,
            tenant: envelope.tenant.clone(),
            created_at: envelope.created_at,
            attempt: envelope.attempt,
            worker: worker.clone(),
            started_at,
        }
    }
}

/// How an attempt ended: written by [`JobStore::record_outcomes`].
///
/// It carries the task's identity too, so that it can create the record
/// when nothing earlier was recorded (a `FailuresOnly` policy, say).
///
/// [`JobStore::record_outcomes`]: super::JobStore::record_outcomes
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The task's id.
    pub id: TaskId,
    /// Its wire name.
    pub name: String,
    /// Its queue.
    pub queue: QueueName,
    /// Its priority.
    pub priority: Priority,
    /// The tenant it is accounted to.
    pub tenant: Option<String>,
    /// When the producer created it.
    pub created_at: Timestamp,
    /// Which attempt ended, starting at 1 (0 for a task revoked or expired
    /// before any attempt).
    pub attempt: u32,
    /// How it ended: `succeeded`, `failed`, `retrying`, `dead`, `revoked` or
    /// `expired`.
    pub status: JobStatus,
    /// The handler's output, MessagePack-encoded with
    /// [`encode_payload`](crate::encode_payload).
    pub result: Option<Vec<u8>>,
    /// What went wrong.
    pub error: Option<String>,
    /// When the attempt started, if known; kept from an earlier write
    /// otherwise.
    pub started_at: Option<Timestamp>,
    /// When the attempt ended.
    pub finished_at: Timestamp,
    /// Who ran it, if anyone; kept from an earlier write otherwise.
    pub worker: Option<WorkerId>,
}

impl Finished {
    /// The end of `envelope`'s attempt with `status` at `finished_at`, with
    /// no result, error, start time or worker yet: set those fields next.
    #[must_use]
    pub fn from_envelope(envelope: &Envelope, status: JobStatus, finished_at: Timestamp) -> Self {
        Self {
            id: envelope.id,
            name: envelope.name.clone(),
            queue: envelope.queue.clone(),
            priority: envelope.priority,
            tenant: envelope.tenant.clone(),
            created_at: envelope.created_at,
            attempt: envelope.attempt,
            status,
            result: None,
            error: None,
            started_at: None,
            finished_at,
            worker: None,
        }
    }
}

/// One task's recorded life.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// The task's id.
    pub id: TaskId,
    /// Its wire name.
    pub name: String,
    /// Its queue.
    pub queue: QueueName,
    /// Its priority.
    pub priority: Priority,
    /// The tenant it is accounted to.
    pub tenant: Option<String>,
    /// Where it is now.
    pub status: JobStatus,
    /// The latest attempt recorded, starting at 1; 0 before any.
    pub attempts: u32,
    /// The worker of the latest attempt.
    pub worker: Option<WorkerId>,
    /// The latest progress report of the latest attempt.
    pub progress: Option<Progress>,
    /// When the producer created it.
    pub created_at: Timestamp,
    /// When the latest attempt started.
    pub started_at: Option<Timestamp>,
    /// When the latest attempt ended (for a final status: when the task
    /// finished).
    pub finished_at: Option<Timestamp>,
    /// The handler's output, MessagePack-encoded.
    pub result: Option<Vec<u8>>,
    /// The latest error.
    pub error: Option<String>,
    /// The task's arguments as JSON, secret fields redacted; `None` when
    /// no producer recorded them.
    pub args: Option<serde_json::Value>,
}

impl JobRecord {
    /// Decodes the result into the task's output type.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the stored bytes do not hold a `T`.
    pub fn output<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        self.result
            .as_deref()
            .map(crate::envelope::decode_payload)
            .transpose()
    }

    /// The result as JSON, for the CLI and dashboards. MessagePack binary
    /// strings become arrays of numbers; map keys that are not strings are
    /// written as JSON text.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the stored bytes are not MessagePack.
    pub fn result_json(&self) -> Result<Option<serde_json::Value>> {
        self.result
            .as_deref()
            .map(super::json::msgpack_to_json)
            .transpose()
    }

    /// The whole record as a JSON object, with the result decoded as by
    /// [`JobRecord::result_json`] (or, if it cannot be, left out and
    /// flagged with `"result_undecodable": true`).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::json!({
            "id": self.id.to_string(),
            "name": self.name,
            "queue": self.queue.as_str(),
            "priority": self.priority.as_str(),
            "tenant": self.tenant,
            "status": self.status.as_str(),
            "attempts": self.attempts,
            "worker": self.worker.as_ref().map(|w| serde_json::json!({"host": w.host, "pid": w.pid})),
            "progress": self.progress.as_ref().map(|p| serde_json::json!({
                "percent": p.percent,
                "stage": p.stage,
                "message": p.message,
                "fps": p.fps,
                "eta_seconds": p.eta_seconds,
            })),
            "created_at": self.created_at.to_string(),
            "started_at": self.started_at.map(|t| t.to_string()),
            "finished_at": self.finished_at.map(|t| t.to_string()),
            "error": self.error,
            "args": self.args,
        });
        if let serde_json::Value::Object(map) = &mut object {
            match self.result_json() {
                Ok(result) => {
                    map.insert("result".into(), result.unwrap_or(serde_json::Value::Null));
                }
                Err(_) => {
                    map.insert("result".into(), serde_json::Value::Null);
                    map.insert("result_undecodable".into(), serde_json::Value::Bool(true));
                }
            }
        }
        object
    }
}

/// The most characters of an error that a [`JobEvent`] keeps: the record
/// keeps the whole error, the timeline an excerpt of each.
pub const EVENT_ERROR_LEN: usize = 500;

/// What happened to a task at one point of its timeline ([`JobEvent`]):
/// mostly the status it entered, written as that status is (`running`,
/// `succeeded`…), plus `requeued`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobTransition {
    /// Enqueued to run at once.
    Queued,
    /// Enqueued with an ETA.
    Scheduled,
    /// Sent back for a fresh run: a dead letter requeued by an operator.
    Requeued,
    /// An attempt started on a worker.
    Running,
    /// An attempt failed, and another one will follow.
    Retrying,
    /// The last attempt succeeded.
    Succeeded,
    /// The last attempt failed, and no other will follow.
    Failed,
    /// Out of attempts: the task went to the dead letters.
    Dead,
    /// Revoked before or while it ran.
    Revoked,
    /// Its deadline passed before it ran.
    Expired,
}

impl JobTransition {
    /// Every transition, in the order of a timeline's ties.
    pub const ALL: [Self; 10] = [
        Self::Queued,
        Self::Scheduled,
        Self::Requeued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
        Self::Revoked,
        Self::Expired,
    ];

    /// The transition into `status`.
    #[must_use]
    pub const fn entering(status: JobStatus) -> Self {
        match status {
            JobStatus::Queued => Self::Queued,
            JobStatus::Scheduled => Self::Scheduled,
            JobStatus::Running => Self::Running,
            JobStatus::Retrying => Self::Retrying,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Failed => Self::Failed,
            JobStatus::Dead => Self::Dead,
            JobStatus::Revoked => Self::Revoked,
            JobStatus::Expired => Self::Expired,
        }
    }

    /// The status this transition enters; `None` for `requeued`, which
    /// leaves the task queued but is told apart on the timeline.
    #[must_use]
    pub const fn status(self) -> Option<JobStatus> {
        Some(match self {
            Self::Requeued => return None,
            Self::Queued => JobStatus::Queued,
            Self::Scheduled => JobStatus::Scheduled,
            Self::Running => JobStatus::Running,
            Self::Retrying => JobStatus::Retrying,
            Self::Succeeded => JobStatus::Succeeded,
            Self::Failed => JobStatus::Failed,
            Self::Dead => JobStatus::Dead,
            Self::Revoked => JobStatus::Revoked,
            Self::Expired => JobStatus::Expired,
        })
    }

    /// Its lowercase name, as stored and as JSON writes it: the status's
    /// own name, or `requeued`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self.status() {
            Some(status) => status.as_str(),
            None => "requeued",
        }
    }
}

impl fmt::Display for JobTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobTransition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::decode("job transition", format!("{s:?} is not a transition")))
    }
}

/// One transition of one task: [`JobStore::events`] lists a task's
/// transitions, its attempts as a timeline. Each is written in the same
/// transaction as the record it changes, once per attempt and transition:
/// a redelivered write of the same transition replaces it (the later time
/// wins) rather than adding another.
///
/// Serialized (for the CLI's and the dashboard's JSON) as
/// `{"attempt", "transition", "at" (RFC 3339), "worker" ({"host", "pid"} or
/// null), "error"}`.
///
/// [`JobStore::events`]: super::JobStore::events
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobEvent {
    /// The attempt, starting at 1; 0 for a task revoked or expired before
    /// any attempt. A `queued`, `scheduled` or `requeued` event carries
    /// the attempt the task was enqueued for.
    pub attempt: u32,
    /// What happened.
    pub transition: JobTransition,
    /// When: the creation time for `queued` and `scheduled`, the start or
    /// end of the attempt, the time of the write for `requeued`.
    #[serde(with = "crate::rfc3339")]
    pub at: Timestamp,
    /// The worker the attempt ran on, when known.
    pub worker: Option<WorkerId>,
    /// The error the attempt ended with, its first [`EVENT_ERROR_LEN`]
    /// characters.
    pub error: Option<String>,
}

/// The first [`EVENT_ERROR_LEN`] characters of `error`.
#[cfg(feature = "store")]
pub(crate) fn error_excerpt(error: &str) -> &str {
    error
        .char_indices()
        .nth(EVENT_ERROR_LEN)
        .map_or(error, |(end, _)| &error[..end])
}

/// The first hex digits of task ids, for [`JobQuery::id_prefix`]: 1 to 32
/// digits, with or without the dashes of the usual form, in either case.
/// Ids are time-ordered (UUIDv7), so a prefix names the tasks created in a
/// stretch of time, and the store reads them as one range of its primary
/// key.
///
/// # Examples
///
/// ```
/// use spool_broker::store::IdPrefix;
///
/// let prefix: IdPrefix = "0193A7C4-5e".parse()?;
/// assert_eq!(prefix.to_string(), "0193a7c4-5e");
/// assert!("0193-xyz".parse::<IdPrefix>().is_err());
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdPrefix {
    /// The digits, two to a byte, high nibble first; the rest zero.
    bytes: [u8; 16],
    digits: u8,
}

impl IdPrefix {
    /// How many hex digits the prefix has.
    #[must_use]
    pub fn digits(&self) -> usize {
        usize::from(self.digits)
    }

    /// The lowest and the highest id that start with the prefix.
    #[must_use]
    pub fn range(&self) -> (TaskId, TaskId) {
        let mut high = self.bytes;
        for digit in self.digits()..32 {
            high[digit / 2] |= if digit.is_multiple_of(2) { 0xf0 } else { 0x0f };
        }
        (
            TaskId::from(uuid::Uuid::from_bytes(self.bytes)),
            TaskId::from(uuid::Uuid::from_bytes(high)),
        )
    }
}

impl FromStr for IdPrefix {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::decode("task id prefix", format!("{s:?} {why}"));
        let mut prefix = Self {
            bytes: [0; 16],
            digits: 0,
        };
        for c in s.chars().filter(|&c| c != '-') {
            let value = c
                .to_digit(16)
                .ok_or_else(|| bad("has a character that is not a hex digit or a dash"))?;
            let digit = prefix.digits();
            if digit == 32 {
                return Err(bad("is longer than a task id"));
            }
            let value = u8::try_from(value).unwrap_or(0);
            prefix.bytes[digit / 2] |= if digit.is_multiple_of(2) {
                value << 4
            } else {
                value
            };
            prefix.digits += 1;
        }
        if prefix.digits == 0 {
            return Err(bad("has no hex digit"));
        }
        Ok(prefix)
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for digit in 0..self.digits() {
            if matches!(digit, 8 | 12 | 16 | 20) {
                f.write_str("-")?;
            }
            let byte = self.bytes[digit / 2];
            let nibble = if digit.is_multiple_of(2) {
                byte >> 4
            } else {
                byte & 0x0f
            };
            write!(f, "{nibble:x}")?;
        }
        Ok(())
    }
}

/// Where a page of [`JobStore::query`] ended: pass it as [`JobQuery::after`]
/// for the next page. Its text form (`Display`/`FromStr`) suits a CLI flag.
///
/// [`JobStore::query`]: super::JobStore::query
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The creation time of the last record of the page.
    pub created_at: Timestamp,
    /// Its id.
    pub id: TaskId,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at.as_millis(), self.id)
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::decode("cursor", format!("{s:?} is not a page cursor"));
        let (millis, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            created_at: Timestamp::from_millis(millis.parse().map_err(|_| bad())?),
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// The default number of records per page.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The most records one page holds.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// Which records [`JobStore::query`] returns: every filter that is set must
/// match. Records come newest first (by creation time, then id) unless
/// `oldest_first` is set.
///
/// # Examples
///
/// ```
/// use spool_broker::store::{JobQuery, JobStatus};
///
/// let failed_for_acme = JobQuery::new()
///     .status([JobStatus::Failed, JobStatus::Dead])
///     .tenant("acme")
///     .limit(50);
/// assert_eq!(failed_for_acme.limit, 50);
/// ```
///
/// [`JobStore::query`]: super::JobStore::query
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobQuery {
    /// Any of these statuses (`None` or an empty list: any status).
    pub status: Option<Vec<JobStatus>>,
    /// This queue.
    pub queue: Option<QueueName>,
    /// This tenant.
    pub tenant: Option<String>,
    /// This task name.
    pub name: Option<String>,
    /// Created at or after this time.
    pub since: Option<Timestamp>,
    /// Created before this time.
    pub until: Option<Timestamp>,
    /// Records per page, 1 to [`MAX_PAGE_SIZE`] (values outside are
    /// clamped); [`DEFAULT_PAGE_SIZE`] by default.
    pub limit: usize,
    /// Continue after this cursor (from the previous [`Page::next`]).
    pub after: Option<Cursor>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    /// Only ids that start with this prefix.
    pub id_prefix: Option<IdPrefix>,
}

impl Default for JobQuery {
    fn default() -> Self {
        Self {
            status: None,
            queue: None,
            tenant: None,
            name: None,
            since: None,
            until: None,
            limit: DEFAULT_PAGE_SIZE,
            after: None,
            oldest_first: false,
            id_prefix: None,
        }
    }
}

impl JobQuery {
    /// A query for every record, newest first, [`DEFAULT_PAGE_SIZE`] per page.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these statuses.
    #[must_use]
    pub fn status(mut self, statuses: impl IntoIterator<Item = JobStatus>) -> Self {
        self.status = Some(statuses.into_iter().collect());
        self
    }

    /// Only this queue.
    #[must_use]
    pub fn queue(mut self, queue: QueueName) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Only this tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Only this task name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only records created in `[since, until)`; either end may be open.
    #[must_use]
    pub fn created_between(mut self, since: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// Records per page.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The page after `cursor`.
    #[must_use]
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.after = cursor;
        self
    }

    /// Oldest first.
    #[must_use]
    pub fn oldest_first(mut self) -> Self {
        self.oldest_first = true;
        self
    }

    /// Only ids that start with `prefix`: a whole id finds its task (as
    /// [`JobStore::get`] does, under the other filters), a few digits the
    /// tasks created in a stretch of time.
    ///
    /// [`JobStore::get`]: super::JobStore::get
    #[must_use]
    pub fn id_prefix(mut self, prefix: IdPrefix) -> Self {
        self.id_prefix = Some(prefix);
        self
    }

    #[cfg(feature = "store")]
    pub(crate) fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE_SIZE)
    }
}

/// One page of [`JobStore::query`].
///
/// [`JobStore::query`]: super::JobStore::query
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The records, in the query's order.
    pub records: Vec<JobRecord>,
    /// Where the next page starts; `None` when this is the last one.
    pub next: Option<Cursor>,
}

#[cfg(all(test, feature = "store"))]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
        }
        assert!("nope".parse::<JobStatus>().is_err());
    }

    #[test]
    fn revisions_order_attempts_then_stages() {
        let order = [
            revision(0, JobStatus::Queued),
            revision(1, JobStatus::Running),
            revision(1, JobStatus::Retrying),
            revision(2, JobStatus::Running),
            revision(2, JobStatus::Succeeded),
            revision(3, JobStatus::Queued),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(
            revision(1, JobStatus::Failed),
            revision(1, JobStatus::Succeeded)
        );
    }

    #[test]
    fn cursors_round_trip_through_text() {
        let cursor = Cursor {
            created_at: Timestamp::from_millis(1_732_500_000_123),
            id: TaskId::new(),
        };
        assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        assert!("12-x".parse::<Cursor>().is_err());
    }

    #[test]
    fn policies_parse_and_filter() {
        assert_eq!(
            "failures_only".parse::<RecordPolicy>().unwrap(),
            RecordPolicy::FailuresOnly
        );
        assert!(!RecordPolicy::FailuresOnly.records(JobStatus::Running));
        assert!(RecordPolicy::FailuresOnly.records(JobStatus::Retrying));
        assert!(!RecordPolicy::Off.records_attempt(JobStatus::Failed, 3));
    }

    #[test]
    fn page_sizes_are_clamped() {
        assert_eq!(JobQuery::new().limit(0).page_size(), 1);
        assert_eq!(JobQuery::new().limit(1 << 20).page_size(), MAX_PAGE_SIZE);
    }
}
