//! Countdowns, ETAs and expiry, end to end.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use spool_broker::{Priority, QueueName, Task, TaskId, Timestamp};
use spool_tests::{TestRedis, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    label: String,
}

impl Task for Tick {
    const NAME: &'static str = "test.schedule.tick";
    type Output = ();
}

/// One run as the handler saw it: label, id, when it was created and when it
/// started (wall clock, ms).
#[derive(Debug, Clone)]
struct Run {
    label: String,
    id: TaskId,
    created_at: Timestamp,
    started_at: Timestamp,
}

type Runs = Arc<Mutex<Vec<Run>>>;

fn worker(redis: &TestRedis, runs: &Runs) -> Worker<spool_broker::RedisBroker> {
    let runs = Arc::clone(runs);
    let config = WorkerConfig {
        concurrency: 1,
        prefetch: 1,
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    Worker::new(redis.broker.clone(), config).register::<Tick, _>(
        move |tick: Tick, ctx: TaskContext| {
            runs.lock().unwrap().push(Run {
                label: tick.label,
                id: ctx.id(),
                created_at: ctx.created_at(),
                started_at: Timestamp::now(),
            });
            std::future::ready(Ok::<(), TaskError>(()))
        },
    )
}

fn tick(label: &str) -> Tick {
    Tick {
        label: label.to_owned(),
    }
}

#[tokio::test]
async fn a_countdown_delays_the_run() {
    let redis = TestRedis::new().await;
    let runs: Runs = Arc::default();
    let running = spawn_worker(worker(&redis, &runs));

    let countdown = Duration::from_millis(800);
    let before = Timestamp::now();
    let id = redis
        .client()
        .enqueue(tick("later"))
        .countdown(countdown)
        .await
        .unwrap();
    let stats = redis.stats(&QueueName::DEFAULT).await;
    // Read well before it falls due: it waits in the delayed set.
    assert!(
        Timestamp::now() < before.saturating_add(countdown),
        "the stats read took too long"
    );
    assert_eq!(stats.delayed, 1, "{stats:?}");
    assert_eq!((stats.ready_total(), stats.pending), (0, 0), "{stats:?}");

    running
        .wait_for("the delayed task to run", Duration::from_secs(3), |c| {
            c.succeeded >= 1
        })
        .await;
    let report = running.stop().await;
    assert_eq!((report.started, report.succeeded), (1, 1), "{report:?}");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run.id, id);
    assert!(run.created_at >= before, "{run:?}");
    let waited = run.started_at.saturating_since(run.created_at);
    assert!(
        waited >= countdown,
        "ran {waited:?} after enqueue, before its {countdown:?} countdown"
    );
    assert!(
        waited < Duration::from_secs(3),
        "ran only {waited:?} after enqueue"
    );
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

#[tokio::test]
async fn an_eta_in_the_past_runs_at_once() {
    let redis = TestRedis::new().await;
    let runs: Runs = Arc::default();
    let eta = SystemTime::now() - Duration::from_secs(60);
    redis
        .client()
        .enqueue(tick("overdue"))
        .eta(eta)
        .await
        .unwrap();
    // Due already: straight to its stream, not to the delayed set.
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert_eq!((stats.ready, stats.delayed), ([0, 1, 0], 0), "{stats:?}");

    let running = spawn_worker(worker(&redis, &runs));
    running
        .wait_for("the overdue task to run", Duration::from_secs(3), |c| {
            c.succeeded >= 1
        })
        .await;
    running.stop().await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let waited = runs[0].started_at.saturating_since(runs[0].created_at);
    assert!(
        waited < Duration::from_secs(1),
        "an overdue task waited {waited:?}"
    );
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

#[tokio::test]
async fn expired_tasks_are_skipped_and_acknowledged() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let runs: Runs = Arc::default();
    // One already expired when enqueued, one that expires while it waits in
    // the queue with no worker around.
    client
        .enqueue(tick("stale"))
        .expires_at(SystemTime::now() - Duration::from_secs(1))
        .await
        .unwrap();
    let aged = client
        .enqueue(tick("aged"))
        .expires(Duration::from_millis(150))
        .await
        .unwrap();
    let queued = redis
        .stream_envelopes(&QueueName::DEFAULT, Priority::Normal)
        .await;
    let expires_at = queued
        .iter()
        .find(|(_, e)| e.id == aged)
        .and_then(|(_, e)| e.expires_at)
        .expect("the task carries its expiry");
    wait_until(
        "the second task's expiry to pass",
        Duration::from_secs(2),
        || {
            let past = Timestamp::now() > expires_at;
            async move { past }
        },
    )
    .await;
    assert_eq!(redis.stats(&QueueName::DEFAULT).await.ready_total(), 2);

    let running = spawn_worker(worker(&redis, &runs));
    running
        .wait_for("both tasks to be skipped", Duration::from_secs(3), |c| {
            c.expired >= 2
        })
        .await;
    // Expired tasks are acknowledged like finished ones: nothing is left.
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "{stats:?}");
    assert_eq!(stats.dead, 0, "{stats:?}");
    let report = running.stop().await;
    assert_eq!(report.expired, 2, "{report:?}");
    assert_eq!(
        (
            report.started,
            report.succeeded,
            report.failed,
            report.dead_lettered
        ),
        (0, 0, 0, 0),
        "{report:?}"
    );
    assert!(
        runs.lock().unwrap().is_empty(),
        "an expired task ran: {runs:?}"
    );
    for priority in Priority::ALL {
        assert_eq!(redis.xlen(&QueueName::DEFAULT, priority).await, 0);
    }
    redis.cleanup().await;
}

#[tokio::test]
async fn a_task_that_expires_later_runs_normally() {
    let redis = TestRedis::new().await;
    let runs: Runs = Arc::default();
    let id = redis
        .client()
        .enqueue(tick("fresh"))
        .expires(Duration::from_secs(30))
        .await
        .unwrap();
    let running = spawn_worker(worker(&redis, &runs));
    running
        .wait_for("the task to run", Duration::from_secs(3), |c| {
            c.succeeded >= 1
        })
        .await;
    let report = running.stop().await;
    assert_eq!((report.succeeded, report.expired), (1, 0), "{report:?}");
    assert_eq!(
        runs.lock()
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [id]
    );
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

#[tokio::test]
async fn countdowns_run_in_due_order() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let runs: Runs = Arc::default();
    let running = spawn_worker(worker(&redis, &runs));
    // Enqueued out of order; 150 ms apart, so due order is unambiguous.
    let delays = [600, 150, 450, 0, 300];
    let mut countdowns = Vec::new();
    for ms in delays {
        let label = format!("{ms}ms");
        let id = client
            .enqueue(tick(&label))
            .countdown(Duration::from_millis(ms))
            .await
            .unwrap();
        countdowns.push((label, id, Duration::from_millis(ms)));
    }
    running
        .wait_for("all countdowns to run", Duration::from_secs(4), |c| {
            c.succeeded >= 5
        })
        .await;
    let report = running.stop().await;
    assert_eq!(report.succeeded, 5, "{report:?}");

    let runs = runs.lock().unwrap().clone();
    let order: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        order,
        ["0ms", "150ms", "300ms", "450ms", "600ms"],
        "{runs:?}"
    );
    for run in &runs {
        let (_, id, delay) = countdowns.iter().find(|c| c.0 == run.label).unwrap();
        assert_eq!(run.id, *id);
        let waited = run.started_at.saturating_since(run.created_at);
        assert!(waited >= *delay, "{} ran after only {waited:?}", run.label);
    }
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}
