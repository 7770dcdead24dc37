//! The SQL the job store runs. Both backends share it: the dialects agree
//! on `INSERT … ON CONFLICT … DO UPDATE … WHERE`, and sqlx's SQLite driver
//! reads `$n` placeholders too. Only the schema differs, and the
//! placeholders of batched writes: on SQLite they are anonymous `?`s,
//! because sqlx looks up each parameter's name when it binds and SQLite
//! finds a name by a linear scan, which makes binding the 3,840 parameters
//! of a 256-row statement quadratic (90 % of the time, measured).
//!
//! Batched writes are multi-row `INSERT`s. A batch is cut into chunks whose
//! sizes are powers of two up to [`MAX_CHUNK`], so each kind of write has at
//! most `log2(MAX_CHUNK) + 1` distinct statements, all prepared once per
//! connection and cached, whatever the batch sizes.

use std::sync::OnceLock;

use super::StoreBackend;
use super::types::{JobQuery, JobStatus, JobTransition};

/// The most rows one statement writes. 256 rows of 15 columns bind 3,840
/// parameters, far below SQLite's 32,766 and PostgreSQL's 65,535.
pub(crate) const MAX_CHUNK: usize = 256;

/// The number of chunk sizes: 1, 2, 4 … `MAX_CHUNK`.
const SIZES: usize = MAX_CHUNK.trailing_zeros() as usize + 1;

/// The columns every read returns, in the order `decode_record` reads them.
macro_rules! record_columns {
    () => {
        "id, name, queue, priority, tenant, status, attempts, worker_host, worker_pid, \
         progress_percent, progress_stage, progress_message, progress_fps, progress_eta_s, \
         created_at, started_at, finished_at, result, error, args"
    };
}

/// The number of kinds of batched write.
const KINDS: usize = 5;
const _: () = assert!(Write::Events as usize + 1 == KINDS);

/// A kind of batched write.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Write {
    Enqueued,
    Requeued,
    Started,
    Finished,
    /// Timeline rows ([`EventRow`]), written with each of the others.
    Events,
}

impl Write {
    const fn table(self) -> &'static str {
        match self {
            Self::Events => "spool_job_events",
            _ => "spool_jobs",
        }
    }

    const fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Enqueued | Self::Requeued => &[
                "id",
                "name",
                "queue",
                "priority",
                "tenant",
                "status",
                "attempts",
                "revision",
                "created_at",
                "args",
            ],
            Self::Started => &[
                "id",
                "name",
                "queue",
                "priority",
                "tenant",
                "status",
                "attempts",
                "revision",
                "worker_host",
                "worker_pid",
                "created_at",
                "started_at",
            ],
            Self::Finished => &[
                "id",
                "name",
                "queue",
                "priority",
                "tenant",
                "status",
                "attempts",
                "revision",
                "worker_host",
                "worker_pid",
                "created_at",
                "started_at",
                "finished_at",
                "result",
                "error",
            ],
            Self::Events => &[
                "job_id",
                "attempt",
                "transition",
                "at",
                "worker_host",
                "worker_pid",
                "error",
            ],
        }
    }

    /// What happens when the row exists. The `WHERE` is the idempotency
    /// guard: a write applies only if its revision is at least the stored
    /// one.
    const fn on_conflict(self) -> &'static str {
        match self {
            // The record of a started or finished task knows more, except
            // the arguments: a worker may record the start before the
            // producer's record lands, and only the producer has them.
            Self::Enqueued => {
                " ON CONFLICT (id) DO UPDATE SET args = excluded.args \
                 WHERE spool_jobs.args IS NULL AND excluded.args IS NOT NULL"
            }
            // A fresh life for a finished task (a dead letter sent back):
            // the run to come is its next attempt, so the record counts the
            // attempts made and ranks just below that run's start. An
            // operator's explicit act: applied whatever the stored revision.
            Self::Requeued => {
                " ON CONFLICT (id) DO UPDATE SET \
                 status = excluded.status, \
                 attempts = excluded.attempts, \
                 revision = excluded.revision, \
                 args = COALESCE(excluded.args, spool_jobs.args), \
                 worker_host = NULL, \
                 worker_pid = NULL, \
                 started_at = NULL, \
                 finished_at = NULL, \
                 result = NULL, \
                 progress_percent = NULL, \
                 progress_stage = NULL, \
                 progress_message = NULL, \
                 progress_fps = NULL, \
                 progress_eta_s = NULL"
            }
            // A new attempt starts afresh: no end time, no progress yet.
            Self::Started => {
                " ON CONFLICT (id) DO UPDATE SET \
                 status = excluded.status, \
                 attempts = excluded.attempts, \
                 revision = excluded.revision, \
                 worker_host = excluded.worker_host, \
                 worker_pid = excluded.worker_pid, \
                 started_at = excluded.started_at, \
                 finished_at = NULL, \
                 progress_percent = NULL, \
                 progress_stage = NULL, \
                 progress_message = NULL, \
                 progress_fps = NULL, \
                 progress_eta_s = NULL \
                 WHERE excluded.revision >= spool_jobs.revision"
            }
            // What the outcome does not know is kept from the start record.
            // A success ends at 100 % "done": the handler's last report may
            // have been throttled, or have lost the race with the outcome.
            Self::Finished => {
                " ON CONFLICT (id) DO UPDATE SET \
                 progress_percent = CASE WHEN excluded.status = 'succeeded' THEN 100 \
                   ELSE spool_jobs.progress_percent END, \
                 progress_stage = CASE WHEN excluded.status = 'succeeded' THEN 'done' \
                   ELSE spool_jobs.progress_stage END, \
                 progress_fps = CASE WHEN excluded.status = 'succeeded' THEN NULL \
                   ELSE spool_jobs.progress_fps END, \
                 progress_eta_s = CASE WHEN excluded.status = 'succeeded' THEN NULL \
                   ELSE spool_jobs.progress_eta_s END, \
                 status = excluded.status, \
                 attempts = excluded.attempts, \
                 revision = excluded.revision, \
                 worker_host = COALESCE(excluded.worker_host, spool_jobs.worker_host), \
                 worker_pid = COALESCE(excluded.worker_pid, spool_jobs.worker_pid), \
                 started_at = COALESCE(excluded.started_at, spool_jobs.started_at), \
                 finished_at = excluded.finished_at, \
                 result = excluded.result, \
                 error = excluded.error \
                 WHERE excluded.revision >= spool_jobs.revision"
            }
            // One row per attempt and transition: a redelivered write of
            // the same transition moves it to the later time, and an exact
            // replay writes nothing.
            Self::Events => {
                " ON CONFLICT (job_id, attempt, transition) DO UPDATE SET \
                 at = excluded.at, \
                 worker_host = excluded.worker_host, \
                 worker_pid = excluded.worker_pid, \
                 error = excluded.error \
                 WHERE excluded.at > spool_job_events.at"
            }
        }
    }

    /// The statement writing `rows` rows; `rows` must be a power of two no
    /// larger than [`MAX_CHUNK`].
    pub(crate) fn sql(self, backend: StoreBackend, rows: usize) -> &'static str {
        static CACHE: [[[OnceLock<String>; SIZES]; KINDS]; 2] =
            [const { [const { [const { OnceLock::new() }; SIZES] }; KINDS] }; 2];
        debug_assert!(rows.is_power_of_two() && rows <= MAX_CHUNK);
        let size = (rows.trailing_zeros() as usize).min(SIZES - 1);
        let numbered = backend == StoreBackend::Postgres;
        CACHE[usize::from(numbered)][self as usize][size].get_or_init(|| self.build(numbered, rows))
    }

    fn build(self, numbered: bool, rows: usize) -> String {
        let columns = self.columns();
        let mut sql = String::with_capacity(128 + rows * columns.len() * 5);
        sql.push_str("INSERT INTO ");
        sql.push_str(self.table());
        sql.push_str(" (");
        sql.push_str(&columns.join(", "));
        sql.push_str(") VALUES ");
        let mut n = 0;
        for row in 0..rows {
            if row > 0 {
                sql.push(',');
            }
            sql.push('(');
            for column in 0..columns.len() {
                if column > 0 {
                    sql.push(',');
                }
                if numbered {
                    n += 1;
                    sql.push('$');
                    sql.push_str(&n.to_string());
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
        sql.push_str(self.on_conflict());
        sql
    }
}

/// Cuts `rows` into chunks of [`Write::sql`]'s sizes: as many of
/// `MAX_CHUNK` as fit, then the binary digits of the rest.
pub(crate) fn chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = if rows.len() >= MAX_CHUNK {
            MAX_CHUNK
        } else {
            1 << rows.len().ilog2()
        };
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// One record per id, the one with the highest revision (the last one
/// given among equals), sorted by id. PostgreSQL refuses to update one row
/// twice in a statement, and a fixed lock order keeps concurrent writers
/// from deadlocking.
pub(crate) fn latest_per_id<T, K: Ord + Copy>(rows: &[T], key: impl Fn(&T) -> (K, i64)) -> Vec<&T> {
    let mut latest: Vec<&T> = rows.iter().rev().collect();
    // Stable: among equal keys the later input stays first.
    latest.sort_by(|a, b| {
        let (a_id, a_rev) = key(a);
        let (b_id, b_rev) = key(b);
        a_id.cmp(&b_id).then(b_rev.cmp(&a_rev))
    });
    latest.dedup_by(|later, earlier| key(later).0 == key(earlier).0);
    latest
}

/// One row of a task's timeline, as bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventRow<'a> {
    pub id: uuid::Uuid,
    pub attempt: i32,
    pub transition: JobTransition,
    pub at: i64,
    pub worker: Option<(&'a str, i32)>,
    pub error: Option<&'a str>,
}

impl EventRow<'_> {
    fn key(&self) -> (uuid::Uuid, i32, JobTransition) {
        (self.id, self.attempt, self.transition)
    }
}

/// One row per task, attempt and transition, the latest (the last given
/// among equals), sorted by that key: as for [`latest_per_id`], one
/// statement may not update a row twice, and a fixed order keeps writers
/// from deadlocking.
pub(crate) fn distinct_events(mut rows: Vec<EventRow<'_>>) -> Vec<EventRow<'_>> {
    rows.reverse();
    // Stable: among equal keys and times, the later input stays first.
    rows.sort_by(|a, b| a.key().cmp(&b.key()).then(b.at.cmp(&a.at)));
    rows.dedup_by(|later, earlier| later.key() == earlier.key());
    rows
}

/// A task's timeline; ties are ordered by the caller.
pub(crate) const EVENTS: &str = "SELECT attempt, transition, at, worker_host, worker_pid, error \
     FROM spool_job_events WHERE job_id = $1";

/// Sets a running task's progress, unless a newer attempt started or the
/// task finished.
pub(crate) const PROGRESS: &str = "UPDATE spool_jobs SET \
     progress_percent = $1, progress_stage = $2, progress_message = $3, \
     progress_fps = $4, progress_eta_s = $5 \
     WHERE id = $6 AND attempts <= $7 \
     AND status IN ('queued', 'scheduled', 'running', 'retrying')";

pub(crate) const GET: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM spool_jobs WHERE id = $1"
);

pub(crate) const STATUS: &str = "SELECT status FROM spool_jobs WHERE id = $1";

pub(crate) const COUNT_BY_STATUS: &str = "SELECT status, COUNT(*) FROM spool_jobs GROUP BY status";

pub(crate) const COUNT_BY_STATUS_IN_QUEUE: &str =
    "SELECT status, COUNT(*) FROM spool_jobs WHERE queue = $1 GROUP BY status";

/// Deletes up to `$2` finished records that finished before `$1`.
pub(crate) const PRUNE: &str = "DELETE FROM spool_jobs WHERE id IN (\
     SELECT id FROM spool_jobs \
     WHERE status IN ('succeeded', 'failed', 'dead', 'revoked', 'expired') \
     AND finished_at < $1 LIMIT $2)";

/// A bind parameter of a query built at run time.
#[derive(Debug)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Id(uuid::Uuid),
}

/// The `SELECT` for `query`, fetching one record more than a page so that
/// the caller knows whether another page follows.
pub(crate) fn select(query: &JobQuery) -> (String, Vec<Arg>) {
    let mut sql = String::with_capacity(512);
    sql.push_str("SELECT ");
    sql.push_str(record_columns!());
    sql.push_str(" FROM spool_jobs WHERE TRUE");
    let mut args = Vec::new();
    let mut push = |sql: &mut String, arg: Arg| {
        args.push(arg);
        sql.push('$');
        sql.push_str(&args.len().to_string());
    };

    // A prefix is a range of the primary key.
    if let Some(prefix) = &query.id_prefix {
        let (low, high) = prefix.range();
        sql.push_str(" AND id >= ");
        push(&mut sql, Arg::Id(*low.as_uuid()));
        sql.push_str(" AND id <= ");
        push(&mut sql, Arg::Id(*high.as_uuid()));
    }

    if let Some(statuses) = query.status.as_deref().filter(|s| !s.is_empty()) {
        sql.push_str(" AND status IN (");
        for (i, status) in statuses.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            push(&mut sql, Arg::Text(JobStatus::as_str(*status).to_owned()));
        }
        sql.push(')');
    }
    if let Some(queue) = &query.queue {
        sql.push_str(" AND queue = ");
        push(&mut sql, Arg::Text(queue.as_str().to_owned()));
    }
    if let Some(tenant) = &query.tenant {
        sql.push_str(" AND tenant = ");
        push(&mut sql, Arg::Text(tenant.clone()));
    }
    if let Some(name) = &query.name {
        sql.push_str(" AND name = ");
        push(&mut sql, Arg::Text(name.clone()));
    }
    if let Some(since) = query.since {
        sql.push_str(" AND created_at >= ");
        push(&mut sql, Arg::Int(super::millis(since)));
    }
    if let Some(until) = query.until {
        sql.push_str(" AND created_at < ");
        push(&mut sql, Arg::Int(super::millis(until)));
    }
    let (cmp, order) = if query.oldest_first {
        ('>', "ASC")
    } else {
        ('<', "DESC")
    };
    if let Some(after) = query.after {
        // After (created_at, id) in the page order. The plain bound on
        // created_at is what lets an index ending in (created_at, id)
        // start at the cursor rather than scan every newer row; the OR
        // only breaks ties within that millisecond.
        let created = super::millis(after.created_at);
        sql.push_str(" AND created_at ");
        sql.push(cmp);
        sql.push_str("= ");
        push(&mut sql, Arg::Int(created));
        sql.push_str(" AND (created_at ");
        sql.push(cmp);
        sql.push(' ');
        push(&mut sql, Arg::Int(created));
        sql.push_str(" OR id ");
        sql.push(cmp);
        sql.push(' ');
        push(&mut sql, Arg::Id(*after.id.as_uuid()));
        sql.push(')');
    }
    sql.push_str(" ORDER BY created_at ");
    sql.push_str(order);
    sql.push_str(", id ");
    sql.push_str(order);
    sql.push_str(" LIMIT ");
    push(
        &mut sql,
        Arg::Int(i64::try_from(query.page_size() + 1).unwrap_or(i64::MAX)),
    );
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_and_cover_everything() {
        for len in [0, 1, 2, 3, 255, 256, 257, 1000, 4096] {
            let rows: Vec<usize> = (0..len).collect();
            let chunks: Vec<&[usize]> = chunks(&rows).collect();
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len().is_power_of_two() && c.len() <= MAX_CHUNK)
            );
            assert_eq!(chunks.concat(), rows);
        }
    }

    #[test]
    fn statements_number_their_placeholders_on_postgres() {
        let sql = Write::Finished.sql(StoreBackend::Postgres, 2);
        assert!(sql.contains("($1,$2,"), "{sql}");
        assert!(sql.contains("$30)"), "{sql}");
        assert!(!sql.contains("$31"), "{sql}");
        assert!(
            std::ptr::eq(sql, Write::Finished.sql(StoreBackend::Postgres, 2)),
            "cached"
        );
        let sql = Write::Started.sql(StoreBackend::Sqlite, 2);
        assert!(sql.contains("VALUES (?,?,"), "{sql}");
        assert_eq!(sql.matches('?').count(), 24, "{sql}");
        assert!(!sql.contains('$'), "{sql}");
    }

    #[test]
    fn the_latest_revision_of_each_id_wins() {
        let rows = [
            (2, 5, 'a'),
            (1, 7, 'b'),
            (2, 9, 'c'),
            (1, 7, 'd'),
            (2, 1, 'e'),
        ];
        let latest = latest_per_id(&rows, |r| (r.0, r.1));
        let tags: Vec<char> = latest.iter().map(|r| r.2).collect();
        assert_eq!(tags, ['d', 'c']);
    }

    #[test]
    fn queries_bind_every_filter() {
        let query = JobQuery::new()
            .status([JobStatus::Failed, JobStatus::Dead])
            .tenant("acme")
            .limit(10);
        let (sql, args) = select(&query);
        assert!(sql.contains("status IN ($1, $2)"), "{sql}");
        assert!(sql.contains("tenant = $3"), "{sql}");
        assert!(sql.ends_with("LIMIT $4"), "{sql}");
        assert!(matches!(args.last(), Some(Arg::Int(11))));
    }

    #[test]
    fn cursors_bound_the_creation_time_for_the_index() {
        let cursor = super::super::Cursor {
            created_at: crate::Timestamp::from_millis(5),
            id: crate::TaskId::new(),
        };
        let (sql, _) = select(&JobQuery::new().after(Some(cursor)));
        assert!(
            sql.contains("created_at <= $1 AND (created_at < $2 OR id < $3)"),
            "{sql}"
        );
        let (sql, _) = select(&JobQuery::new().after(Some(cursor)).oldest_first());
        assert!(
            sql.contains("created_at >= $1 AND (created_at > $2 OR id > $3)"),
            "{sql}"
        );
    }

    #[test]
    fn id_prefixes_are_a_key_range() {
        let prefix = "0193a7c4-5e".parse().unwrap();
        let (sql, args) = select(&JobQuery::new().id_prefix(prefix));
        assert!(sql.contains("id >= $1 AND id <= $2"), "{sql}");
        let bounds: Vec<String> = args
            .iter()
            .filter_map(|a| match a {
                Arg::Id(id) => Some(id.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            bounds,
            [
                "0193a7c4-5e00-0000-0000-000000000000",
                "0193a7c4-5eff-ffff-ffff-ffffffffffff"
            ]
        );
    }

    #[test]
    fn one_event_per_task_attempt_and_transition() {
        let id = uuid::Uuid::now_v7();
        let event = |attempt, transition, at| EventRow {
            id,
            attempt,
            transition,
            at,
            worker: None,
            error: None,
        };
        let rows = vec![
            event(1, JobTransition::Running, 10),
            event(1, JobTransition::Running, 30),
            event(1, JobTransition::Running, 20),
            event(2, JobTransition::Running, 5),
            event(1, JobTransition::Retrying, 40),
        ];
        let kept: Vec<(i32, JobTransition, i64)> = distinct_events(rows)
            .iter()
            .map(|e| (e.attempt, e.transition, e.at))
            .collect();
        assert_eq!(
            kept,
            [
                (1, JobTransition::Running, 30),
                (1, JobTransition::Retrying, 40),
                (2, JobTransition::Running, 5),
            ]
        );
    }
}
