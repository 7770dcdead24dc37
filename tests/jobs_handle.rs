//! Task handles end to end: a store-backed client enqueues, a worker with the
//! same store runs the task, and the handle follows it through Redis
//! notifications and the job store (SQLite in a temporary file, and
//! PostgreSQL in a database of its own).
//!
//! PostgreSQL is `SPOOL_TEST_POSTGRES_URL` (an admin connection that may
//! create databases), by default `postgres://postgres@127.0.0.1:5432/postgres`;
//! with `SPOOL_SKIP_POSTGRES=1`, the PostgreSQL test passes without running
//! when the server cannot be reached.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use spool_broker::store::JobStore;
use spool_broker::{JobStatus, Progress, RedisBroker, Task, TaskOptions};
use spool_sdk::{Client, Error};
use spool_tests::{RunningWorker, TestRedis, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};
use tokio::time::Instant;

#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Info {
    path: String,
    width: u32,
    height: u32,
    codecs: Vec<String>,
}

impl Task for Probe {
    const NAME: &'static str = "test.handle.probe";
    type Output = Info;
}

async fn probe(task: Probe, _ctx: TaskContext) -> Result<Info, TaskError> {
    Ok(Info {
        path: task.path,
        width: 1920,
        height: 1080,
        codecs: vec!["h264".into(), "aac".into()],
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct Corrupt;

impl Task for Corrupt {
    const NAME: &'static str = "test.handle.corrupt";
    type Output = u32;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            ..TaskOptions::default()
        }
    }
}

async fn corrupt(_task: Corrupt, _ctx: TaskContext) -> Result<u32, TaskError> {
    Err(TaskError::fail("moov atom not found"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Encode {
    step_ms: u64,
}

impl Task for Encode {
    const NAME: &'static str = "test.handle.encode";
    type Output = ();
}

async fn encode(task: Encode, ctx: TaskContext) -> Result<(), TaskError> {
    for step in 0..=10_u8 {
        ctx.progress(Progress {
            stage: Some("encode 720p".into()),
            ..Progress::percent(f32::from(step) * 10.0)
        });
        tokio::time::sleep(Duration::from_millis(task.step_ms)).await;
    }
    Ok(())
}

fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        prefetch: 4,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// A worker recording to `store`, running every task type of this suite.
fn worker(redis: &TestRedis, store: &JobStore) -> RunningWorker {
    let worker = Worker::new(redis.broker.clone(), config())
        .with_store(store.clone())
        .register::<Probe, _>(probe)
        .register::<Corrupt, _>(corrupt)
        .register::<Encode, _>(encode);
    spawn_worker(worker)
}

/// A job store of the test's own, deleted by [`TestStore::destroy`].
#[derive(Debug)]
struct TestStore {
    store: JobStore,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Dir(PathBuf),
    Database { admin_url: String, name: String },
}

fn tag() -> String {
    format!("{}_{:08x}", std::process::id(), fastrand::u32(..))
}

impl TestStore {
    /// A SQLite file in a fresh temporary directory.
    async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("spool-handle-{}", tag()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("jobs.db").display());
        let store = JobStore::create(&url).await.unwrap();
        Self {
            store,
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// A fresh PostgreSQL database (the store creates it on first use), or
    /// `None` when PostgreSQL is unreachable and `SPOOL_SKIP_POSTGRES=1`.
    async fn postgres() -> Option<Self> {
        let admin_url = std::env::var("SPOOL_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("spool_handle_{}", tag());
        let url = with_database(&admin_url, &name);
        match JobStore::create(&url).await {
            Ok(store) => Some(Self {
                store,
                cleanup: Cleanup::Database { admin_url, name },
            }),
            Err(e) if std::env::var("SPOOL_SKIP_POSTGRES").is_ok_and(|v| v == "1") => {
                eprintln!("skipping: PostgreSQL unreachable at {admin_url}: {e}");
                None
            }
            Err(e) => panic!(
                "PostgreSQL is not reachable at {admin_url}: {e}\n\
                 Start it (SPOOL_WITH_POSTGRES=1 ops/scripts/setup.sh), point \
                 SPOOL_TEST_POSTGRES_URL at one, or set SPOOL_SKIP_POSTGRES=1."
            ),
        }
    }

    /// Closes the store and deletes its file or database.
    async fn destroy(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Database { admin_url, name } => {
                // The suite has no SQL client of its own: `psql` drops it.
                let dropped = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("psql")
                        .arg(&admin_url)
                        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
                        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .status()
                        .map(|status| (status.success(), name))
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap();
                match dropped {
                    Ok((true, _)) => {}
                    Ok((false, name)) => eprintln!("warning: could not drop database {name}"),
                    Err(e) => eprintln!("warning: psql did not run ({e}); a test database is left"),
                }
            }
        }
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn client(redis: &TestRedis, store: &JobStore) -> Client<RedisBroker> {
    redis.client().with_store(store.clone())
}

/// Enqueue, run, wait: the typed output comes back and the record says
/// `succeeded`.
async fn lifecycle(store: &TestStore) {
    let redis = TestRedis::new().await;
    let client = client(&redis, &store.store);
    let id = client
        .enqueue(Probe {
            path: "uploads/cat.mp4".into(),
        })
        .await
        .unwrap();
    let handle = client.task::<Probe>(id).unwrap();
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Queued));

    let running = worker(&redis, &store.store);
    let info = handle.wait(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        info,
        Info {
            path: "uploads/cat.mp4".into(),
            width: 1920,
            height: 1080,
            codecs: vec!["h264".into(), "aac".into()],
        }
    );
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Succeeded));
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(record.attempts, 1);
    assert!(record.worker.is_some(), "{record:?}");
    assert!(record.error.is_none(), "{record:?}");

    running.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_the_typed_output_on_sqlite() {
    let store = TestStore::sqlite().await;
    lifecycle(&store).await;
    store.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_the_typed_output_on_postgres() {
    let Some(store) = TestStore::postgres().await else {
        return;
    };
    lifecycle(&store).await;
    store.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reports_a_task_that_failed_for_good() {
    let store = TestStore::sqlite().await;
    let redis = TestRedis::new().await;
    let client = client(&redis, &store.store);
    let id = client.enqueue(Corrupt).await.unwrap();
    let handle = client.task::<Corrupt>(id).unwrap();
    let running = worker(&redis, &store.store);

    let err = handle.wait(Duration::from_secs(20)).await.unwrap_err();
    match &err {
        Error::TaskFailed { status, error } => {
            assert_eq!(*status, JobStatus::Failed);
            let error = error.as_deref().unwrap_or_default();
            assert!(error.contains("moov atom not found"), "{error:?}");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("moov atom not found"), "{err}");
    // A final failure: no retry, one attempt.
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.attempts),
        (JobStatus::Failed, 1),
        "{record:?}"
    );

    running.stop().await;
    redis.cleanup().await;
    store.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out_promptly_when_nobody_runs_the_task() {
    let store = TestStore::sqlite().await;
    let redis = TestRedis::new().await;
    let client = client(&redis, &store.store);
    let id = client
        .enqueue(Probe {
            path: "nobody.mp4".into(),
        })
        .await
        .unwrap();
    let handle = client.task::<Probe>(id).unwrap();

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = handle.wait(timeout).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Timeout(t) if t == timeout), "{err:?}");
    assert!(took >= timeout, "returned early, after {took:?}");
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Queued));

    redis.cleanup().await;
    store.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_streams_increasing_reports_and_ends_with_the_task() {
    let store = TestStore::sqlite().await;
    let redis = TestRedis::new().await;
    let client = client(&redis, &store.store);
    let id = client.enqueue(Encode { step_ms: 40 }).await.unwrap();
    let handle = client.task::<Encode>(id).unwrap();
    // Subscribed before the task starts: no report is missed.
    let progress = handle.progress().await.unwrap();
    let running = worker(&redis, &store.store);

    let reports = tokio::time::timeout(Duration::from_secs(20), progress.collect::<Vec<_>>())
        .await
        .expect("the progress stream did not end with the task");
    let percents: Vec<f32> = reports.iter().map(|p| p.percent).collect();
    assert!(percents.len() >= 5, "too few reports: {percents:?}");
    assert!(
        percents.windows(2).all(|w| w[0] < w[1]),
        "not increasing: {percents:?}"
    );
    assert!(
        percents
            .iter()
            .all(|p| (0.0..=100.0).contains(p) && p % 10.0 == 0.0),
        "{percents:?}"
    );
    assert!(
        reports
            .iter()
            .all(|p| p.stage.as_deref() == Some("encode 720p"))
    );
    // The stream ended because the task finished.
    handle.wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Succeeded));

    running.stop().await;
    redis.cleanup().await;
    store.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_on_a_finished_task_reads_the_store_at_once() {
    let store = TestStore::sqlite().await;
    let redis = TestRedis::new().await;
    let client = client(&redis, &store.store);
    let probe_id = client
        .enqueue(Probe {
            path: "done.mp4".into(),
        })
        .await
        .unwrap();
    let unit_id = client.enqueue(Encode { step_ms: 0 }).await.unwrap();

    let running = worker(&redis, &store.store);
    let first = client.task::<Probe>(probe_id).unwrap();
    let expected = first.wait(Duration::from_secs(20)).await.unwrap();
    client
        .task::<Encode>(unit_id)
        .unwrap()
        .wait(Duration::from_secs(20))
        .await
        .unwrap();
    running.stop().await;

    // Long finished, its event long gone: new handles find the outcome in
    // the store without waiting.
    let started = Instant::now();
    let again = client
        .task::<Probe>(probe_id)
        .unwrap()
        .wait(Duration::from_secs(20))
        .await
        .unwrap();
    client
        .task::<Encode>(unit_id)
        .unwrap()
        .wait(Duration::from_secs(20))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(again, expected);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let progress = client
        .task::<Encode>(unit_id)
        .unwrap()
        .progress()
        .await
        .unwrap();
    let reports = tokio::time::timeout(Duration::from_secs(1), progress.collect::<Vec<_>>())
        .await
        .expect("the progress of a finished task is empty");
    assert!(reports.is_empty(), "{reports:?}");

    redis.cleanup().await;
    store.destroy().await;
}
