//! Bad input aimed at the job store: a store that stops taking writes for
//! longer than the visibility timeout costs time, never a task.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::store::{JobStatus, JobStore, StoreOptions};
use spool_broker::{QueueName, Task, TaskId};
use spool_tests::{TestRedis, short_lease_config, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

#[derive(Debug, Serialize, Deserialize)]
struct Count {
    n: u32,
}

impl Task for Count {
    const NAME: &'static str = "test.store_outage.count";
    type Output = u32;
}

/// A fresh SQLite job store in its own directory, with a short busy
/// timeout so that writes fail quickly while the file is locked.
async fn sqlite_store() -> (JobStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "spool-store-outage-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs.db");
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let url = format!("sqlite://{}", path.display());
    let store = JobStore::create_with(&url, &options).await.unwrap();
    (store, path)
}

/// With the SQLite file held by another connection's exclusive lock for
/// far longer than the visibility timeout, the worker stops taking new
/// work, keeps the leases of the tasks it ran, and records them once the
/// lock goes: every task succeeds exactly once, none is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_pauses_the_worker_and_loses_nothing() {
    let redis = TestRedis::new().await;
    let (store, path) = sqlite_store().await;
    let queue = QueueName::DEFAULT;

    // Another process writing: it holds the only write lock.
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap();
    let mut locker = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();

    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let counted = Arc::clone(&runs);
    let worker = Worker::new(redis.broker.clone(), short_lease_config("outage"))
        .register::<Count, _>(move |task: Count, _ctx: TaskContext| {
            let runs = Arc::clone(&counted);
            async move {
                *runs.lock().unwrap().entry(task.n).or_default() += 1;
                Ok::<_, TaskError>(task.n)
            }
        })
        .with_store(store.clone());
    let running = spawn_worker(worker);

    let client = redis.client();
    let mut ids: Vec<TaskId> = Vec::new();
    for n in 0..4 {
        ids.push(client.enqueue(Count { n }).await.unwrap());
    }
    let ran = |runs: &Arc<Mutex<HashMap<u32, u32>>>, n: u32| {
        runs.lock().unwrap().get(&n).copied().unwrap_or(0)
    };
    wait_until("the first tasks to run", Duration::from_secs(10), || {
        let all = (0..4).all(|n| ran(&runs, n) > 0);
        async move { all }
    })
    .await;

    // Due well after the worker's first write has failed (500 ms of busy
    // timeout): a worker that cannot record must not start them.
    for n in 4..8 {
        let id = client
            .enqueue(Count { n })
            .countdown(Duration::from_secs(3))
            .await
            .unwrap();
        ids.push(id);
    }
    // Locked for ten visibility timeouts past their due time.
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(9)).await;
    let during: Vec<u32> = (4..8).filter(|&n| ran(&runs, n) > 0).collect();
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    drop(locker);
    assert!(
        during.is_empty(),
        "tasks {during:?} started while their outcomes could not be recorded"
    );

    running
        .wait_for("every task to succeed", Duration::from_secs(30), |c| {
            c.succeeded >= 8
        })
        .await;
    // Counted when run; recorded a moment later, by the settler.
    wait_until(
        "every outcome to be recorded",
        Duration::from_secs(30),
        || {
            let (store, ids) = (store.clone(), ids.clone());
            async move {
                for id in ids {
                    if store.status(id).await.unwrap() != Some(JobStatus::Succeeded) {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    let report = running.stop().await;
    assert_eq!(report.succeeded, 8, "{report:?}");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    let runs = runs.lock().unwrap().clone();
    assert!(runs.values().all(|&n| n == 1), "runs per task: {runs:?}");
    assert!(redis.dead_letters(&queue).await.is_empty());
    assert_eq!(redis.stats(&queue).await.ready_total(), 0);
    redis.cleanup().await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Several tasks held together for many visibility timeouts keep every
/// lease: none is reclaimed (and run again) while its worker lives. The
/// renewal used to reach only the first entry of each stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lease_of_a_live_worker_is_renewed() {
    let redis = TestRedis::new().await;
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let counted = Arc::clone(&runs);
    let worker = Worker::new(redis.broker.clone(), short_lease_config("holder"))
        .register::<Count, _>(move |task: Count, _ctx: TaskContext| {
            let runs = Arc::clone(&counted);
            async move {
                *runs.lock().unwrap().entry(task.n).or_default() += 1;
                // Four visibility timeouts.
                tokio::time::sleep(Duration::from_millis(2400)).await;
                Ok::<_, TaskError>(task.n)
            }
        });
    let running = spawn_worker(worker);
    let ids = redis
        .client()
        .enqueue_many((0..4).map(|n| Count { n }))
        .await
        .unwrap();
    running
        .wait_for("the tasks to finish", Duration::from_secs(30), |c| {
            c.succeeded + c.abandoned >= 4
        })
        .await;
    let report = running.stop().await;
    assert_eq!(ids.len(), 4);
    assert_eq!(report.succeeded, 4, "{report:?}");
    assert_eq!(report.abandoned, 0, "{report:?}");
    let runs = runs.lock().unwrap().clone();
    assert!(runs.values().all(|&n| n == 1), "runs per task: {runs:?}");
    redis.cleanup().await;
}

/// Runs `spoolctl` with `args`; returns its exit code and stderr.
fn spoolctl(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(spool_tests::bins::spoolctl())
        .args(args)
        .env_remove("SPOOL_STORE_URL")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Readers never create a store: `spoolctl tasks` against a SQLite file in
/// a missing directory, or a missing file, fails naming the path and
/// leaves nothing behind; `spoolctl store migrate` creates the store, and
/// then it reads.
#[test]
fn spoolctl_reads_only_stores_that_exist() {
    let dir = std::env::temp_dir().join(format!(
        "spool-no-store-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let nested = dir.join("missing").join("jobs.db");
    let url = format!("sqlite://{}", nested.display());
    let (code, stderr) = spoolctl(&["tasks", "--store-url", &url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&dir.join("missing").display().to_string()),
        "{stderr}"
    );
    assert!(!dir.exists(), "a reader created {}", dir.display());

    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jobs.db");
    let url = format!("sqlite://{}", path.display());
    let (code, stderr) = spoolctl(&["tasks", "--store-url", &url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("spoolctl store migrate"),
        "{stderr}"
    );
    assert!(!path.exists(), "a reader created {}", path.display());

    let (code, stderr) = spoolctl(&["store", "migrate", "--store-url", &url]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = spoolctl(&["tasks", "--store-url", &url]);
    assert_eq!(code, Some(0), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Nor is a PostgreSQL database created by a reader.
#[tokio::test]
async fn spoolctl_does_not_create_a_postgres_database() {
    if std::env::var("SPOOL_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("skipping: SPOOL_SKIP_POSTGRES=1");
        return;
    }
    let admin = std::env::var("SPOOL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!(
        "spool_no_store_{}_{:08x}",
        std::process::id(),
        fastrand::u32(..)
    );
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("{admin} names no database"),
    };
    let (code, stderr) = spoolctl(&["tasks", "--store-url", &url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&name) && stderr.contains("does not exist"),
        "{stderr}"
    );
    use sqlx::migrate::MigrateDatabase;
    assert!(
        !sqlx::Postgres::database_exists(&url).await.unwrap(),
        "{name} was created"
    );
}

/// A PostgreSQL job store on a port where nothing listens is reported as
/// the job store, by its redacted URL, never as the broker; the error is
/// transient (a worker waits for it to come back).
#[tokio::test]
async fn an_unreachable_postgres_store_is_named_as_the_job_store() {
    let port = spool_tests::free_port();
    let url = format!("postgres://spool:s3cret@127.0.0.1:{port}/spool");
    let options = StoreOptions {
        acquire_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let err = JobStore::connect_with(&url, &options).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "job store postgres://spool:***@127.0.0.1:{port}/spool could not"
        )),
        "{text}"
    );
    assert!(
        !text.contains("broker") && !text.contains("s3cret"),
        "{text}"
    );
    assert!(err.is_transient(), "{err:?}");

    let out = std::process::Command::new(spool_tests::bins::spoolctl())
        .args(["--store-url", &url, "tasks"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "job store postgres://spool:***@127.0.0.1:{port}/spool"
        )) && !stderr.contains("broker"),
        "{stderr}"
    );
}
