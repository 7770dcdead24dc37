//! Chaos (b): a task running 5× the visibility timeout, with other worker
//! processes polling and reclaiming all along, runs exactly once.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use spool_broker::QueueName;
use spool_tests::chaos::{Figures, Fleet, fleet_args, runs};
use spool_tests::{TestRedis, redis_url, wait_until};

#[path = "bin/chaos_tasks.rs"]
mod chaos_tasks;
use chaos_tasks::Count;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_is_never_redelivered_while_its_worker_lives() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue(Count { seq: 0, ms: 5_000 })
        .await
        .unwrap();
    let args = fleet_args(
        &redis_url(),
        &redis.prefix,
        &[
            "--visibility-timeout",
            "1s",
            "--heartbeat-interval",
            "250ms",
        ],
    );
    let fleet = Fleet::start(env!("CARGO_BIN_EXE_chaos-worker"), 3, &args);
    let started = Instant::now();
    wait_until(
        "the long task to finish",
        Duration::from_secs(20),
        || async { redis.stats(&QueueName::DEFAULT).await.is_drained() },
    )
    .await;
    let runs = runs(&redis_url(), &redis.prefix).await;
    let figures = Figures::from_runs(1, 0, &runs, started.elapsed().as_secs_f64());
    figures.print("long-task");
    drop(fleet);
    assert_eq!(runs.get(&0), Some(&1), "ran {runs:?} times");
    assert!(figures.seconds >= 5.0);
    redis.cleanup().await;
}
