//! Leases, reclaim of dead workers' tasks, delivery counts and the poison
//! guard, against a real Redis with in-process workers killed cold.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, Task, TaskId};
use spool_tests::{TestRedis, short_lease_config as config, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    seq: u32,
    /// How long the handler takes; `u64::MAX` hangs until killed.
    ms: u64,
}

impl Task for Work {
    const NAME: &'static str = "test.leases.work";
    type Output = ();
}

type Runs = Arc<Mutex<Vec<(u32, u32, String)>>>;

/// A handler that records (seq, attempt, worker) for every run start.
fn recording(
    runs: Runs,
    worker: &'static str,
) -> impl Fn(Work, TaskContext) -> futures::future::BoxFuture<'static, Result<(), TaskError>> + Send + Sync
{
    move |work: Work, ctx: TaskContext| {
        runs.lock()
            .unwrap()
            .push((work.seq, ctx.attempt(), worker.to_owned()));
        Box::pin(async move {
            if work.ms == u64::MAX {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(work.ms)).await;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_running_five_times_the_visibility_timeout_runs_once() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue(Work { seq: 1, ms: 3_000 })
        .await
        .unwrap();
    let runs: Runs = Arc::default();
    let first = spawn_worker(
        Worker::new(redis.broker.clone(), config("first"))
            .register::<Work, _>(recording(runs.clone(), "first")),
    );
    first
        .wait_for("the long task to start", Duration::from_secs(5), |c| {
            c.started == 1
        })
        .await;
    // A second worker polls and reclaims all along, every 300 ms.
    let second = spawn_worker(
        Worker::new(redis.broker.clone(), config("second"))
            .register::<Work, _>(recording(runs.clone(), "second")),
    );
    first
        .wait_for("the long task to finish", Duration::from_secs(10), |c| {
            c.succeeded == 1
        })
        .await;
    let (a, b) = (first.stop().await, second.stop().await);
    assert_eq!(
        runs.lock().unwrap().len(),
        1,
        "re-delivered while its worker lived: {runs:?}"
    );
    assert_eq!((a.succeeded, b.started), (1, 0));
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_tasks_are_reclaimed_and_see_their_attempt() {
    let redis = TestRedis::new().await;
    let ids: Vec<TaskId> = redis
        .client()
        .enqueue_many((0..3).map(|seq| Work { seq, ms: u64::MAX }))
        .await
        .unwrap();
    let runs: Runs = Arc::default();
    let doomed = spawn_worker(
        Worker::new(redis.broker.clone(), config("doomed"))
            .register::<Work, _>(recording(runs.clone(), "doomed")),
    );
    doomed
        .wait_for("3 runs to start", Duration::from_secs(5), |c| {
            c.started == 3
        })
        .await;
    doomed.kill();

    // The survivor's handler finishes at once whatever the payload says.
    let finished = Arc::new(AtomicU32::new(0));
    let done = Arc::clone(&finished);
    let survivor_runs = Arc::clone(&runs);
    let survivor = spawn_worker(
        Worker::new(redis.broker.clone(), config("survivor")).register::<Work, _>(
            move |work: Work, ctx: TaskContext| {
                survivor_runs
                    .lock()
                    .unwrap()
                    .push((work.seq, ctx.attempt(), "survivor".into()));
                done.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, TaskError>(()) }
            },
        ),
    );
    survivor
        .wait_for(
            "the 3 abandoned tasks to succeed",
            Duration::from_secs(10),
            |c| c.succeeded == 3,
        )
        .await;
    assert_eq!(survivor.stop().await.succeeded, 3);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        3,
        "each reclaimed task ran once"
    );
    let runs = runs.lock().unwrap().clone();
    let reclaimed: Vec<_> = runs.iter().filter(|r| r.2 == "survivor").collect();
    assert_eq!(reclaimed.len(), 3);
    assert!(
        reclaimed.iter().all(|r| r.1 == 2),
        "a redelivery is attempt 2: {runs:?}"
    );
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    assert_eq!(ids.len(), 3);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_killing_its_workers_is_dead_lettered() {
    let redis = TestRedis::new().await;
    let poison = redis
        .client()
        .enqueue(Work {
            seq: 666,
            ms: u64::MAX,
        })
        .max_attempts(10)
        .await
        .unwrap();
    let runs: Runs = Arc::default();
    // Each worker takes the poison task and dies with it, twice.
    for name in ["victim-1", "victim-2"] {
        let victim = spawn_worker(
            Worker::new(
                redis.broker.clone(),
                WorkerConfig {
                    max_deliveries: 2,
                    ..config(name)
                },
            )
            .register::<Work, _>(recording(runs.clone(), "victim")),
        );
        victim
            .wait_for("the poison task to start", Duration::from_secs(5), |c| {
                c.started == 1
            })
            .await;
        victim.kill();
    }
    redis
        .client()
        .enqueue(Work { seq: 7, ms: 0 })
        .await
        .unwrap();
    let last = spawn_worker(
        Worker::new(
            redis.broker.clone(),
            WorkerConfig {
                max_deliveries: 2,
                ..config("last")
            },
        )
        .register::<Work, _>(recording(runs.clone(), "last")),
    );
    let report = last
        .wait_for(
            "the poison dead-lettered and the good task done",
            Duration::from_secs(10),
            |c| c.dead_lettered == 1 && c.succeeded == 1,
        )
        .await;
    last.stop().await;
    assert_eq!(
        report.started, 1,
        "the third delivery never ran: {report:?}"
    );
    let dead = redis.dead_letters(&QueueName::DEFAULT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "too_many_deliveries");
    assert!(
        dead[0].error.contains("delivered 3 times"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].envelope.as_ref().unwrap().id, poison);
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_shutdown_keeps_renewing_while_runs_finish() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue(Work { seq: 1, ms: 1_500 })
        .await
        .unwrap();
    let runs: Runs = Arc::default();
    let stopping = spawn_worker(
        Worker::new(redis.broker.clone(), config("stopping"))
            .register::<Work, _>(recording(runs.clone(), "stopping")),
    );
    stopping
        .wait_for("the task to start", Duration::from_secs(5), |c| {
            c.started == 1
        })
        .await;
    let watcher = spawn_worker(
        Worker::new(redis.broker.clone(), config("watcher"))
            .register::<Work, _>(recording(runs.clone(), "watcher")),
    );
    // Stop while the 1.5 s run goes on: 2.5 visibility timeouts.
    let report = stopping.stop().await;
    assert_eq!(report.succeeded, 1);
    wait_until("the queue to drain", Duration::from_secs(5), || async {
        redis.stats(&QueueName::DEFAULT).await.is_drained()
    })
    .await;
    assert_eq!(
        watcher.stop().await.started,
        0,
        "reclaimed during a warm shutdown"
    );
    assert_eq!(runs.lock().unwrap().len(), 1);
    redis.cleanup().await;
}
