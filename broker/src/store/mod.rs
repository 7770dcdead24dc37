//! The job store: every task's life recorded in SQL, for the inspection CLI,
//! dashboards and `TaskHandle`s.
//!
//! The record types ([`Finished`], [`Started`], [`JobRecord`]...) are
//! always here, so the runtime can build them; the store itself is what
//! compiles sqlx, behind a feature per backend: `sqlite` (a bundled C
//! SQLite) and `postgres`, both on by default.
//!
//! Redis stays the source of truth for delivery; the store is the history
//! and the queryable view. SQLite (one file) is the
//! embedded default; PostgreSQL is chosen by URL. Both run the same SQL
//! and pass the same tests; the schema ships with this crate as migrations
//! (`migrations/sqlite`, `migrations/postgres`) that [`JobStore::create`]
//! applies (`spoolctl store migrate`); [`JobStore::connect`] opens only a
//! store created so.
//!
//! # Writing
//!
//! Writes come in batches, one transaction per call, as multi-row upserts:
//! the worker's settler records every outcome it has gathered (up to 4096)
//! with one [`JobStore::record_outcomes`] call before it acknowledges them.
//! Each task has one row, keyed by its id. Every write carries a revision,
//! `attempt * 4 + stage` (0 before a run, 1 running, 2 retrying, 3 final),
//! and applies only if it is at least the stored one, so:
//!
//! - a re-delivered task updates its one row, never adds a second;
//! - a stale attempt never overwrites a newer outcome, whatever order the
//!   writes arrive in;
//! - a final status is never replaced by a live one of the same attempt.
//!
//! Which transitions a task type records is up to the caller's
//! [`RecordPolicy`].
//!
//! # Timelines
//!
//! Each write also appends its transitions to the task's timeline
//! ([`JobStore::events`]), in the same transaction and with one more
//! multi-row statement per chunk: one event per attempt and transition
//! (`queued`, `running`, `retrying`, `succeeded`…), keyed so that a
//! redelivered write replaces its event rather than adding a second.
//! Unlike the record, which keeps the latest attempt, the timeline keeps
//! them all. Deleting a record (retention) deletes its events.
//!
//! # Searching
//!
//! [`JobStore::query`] filters by id prefix, status, queue, tenant, name
//! and creation time, and pages newest or oldest first with keyset
//! cursors. Each common filter has an index ending in the page order
//! (`created_at`, `id`), so a page costs about the same at any depth; see
//! `docs/benchmarks.md` ("Job store search") for the figures at a
//! million records.
//!
//! # Examples
//!
//! ```
//! use spool_broker::store::{Finished, JobStatus, JobStore};
//! use spool_broker::{Envelope, QueueName, Timestamp, encode_payload};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let store = JobStore::connect("sqlite::memory:").await?;
//! let envelope = Envelope::new("video.probe", QueueName::DEFAULT, Vec::new());
//!
//! let mut done = Finished::from_envelope(&envelope, JobStatus::Succeeded, Timestamp::now());
//! done.result = Some(encode_payload(&1080_u32)?);
//! store.record_outcomes(&[done]).await?;
//!
//! let record = store.get(envelope.id).await?.expect("recorded");
//! assert_eq!(record.status, JobStatus::Succeeded);
//! assert_eq!(record.output::<u32>()?, Some(1080));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "store")]
mod connect;
#[cfg(feature = "store")]
mod db_error;
mod json;
#[cfg(feature = "store")]
mod row;
#[cfg(feature = "store")]
mod sql;
mod types;
mod workflows;

#[cfg(feature = "store")]
use std::sync::Arc;
#[cfg(feature = "store")]
use std::time::Duration;

#[cfg(feature = "store")]
use sqlx::AssertSqlSafe;
#[cfg(feature = "postgres")]
use sqlx::postgres::PgPool;
#[cfg(feature = "sqlite")]
use sqlx::sqlite::SqlitePool;

#[cfg(feature = "postgres")]
use self::connect::connect_postgres;
#[cfg(feature = "sqlite")]
use self::connect::connect_sqlite;
#[cfg(feature = "store")]
use self::connect::{Open, migrator, redact};
#[cfg(feature = "store")]
pub use self::connect::{StoreBackend, StoreOptions};
#[cfg(feature = "store")]
use self::db_error::{StoreError, db_error, name_store};
pub(crate) use self::json::msgpack_to_json_as;
#[cfg(feature = "store")]
pub(crate) use self::row::millis;
#[cfg(feature = "store")]
use self::row::{attempt_code, decode_record, pid_code, priority_code};
#[cfg(feature = "store")]
use self::sql::{Arg, EventRow, Write};
pub use self::types::{
    Cursor, DEFAULT_PAGE_SIZE, EVENT_ERROR_LEN, Finished, IdPrefix, JobEvent, JobQuery, JobRecord,
    JobStatus, JobTransition, MAX_PAGE_SIZE, NewJob, Page, Progress, ProgressUpdate, RecordPolicy,
    Started, WorkerId,
};
pub use self::workflows::{
    DEFAULT_WORKFLOW_LIMIT, NodeRecord, NodeRecordState, NodeTransition, OUTPUT_SUMMARY_LEN,
    WorkflowQuery, WorkflowRecord, WorkflowRecordStatus,
};
#[cfg(feature = "store")]
use crate::envelope::{TaskId, Timestamp};
#[cfg(feature = "store")]
use crate::error::{Error, Result};
#[cfg(feature = "store")]
use crate::queue::QueueName;

/// The store the worker and the CLI use when none is configured: a SQLite
/// file in the working directory.
#[cfg(feature = "store")]
pub const DEFAULT_STORE_URL: &str = "sqlite://spool.db";

/// The job store: a cheap-to-clone handle on a SQLite or PostgreSQL pool.
///
/// See the [module documentation](self) for how writes stay idempotent.
#[cfg(feature = "store")]
#[derive(Clone, Debug)]
pub struct JobStore {
    inner: Arc<Inner>,
}

#[cfg(feature = "store")]
#[derive(Debug)]
enum Inner {
    #[cfg(feature = "sqlite")]
    Sqlite {
        pool: SqlitePool,
        /// SQLite takes one writer at a time. Queuing this process's writers
        /// here keeps them from sleeping in SQLite's busy handler, which
        /// backs off in steps of up to 100 ms; other processes still wait
        /// there.
        write_lock: tokio::sync::Mutex<()>,
    },
    #[cfg(feature = "postgres")]
    Postgres { pool: PgPool },
}

/// Runs `$body` in one write transaction `$tx`, committed at its end: on
/// SQLite `BEGIN IMMEDIATE` (the write lock up front, so waiting happens in
/// the busy handler rather than failing on a lock upgrade), on PostgreSQL a
/// plain `BEGIN`. `$body` is compiled once per backend.
#[cfg(feature = "store")]
macro_rules! write_tx {
    ($store:expr, $what:literal, |$tx:ident| $body:block) => {
        match &*$store.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite { pool, write_lock } => {
                let _serialized = write_lock.lock().await;
                let mut $tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| db_error($what, e))?;
                $body
                $tx.commit().await.map_err(|e| db_error($what, e))?;
            }
            #[cfg(feature = "postgres")]
            Inner::Postgres { pool } => {
                let mut $tx = pool.begin().await.map_err(|e| db_error($what, e))?;
                $body
                $tx.commit().await.map_err(|e| db_error($what, e))?;
            }
        }
    };
}

/// Appends the timeline rows `$events` (from [`sql::distinct_events`]) in
/// the write transaction `$tx`: one more multi-row statement per chunk of
/// the write it goes with.
#[cfg(feature = "store")]
macro_rules! insert_events {
    ($store:expr, $tx:ident, $events:expr, $what:literal) => {
        for chunk in sql::chunks($events) {
            let mut query = sqlx::query(Write::Events.sql($store.backend(), chunk.len()));
            for event in chunk {
                query = query
                    .bind(event.id)
                    .bind(event.attempt)
                    .bind(event.transition.as_str())
                    .bind(event.at)
                    .bind(event.worker.map(|(host, _)| host))
                    .bind(event.worker.map(|(_, pid)| pid))
                    .bind(event.error);
            }
            query
                .execute(&mut *$tx)
                .await
                .map_err(|e| db_error($what, e))?;
        }
    };
}

/// Evaluates `$body` with `$pool` bound to the backend's pool; `$body` is
/// compiled once per backend.
#[cfg(feature = "store")]
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &*$store.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite { pool: $pool, .. } => $body,
            #[cfg(feature = "postgres")]
            Inner::Postgres { pool: $pool } => $body,
        }
    };
}

// After the macros, which it uses.
#[cfg(feature = "store")]
mod workflow_sql;

#[cfg(feature = "store")]
impl JobStore {
    /// Opens the existing store at `url` with default [`StoreOptions`].
    /// Nothing is created or migrated: a store is created, and upgraded to
    /// a newer schema, only by [`JobStore::create`] (`spoolctl store
    /// migrate`), so a mistyped URL is an error rather than a new, empty
    /// store.
    ///
    /// - `sqlite://path/to/spool.db` (or `sqlite:path`): an existing file,
    ///   opened in WAL mode with `synchronous=NORMAL` and a busy timeout,
    ///   so that several worker processes can write to it at once.
    /// - `sqlite::memory:`: a private in-memory database, for tests; it is
    ///   always created with the schema.
    /// - `postgres://user@host/database` (or `postgresql://…`): an existing
    ///   database.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL, a database or SQLite file
    /// (or its directory) that does not exist, or a database without
    /// Spool's current schema; [`Error::StoreUnavailable`] when the database
    /// cannot be reached (transient); [`Error::Store`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// use spool_broker::store::{JobStore, StoreBackend};
    ///
    /// let store = JobStore::connect("sqlite::memory:").await?;
    /// assert_eq!(store.backend(), StoreBackend::Sqlite);
    /// assert!(JobStore::connect("sqlite:///no/such/dir/spool.db").await.is_err());
    /// # Ok::<(), spool_broker::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    /// Like [`JobStore::connect`], with explicit pool settings.
    ///
    /// # Errors
    ///
    /// As [`JobStore::connect`].
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Self> {
        let opened = async {
            let store = Self::open(url, options, Open::Existing).await?;
            if url.contains(":memory:") || url.contains("mode=memory") {
                store.migrate().await?;
            } else {
                store.check_schema(url).await?;
            }
            Ok(store)
        };
        opened.await.map_err(|e| name_store(e, url))
    }

    /// Creates the store at `url` if it does not exist (a SQLite file, in
    /// a directory that must exist; a PostgreSQL database, which takes the
    /// CREATEDB privilege) and applies the migrations it lacks. This is
    /// what `spoolctl store migrate` runs; it is safe to run again, and
    /// from several processes at once.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL or a missing directory,
    /// [`Error::StoreUnavailable`] when the database cannot be reached
    /// (transient), and [`Error::Store`] when a migration fails.
    pub async fn create(url: &str) -> Result<Self> {
        Self::create_with(url, &StoreOptions::default()).await
    }

    /// Like [`JobStore::create`], with explicit pool settings.
    ///
    /// # Errors
    ///
    /// As [`JobStore::create`].
    pub async fn create_with(url: &str, options: &StoreOptions) -> Result<Self> {
        let created = async {
            let store = Self::open(url, options, Open::Create).await?;
            store.migrate().await?;
            Ok(store)
        };
        created.await.map_err(|e| name_store(e, url))
    }

    async fn open(url: &str, options: &StoreOptions, open: Open) -> Result<Self> {
        let inner = match StoreBackend::of_url(url)? {
            #[cfg(feature = "sqlite")]
            StoreBackend::Sqlite => connect_sqlite(url, options, open).await?,
            #[cfg(feature = "postgres")]
            StoreBackend::Postgres => connect_postgres(url, options, open).await?,
            #[allow(unreachable_patterns, reason = "reachable only without a backend")]
            missing => {
                return Err(Error::Config(format!(
                    "job store {}: this build has no {missing} support (spool-broker's `{missing}` \
                     feature)",
                    redact(url)
                )));
            }
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Fails unless the database has every migration this build ships.
    async fn check_schema(&self, url: &str) -> Result<()> {
        let latest = migrator(self.backend())
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        let exists_sql = match self.backend() {
            StoreBackend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'spool_migrations'"
            }
            StoreBackend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'spool_migrations'"
            }
        };
        let what = "read the schema version";
        let tables: i64 = with_pool!(self, |pool| sqlx::query_scalar(exists_sql)
            .fetch_one(pool)
            .await
            .map_err(|e| db_error(what, e)))?;
        let applied: Option<i64> = if tables == 0 {
            None
        } else {
            let sql = "SELECT MAX(version) FROM spool_migrations WHERE success";
            with_pool!(self, |pool| sqlx::query_scalar(sql)
                .fetch_one(pool)
                .await
                .map_err(|e| db_error(what, e)))?
        };
        let problem = match applied {
            Some(version) if version >= latest => return Ok(()),
            Some(version) => format!("has schema version {version}, this Spool needs {latest}"),
            None => "has no Spool schema".to_owned(),
        };
        Err(Error::Config(format!(
            "job store {} {problem}; run `spoolctl store migrate --store-url URL` first",
            redact(url)
        )))
    }

    /// Which database this store writes to.
    #[must_use]
    pub fn backend(&self) -> StoreBackend {
        match &*self.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite { .. } => StoreBackend::Sqlite,
            #[cfg(feature = "postgres")]
            Inner::Postgres { .. } => StoreBackend::Postgres,
        }
    }

    /// Closes every connection, waiting for writes in flight. Later calls
    /// on any clone fail with [`Error::Closed`].
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await);
    }

    /// Applies the migrations this database lacks. Two processes that
    /// connect to a new SQLite file at once may race to create it; the loser
    /// finds the work done when it tries again.
    async fn migrate(&self) -> Result<()> {
        let mut tries = 0;
        loop {
            let applied = with_pool!(self, |pool| migrator(self.backend()).run(pool).await);
            match applied {
                Ok(()) => return Ok(()),
                Err(_) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 * (1 << tries))).await;
                }
                Err(e) => {
                    return Err(Error::Store(Box::new(StoreError {
                        what: "migrate the database",
                        store: None,
                        source: sqlx::Error::Migrate(Box::new(e)),
                    })));
                }
            }
        }
    }

    /// Records tasks that were just enqueued, as `queued` (or `scheduled`,
    /// with an ETA). A task already recorded is left as it is.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] for a transient failure (unreachable, busy,
    /// deadlocked: retry the whole batch), [`Error::Store`] otherwise.
    /// Nothing of the batch is written then.
    pub async fn record_enqueued(&self, jobs: &[NewJob]) -> Result<()> {
        self.write_new(Write::Enqueued, jobs).await
    }

    /// Records tasks sent back for a fresh run with the same id (dead
    /// letters requeued by an operator, whose attempts count from 1
    /// again): each record is reset to `queued` (or `scheduled`) with no
    /// attempt, worker, times, progress or result, keeping its last error
    /// until the new run ends. Creates the records that do not exist.
    ///
    /// Without this reset, the new run's attempt 1 would rank below the
    /// old run's last attempt and its writes would be ignored.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_enqueued`].
    pub async fn record_requeued(&self, jobs: &[NewJob]) -> Result<()> {
        self.write_new(Write::Requeued, jobs).await
    }

    async fn write_new(&self, kind: Write, jobs: &[NewJob]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = millis(Timestamp::now());
        let events = sql::distinct_events(
            jobs.iter()
                .map(|job| EventRow {
                    id: *job.id.as_uuid(),
                    attempt: attempt_code(job.attempt),
                    transition: match kind {
                        Write::Requeued => JobTransition::Requeued,
                        _ => JobTransition::entering(job.status()),
                    },
                    at: match kind {
                        Write::Requeued => now,
                        _ => millis(job.created_at),
                    },
                    worker: None,
                    error: None,
                })
                .collect(),
        );
        let jobs = sql::latest_per_id(jobs, |j| (j.id, 0));
        write_tx!(self, "record enqueued tasks", |tx| {
            for chunk in sql::chunks(&jobs) {
                let mut query = sqlx::query(kind.sql(self.backend(), chunk.len()));
                for job in chunk {
                    query = query
                        .bind(*job.id.as_uuid())
                        .bind(job.name.as_str())
                        .bind(job.queue.as_str())
                        .bind(priority_code(job.priority))
                        .bind(job.tenant.as_deref())
                        .bind(job.status().as_str())
                        .bind(attempt_code(job.attempt.saturating_sub(1)))
                        .bind(types::revision(job.attempt, job.status()))
                        .bind(millis(job.created_at))
                        .bind(job.args.as_ref().map(serde_json::Value::to_string));
                }
                query
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("record enqueued tasks", e))?;
            }
            insert_events!(self, tx, &events, "record enqueued tasks");
        });
        Ok(())
    }

    /// Records attempts that workers have started: the record becomes
    /// `running` with its worker and start time, and loses the progress
    /// and end time of an earlier attempt. Creates the record if the
    /// producer did not. Ignored for a record that a later attempt, or a
    /// final outcome of this one, has already written.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_enqueued`].
    pub async fn record_started(&self, started: &[Started]) -> Result<()> {
        if started.is_empty() {
            return Ok(());
        }
        let events = sql::distinct_events(
            started
                .iter()
                .map(|s| EventRow {
                    id: *s.id.as_uuid(),
                    attempt: attempt_code(s.attempt),
                    transition: JobTransition::Running,
                    at: millis(s.started_at),
                    worker: Some((s.worker.host.as_str(), pid_code(s.worker.pid))),
                    error: None,
                })
                .collect(),
        );
        let started = sql::latest_per_id(started, |s| {
            (s.id, types::revision(s.attempt, JobStatus::Running))
        });
        write_tx!(self, "record started tasks", |tx| {
            for chunk in sql::chunks(&started) {
                let mut query = sqlx::query(Write::Started.sql(self.backend(), chunk.len()));
                for s in chunk {
                    query = query
                        .bind(*s.id.as_uuid())
                        .bind(s.name.as_str())
                        .bind(s.queue.as_str())
                        .bind(priority_code(s.priority))
                        .bind(s.tenant.as_deref())
                        .bind(JobStatus::Running.as_str())
                        .bind(attempt_code(s.attempt))
                        .bind(types::revision(s.attempt, JobStatus::Running))
                        .bind(s.worker.host.as_str())
                        .bind(pid_code(s.worker.pid))
                        .bind(millis(s.created_at))
                        .bind(millis(s.started_at));
                }
                query
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("record started tasks", e))?;
            }
            insert_events!(self, tx, &events, "record started tasks");
        });
        Ok(())
    }

    /// Records how attempts ended: status, result, error and end time.
    /// Creates the record if nothing was recorded before. Ignored for a
    /// record that a later attempt has already written, so outcomes may
    /// arrive in any order; of two outcomes of the same attempt (a task
    /// re-delivered while its first run was still going), the later write
    /// wins.
    ///
    /// This is the call the worker's settler makes for each group of
    /// outcomes, before acknowledging them with the broker.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_enqueued`]; also [`Error::Config`] for an
    /// outcome whose status is not one an attempt ends with (`queued`,
    /// `scheduled` or `running`).
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// use spool_broker::store::{Finished, JobStatus, JobStore};
    /// use spool_broker::{Envelope, QueueName, Timestamp};
    ///
    /// let store = JobStore::connect("sqlite::memory:").await?;
    /// let first = Envelope::new("video.transcode", QueueName::DEFAULT, Vec::new());
    /// let second = first.next_attempt(Timestamp::now());
    ///
    /// // The second attempt's success arrives before the first's failure.
    /// let won = Finished::from_envelope(&second, JobStatus::Succeeded, Timestamp::now());
    /// let mut stale = Finished::from_envelope(&first, JobStatus::Retrying, Timestamp::now());
    /// stale.error = Some("encoder crashed".into());
    /// store.record_outcomes(&[won]).await?;
    /// store.record_outcomes(&[stale]).await?;
    ///
    /// let record = store.get(first.id).await?.expect("recorded");
    /// assert_eq!((record.status, record.attempts), (JobStatus::Succeeded, 2));
    /// # Ok::<(), spool_broker::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn record_outcomes(&self, outcomes: &[Finished]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        if let Some(f) = outcomes.iter().find(|f| {
            matches!(
                f.status,
                JobStatus::Queued | JobStatus::Scheduled | JobStatus::Running
            )
        }) {
            return Err(Error::Config(format!(
                "task {} cannot end an attempt with status {}",
                f.id, f.status
            )));
        }
        let events = sql::distinct_events(
            outcomes
                .iter()
                .map(|f| EventRow {
                    id: *f.id.as_uuid(),
                    attempt: attempt_code(f.attempt),
                    transition: JobTransition::entering(f.status),
                    at: millis(f.finished_at),
                    worker: f
                        .worker
                        .as_ref()
                        .map(|w| (w.host.as_str(), pid_code(w.pid))),
                    error: f.error.as_deref().map(types::error_excerpt),
                })
                .collect(),
        );
        let outcomes =
            sql::latest_per_id(outcomes, |f| (f.id, types::revision(f.attempt, f.status)));
        write_tx!(self, "record outcomes", |tx| {
            for chunk in sql::chunks(&outcomes) {
                let mut query = sqlx::query(Write::Finished.sql(self.backend(), chunk.len()));
                for f in chunk {
                    query = query
                        .bind(*f.id.as_uuid())
                        .bind(f.name.as_str())
                        .bind(f.queue.as_str())
                        .bind(priority_code(f.priority))
                        .bind(f.tenant.as_deref())
                        .bind(f.status.as_str())
                        .bind(attempt_code(f.attempt))
                        .bind(types::revision(f.attempt, f.status))
                        .bind(f.worker.as_ref().map(|w| w.host.as_str()))
                        .bind(f.worker.as_ref().map(|w| pid_code(w.pid)))
                        .bind(millis(f.created_at))
                        .bind(f.started_at.map(millis))
                        .bind(millis(f.finished_at))
                        .bind(f.result.as_deref())
                        .bind(f.error.as_deref());
                }
                query
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("record outcomes", e))?;
            }
            insert_events!(self, tx, &events, "record outcomes");
        });
        Ok(())
    }

    /// Records a running task's progress. Ignored when the task has no
    /// record yet, when it finished, or when a later attempt started.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_enqueued`].
    pub async fn record_progress(
        &self,
        id: TaskId,
        attempt: u32,
        progress: &Progress,
    ) -> Result<()> {
        self.record_progress_many(&[ProgressUpdate {
            id,
            attempt,
            progress: progress.clone(),
        }])
        .await
    }

    /// Records many tasks' progress in one transaction, as
    /// [`JobStore::record_progress`] does for one.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_enqueued`].
    pub async fn record_progress_many(&self, updates: &[ProgressUpdate]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        write_tx!(self, "record progress", |tx| {
            for update in updates {
                let p = &update.progress;
                sqlx::query(sql::PROGRESS)
                    .bind(p.percent)
                    .bind(p.stage.as_deref())
                    .bind(p.message.as_deref())
                    .bind(p.fps)
                    .bind(p.eta_seconds)
                    .bind(*update.id.as_uuid())
                    .bind(attempt_code(update.attempt))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("record progress", e))?;
            }
        });
        Ok(())
    }

    /// The record of one task.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] for a transient failure, [`Error::Store`]
    /// otherwise, [`Error::Decode`] for a row this build cannot read.
    pub async fn get(&self, id: TaskId) -> Result<Option<JobRecord>> {
        with_pool!(self, |pool| {
            let row = sqlx::query(sql::GET)
                .bind(*id.as_uuid())
                .fetch_optional(pool)
                .await
                .map_err(|e| db_error("read a task", e))?;
            row.as_ref().map(decode_record).transpose()
        })
    }

    /// The timeline of one task: every transition of every attempt
    /// recorded ([`JobEvent`]), oldest first (ties in attempt order, then
    /// in the order of [`JobTransition::ALL`]). Empty for a task without
    /// a record, and for writes made before the store kept timelines
    /// (schema version 4). Events are deleted with their record.
    ///
    /// # Errors
    ///
    /// As [`JobStore::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// use spool_broker::store::{Finished, JobStatus, JobStore, JobTransition, Started, WorkerId};
    /// use spool_broker::{Envelope, QueueName, Timestamp};
    ///
    /// let store = JobStore::connect("sqlite::memory:").await?;
    /// let first = Envelope::new("video.transcode", QueueName::DEFAULT, Vec::new());
    /// let worker = WorkerId::new("gpu-1", 42);
    /// store.record_started(&[Started::from_envelope(&first, &worker, Timestamp::now())]).await?;
    /// let mut retry = Finished::from_envelope(&first, JobStatus::Retrying, Timestamp::now());
    /// retry.error = Some("encoder crashed".into());
    /// store.record_outcomes(&[retry]).await?;
    /// let second = first.next_attempt(None);
    /// store.record_outcomes(&[Finished::from_envelope(&second, JobStatus::Succeeded, Timestamp::now())]).await?;
    ///
    /// let timeline: Vec<(u32, JobTransition)> = store
    ///     .events(first.id)
    ///     .await?
    ///     .iter()
    ///     .map(|e| (e.attempt, e.transition))
    ///     .collect();
    /// assert_eq!(
    ///     timeline,
    ///     [(1, JobTransition::Running), (1, JobTransition::Retrying), (2, JobTransition::Succeeded)]
    /// );
    /// # Ok::<(), spool_broker::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn events(&self, id: TaskId) -> Result<Vec<JobEvent>> {
        type Row = (
            i32,
            String,
            i64,
            Option<String>,
            Option<i32>,
            Option<String>,
        );
        let rows: Vec<Row> = with_pool!(self, |pool| sqlx::query_as(sql::EVENTS)
            .bind(*id.as_uuid())
            .fetch_all(pool)
            .await
            .map_err(|e| db_error("read a task's events", e))?);
        let mut events = rows
            .into_iter()
            .map(|(attempt, transition, at, host, pid, error)| {
                Ok(JobEvent {
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    transition: transition.parse()?,
                    at: row::timestamp(at),
                    worker: host.map(|host| WorkerId {
                        host,
                        pid: pid.and_then(|pid| u32::try_from(pid).ok()).unwrap_or(0),
                    }),
                    error,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        events.sort_by_key(|e| (e.at, e.attempt, e.transition));
        Ok(events)
    }

    /// Just the status of one task: cheaper than [`JobStore::get`] when the
    /// result is not needed.
    ///
    /// # Errors
    ///
    /// As [`JobStore::get`].
    pub async fn status(&self, id: TaskId) -> Result<Option<JobStatus>> {
        let status: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar(sql::STATUS)
                .bind(*id.as_uuid())
                .fetch_optional(pool)
                .await
                .map_err(|e| db_error("read a task's status", e))?
        });
        status.as_deref().map(str::parse).transpose()
    }

    /// One page of the records that match `query`; pass its
    /// [`Page::next`] as the next query's `after` for the following page.
    /// Pages neither repeat nor skip records, even while new ones arrive.
    ///
    /// # Errors
    ///
    /// As [`JobStore::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// use spool_broker::store::{JobQuery, JobStatus, JobStore, NewJob};
    /// use spool_broker::{Envelope, QueueName};
    ///
    /// let store = JobStore::connect("sqlite::memory:").await?;
    /// let jobs: Vec<NewJob> = (0..5)
    ///     .map(|_| NewJob::from_envelope(&Envelope::new("ping", QueueName::DEFAULT, Vec::new())))
    ///     .collect();
    /// store.record_enqueued(&jobs).await?;
    ///
    /// let mut query = JobQuery::new().status([JobStatus::Queued]).limit(2);
    /// let mut seen = 0;
    /// loop {
    ///     let page = store.query(&query).await?;
    ///     seen += page.records.len();
    ///     match page.next {
    ///         Some(cursor) => query.after = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(seen, 5);
    /// # Ok::<(), spool_broker::Error>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn query(&self, query: &JobQuery) -> Result<Page> {
        let (sql, args) = sql::select(query);
        let mut records = with_pool!(self, |pool| {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for arg in &args {
                q = match arg {
                    Arg::Text(text) => q.bind(text.as_str()),
                    Arg::Int(int) => q.bind(*int),
                    Arg::Id(id) => q.bind(*id),
                };
            }
            let rows = q
                .fetch_all(pool)
                .await
                .map_err(|e| db_error("query tasks", e))?;
            rows.iter().map(decode_record).collect::<Result<Vec<_>>>()?
        });
        let size = query.page_size();
        let next = if records.len() > size {
            records.truncate(size);
            records.last().map(|r| Cursor {
                created_at: r.created_at,
                id: r.id,
            })
        } else {
            None
        };
        Ok(Page { records, next })
    }

    /// The database's plan for [`JobStore::query`] of `query`, one line per
    /// step (PostgreSQL's `EXPLAIN`, SQLite's `EXPLAIN QUERY PLAN`), to see
    /// which filters an index serves and which scan or sort the table.
    /// Nothing is run but the planner.
    ///
    /// # Errors
    ///
    /// As [`JobStore::get`].
    pub async fn explain(&self, query: &JobQuery) -> Result<Vec<String>> {
        let (sql, args) = sql::select(query);
        let prefix = match self.backend() {
            StoreBackend::Sqlite => "EXPLAIN QUERY PLAN ",
            StoreBackend::Postgres => "EXPLAIN ",
        };
        let what = "explain a task query";
        let lines = match &*self.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite { pool, .. } => {
                let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(AssertSqlSafe(format!(
                    "{prefix}{sql}"
                )));
                for arg in &args {
                    q = match arg {
                        Arg::Text(text) => q.bind(text.as_str()),
                        Arg::Int(int) => q.bind(*int),
                        Arg::Id(id) => q.bind(*id),
                    };
                }
                let rows = q.fetch_all(pool).await.map_err(|e| db_error(what, e))?;
                rows.into_iter().map(|(_, _, _, detail)| detail).collect()
            }
            #[cfg(feature = "postgres")]
            Inner::Postgres { pool } => {
                let mut q =
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(format!("{prefix}{sql}")));
                for arg in &args {
                    q = match arg {
                        Arg::Text(text) => q.bind(text.as_str()),
                        Arg::Int(int) => q.bind(*int),
                        Arg::Id(id) => q.bind(*id),
                    };
                }
                q.fetch_all(pool).await.map_err(|e| db_error(what, e))?
            }
        };
        Ok(lines)
    }

    /// How many records have each status, in one queue or in all; statuses
    /// without records are left out.
    ///
    /// # Errors
    ///
    /// As [`JobStore::get`].
    pub async fn count_by_status(
        &self,
        queue: Option<&QueueName>,
    ) -> Result<Vec<(JobStatus, u64)>> {
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            match queue {
                Some(queue) => sqlx::query_as(sql::COUNT_BY_STATUS_IN_QUEUE).bind(queue.as_str()),
                None => sqlx::query_as(sql::COUNT_BY_STATUS),
            }
            .fetch_all(pool)
            .await
            .map_err(|e| db_error("count tasks", e))?
        });
        let mut counts = rows
            .into_iter()
            .map(|(status, count)| {
                Ok((
                    status.parse::<JobStatus>()?,
                    u64::try_from(count).unwrap_or(0),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        counts.sort_unstable();
        Ok(counts)
    }

    /// Retention: deletes the records of tasks that finished (succeeded,
    /// failed, dead, revoked, expired) more than `older_than` ago, `batch`
    /// rows per statement so that writers are never held up for long.
    /// Returns how many were deleted. Live records are never deleted.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_enqueued`]; batches deleted before the error
    /// stay deleted.
    pub async fn prune(&self, older_than: Duration, batch: usize) -> Result<u64> {
        let age = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
        let cutoff = Timestamp::from_millis(Timestamp::now().as_millis().saturating_sub(age));
        self.prune_finished_before(cutoff, batch).await
    }

    /// Like [`JobStore::prune`], with an explicit cutoff: deletes the
    /// records of tasks that finished before `cutoff`.
    ///
    /// # Errors
    ///
    /// As [`JobStore::prune`].
    pub async fn prune_finished_before(&self, cutoff: Timestamp, batch: usize) -> Result<u64> {
        let batch = batch.max(1);
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let deleted = match &*self.inner {
                #[cfg(feature = "sqlite")]
                Inner::Sqlite { pool, write_lock } => {
                    let _serialized = write_lock.lock().await;
                    sqlx::query(sql::PRUNE)
                        .bind(millis(cutoff))
                        .bind(limit)
                        .execute(pool)
                        .await
                        .map_err(|e| db_error("prune tasks", e))?
                        .rows_affected()
                }
                #[cfg(feature = "postgres")]
                Inner::Postgres { pool } => sqlx::query(sql::PRUNE)
                    .bind(millis(cutoff))
                    .bind(limit)
                    .execute(pool)
                    .await
                    .map_err(|e| db_error("prune tasks", e))?
                    .rows_affected(),
            };
            total += deleted;
            if deleted < batch as u64 {
                return Ok(total);
            }
        }
    }
}

#[cfg(all(test, feature = "store"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outcomes_must_end_an_attempt() {
        let store = JobStore::connect("sqlite::memory:").await.unwrap();
        let envelope = crate::Envelope::new("x", QueueName::DEFAULT, Vec::new());
        let running = Finished::from_envelope(&envelope, JobStatus::Running, Timestamp::now());
        assert!(matches!(
            store.record_outcomes(&[running]).await,
            Err(Error::Config(_))
        ));
    }
}
